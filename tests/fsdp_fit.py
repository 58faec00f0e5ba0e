"""Trains tiny FLARE adapters with flare.study.training.fit, one per case, and saves each adapter
(model.save_pretrained on every process) with its per-step losses. Run directly (one process) or
under `accelerate launch --config_file examples/accelerate/fsdp2.yaml --mixed_precision no
--num_processes 2` (FSDP2 on the CPU, gloo; fit shards each model, save_pretrained gathers it). Given a study YAML,
`flare compare` then runs it in the same processes.

Cases: llama (fp32), llama_bf16 (fp32 adapter on a bfloat16 base), llama_checkpointing (gradient
checkpointing), xlmr (sequence classification). Every row of a batch has the same length, so
the mean of the processes' losses is the one-process loss exactly."""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from flare import FlareConfig, get_flare_model
from flare.adapter.sharding import is_main_process, is_sharded
from flare.cli import main as cli_main
from flare.study.settings import StageSettings
from flare.study.training import fit
from tiny_models import llama, xlmr_classifier

CASES = ("llama", "llama_bf16", "llama_checkpointing", "xlmr")
ITEMS, TARGET_LENGTH, SOURCE_LENGTH = 16, 10, 12


def case_model(case: str):
    """The base model of a case (the same weights in every process and in the tests)."""
    if case == "xlmr":
        return xlmr_classifier(seed=0)
    base = llama(seed=0)
    return base.to(torch.bfloat16) if case == "llama_bf16" else base


def case_batches(case: str) -> dict[str, torch.Tensor]:
    """All items of a case as one batch (tokens 2..96: no padding, no special ids)."""
    generator = torch.Generator().manual_seed(7)
    ids = torch.randint(2, 97, (ITEMS, TARGET_LENGTH), generator=generator)
    source = torch.randint(2, 97, (ITEMS, SOURCE_LENGTH), generator=generator)
    labels = torch.randint(0, 3, (ITEMS,), generator=generator) if case == "xlmr" else ids
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
            "source_input_ids": source, "source_attention_mask": torch.ones_like(source)}


def flare_config(case: str) -> FlareConfig:
    return FlareConfig(task_type="SEQ_CLS" if case == "xlmr" else "CAUSAL_LM")


def train(case: str, out: Path) -> None:
    data = case_batches(case)
    torch.manual_seed(0)  # the adapter's A initialisation
    model = get_flare_model(case_model(case), flare_config(case))
    settings = StageSettings(epochs=2, batch_size=8, learning_rate=1e-2, warmup_ratio=0.0, tensorboard=False,
                             gradient_checkpointing=case == "llama_checkpointing")
    result = fit(model, list(range(ITEMS)), lambda rows: {k: v[rows] for k, v in data.items()}, settings,
                 seed=5, run_dir=out / case / "run")
    model.save_pretrained(out / case / "adapter")  # every process: a sharded model is gathered
    if is_main_process():
        record = {"losses": result.step_losses, "sharded": is_sharded(model)}
        (out / case / "losses.json").write_text(json.dumps(record))


def main(out: str, study_yaml: str | None = None) -> None:
    for case in CASES:
        train(case, Path(out))
    if study_yaml is not None:  # then the whole `flare compare`, in the same processes
        status = cli_main(["compare", study_yaml])
        if status:
            raise SystemExit(status)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if is_main_process():
        print(f"world_size={torch.distributed.get_world_size() if distributed else 1}")


if __name__ == "__main__":
    main(*sys.argv[1:])
