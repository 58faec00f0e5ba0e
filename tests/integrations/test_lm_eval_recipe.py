"""docs/studies.md's lm-evaluation-harness recipe, both blocks as written (the NusaX export, then lm-eval's
command line through `python -m flare.integrations.lm_eval`), on a tiny random Llama with a FLARE
adapter in place of a study's models, 4 documents (--limit 4) and the CPU (--device cpu)."""

import json
import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval", reason="the lmeval extra is not installed (make test-lmeval)")

from transformers import AutoModelForCausalLM

from flare import FlareConfig, get_flare_model
from flare.integrations.lm_eval import main
from tiny_study import save_tiny_llama

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _recipe_blocks() -> tuple[str, str]:
    text = (ROOT / "docs" / "studies.md").read_text(encoding="utf-8")
    section = text.split("## lm-evaluation-harness", 1)[1].split("\n## ", 1)[0]
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    bash = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return python, bash


def test_the_readme_recipe_runs(tmp_path, monkeypatch, data_dir, capsys):
    python, bash = _recipe_blocks()
    monkeypatch.setenv("FLARE_DATA_DIR", str(data_dir))
    monkeypatch.chdir(tmp_path)
    exec(compile(python, "docs/studies.md", "exec"), {})  # the export block, as written
    rows = [json.loads(line) for line in Path("nusax_test.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 400 and all(row["text_en"] and row["text"] != row["text_en"] for row in rows)
    # the study's models: a tiny Llama and a FLARE adapter with B != 0, where the recipe expects them
    base = save_tiny_llama(tmp_path / "runs" / "study" / "stage1" / "model")
    model = get_flare_model(AutoModelForCausalLM.from_pretrained(base), FlareConfig(r=4, alignment="right"))
    torch.manual_seed(0)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.5)
    model.save_pretrained(tmp_path / "runs/study/runs/flare-add_relu/jav/seed1/adapter")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    argv = bash.replace("\\\n", " ").split()
    assert argv[:3] == ["python", "-m", "flare.integrations.lm_eval"]
    assert main([*argv[3:], "--limit", "4", "--batch_size", "4", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "nusax_flare" in out and "acc" in out
