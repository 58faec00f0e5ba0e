"""FLARE trains under FSDP2 with the fusion intact: two CPU processes (gloo), launched exactly as a
user launches them (`accelerate launch --config_file examples/accelerate/fsdp2.yaml`), train
each case of tests/fsdp_fit.py with sharded layers to the same per-step losses and the same
adapter as one process; the gathered adapter is the same set of files, and it loads and predicts
in one process like the one-process adapter."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parents[1]))
import fsdp_fit
import yaml

from flare import load_flare_model
from flare.study.settings import study_to_dict
from tiny_study import save_tiny_llama, toy_study

ROOT = Path(__file__).parents[2]
CONFIG = ROOT / "examples" / "accelerate" / "fsdp2.yaml"
# float32 cases agree to rounding; the bfloat16 base rounds differently when each process holds
# half of a batch (its layers' outputs are bfloat16)
TOLERANCE = {"llama_bf16": {"rtol": 2e-2, "atol": 2e-3}}
FP32 = {"rtol": 1e-4, "atol": 1e-5}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "FSDP_"))}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    script = str(Path(fsdp_fit.__file__))
    model = save_tiny_llama(out / "model", hidden=32)
    studies = {}
    for name in ("one", "two"):  # the same toy study, in two output folders
        study = toy_study(model, out / name / "study", device="cpu", dtype="float32", methods=["flare"])
        studies[name] = out / f"{name}.yaml"
        studies[name].write_text(yaml.safe_dump(study_to_dict(study)))
    subprocess.run([sys.executable, script, str(out / "one"), str(studies["one"])], check=True, env=env,
                   capture_output=True)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG),
              "--mixed_precision", "no", "--num_processes", "2", "--main_process_port", "29519"]
    result = subprocess.run([*launch, script, str(out / "two"), str(studies["two"])], env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world_size=2" in result.stdout  # really two processes
    return out / "one", out / "two"


def _record(folder: Path, case: str) -> dict:
    return json.loads((folder / case / "losses.json").read_text())


def _config(path: Path) -> dict:
    """A JSON config; PEFT writes target_modules from a set, in each process's hash order."""
    config = json.loads(path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    return config


@pytest.mark.slow
@pytest.mark.parametrize("case", fsdp_fit.CASES)
def test_fsdp2_training_matches_one_process(runs, case):
    one, two = runs
    single, sharded = _record(one, case), _record(two, case)
    assert sharded["sharded"] and not single["sharded"]  # FSDP2 really sharded the layers
    assert len(sharded["losses"]) == len(single["losses"]) == 4
    tolerance = TOLERANCE.get(case, FP32)
    torch.testing.assert_close(torch.tensor(sharded["losses"]), torch.tensor(single["losses"]), **tolerance)
    a, b = one / case / "adapter", two / case / "adapter"
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())  # the same files
    for name in ("adapter_config.json", "flare_config.json"):
        assert _config(a / name) == _config(b / name)
    first, second = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert first.keys() == second.keys() and first
    for key in first:
        assert first[key].shape == second[key].shape, key  # whole tensors, not shards
        torch.testing.assert_close(second[key], first[key], **tolerance, msg=key)
    moved = [k for k in first if "lora_B" in k]
    assert moved and all(first[k].abs().sum() > 0 for k in moved)  # training happened


@pytest.mark.slow
@pytest.mark.parametrize("case", ["llama", "xlmr"])
def test_gathered_adapter_loads_and_predicts_in_one_process(runs, case):
    one, two = runs
    batch = fsdp_fit.case_batches(case)
    batch.pop("labels")
    outputs = []
    for folder in (one, two):
        model = load_flare_model(fsdp_fit.case_model(case), folder / case / "adapter").eval()
        with torch.no_grad():
            outputs.append(model(**batch).logits)
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-4)
    assert torch.equal(outputs[1].argmax(-1), outputs[0].argmax(-1))
    with torch.no_grad():  # the English side matters to these predictions: the fusion is in the adapter
        plain = load_flare_model(fsdp_fit.case_model(case), two / case / "adapter").eval()(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert not torch.allclose(plain, outputs[1])


@pytest.mark.slow
def test_flare_compare_under_fsdp2_writes_what_one_process_writes(runs):
    """Stage 1 (trained sharded, gathered and merged on the first process), stage 2 and the records:
    the same files, the same tensors, one record, the same scores."""
    one, two = (folder / "study" for folder in runs)
    files = {folder: sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
             for folder in (one, two)}
    assert files[one] == files[two] and "stage1/model/model.safetensors" in files[one]
    for name in [f for f in files[one] if f.endswith(".safetensors")]:
        first, second = load_file(one / name), load_file(two / name)
        assert first.keys() == second.keys(), name
        for key in first:
            torch.testing.assert_close(second[key], first[key], rtol=1e-4, atol=1e-5, msg=f"{name} {key}")
    records = [[json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
               for folder in (one, two)]
    assert len(records[0]) == len(records[1]) == 1  # the second process recorded nothing
    assert records[1][0]["score"] == records[0][0]["score"]
    assert records[1][0]["valid_score"] == records[0][0]["valid_score"]
