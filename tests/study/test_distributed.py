"""Training runs unchanged under torchrun / `accelerate launch`: two CPU processes (DDP, gloo) end with the
same weights as one process (each process takes half of every batch; no dropout)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).parents[1] / "ddp_fit.py"


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path, data_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run(
        [sys.executable, str(SCRIPT), str(data_dir), str(tmp_path / "one")], check=True, env=env, capture_output=True
    )
    # torchrun sets RANK/WORLD_SIZE; accelerate's Accelerator picks them up (gloo on CPU), exactly
    # as under `accelerate launch` on a multi-GPU machine
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    result = subprocess.run(
        [*launch, str(SCRIPT), str(data_dir), str(tmp_path / "two")], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "world_size=2" in result.stdout  # really two processes
    one, two = load_file(tmp_path / "one" / "trained.safetensors"), load_file(tmp_path / "two" / "trained.safetensors")
    assert one.keys() == two.keys() and len(one) > 0
    moved = [n for n in one if "lora_B" in n]
    assert moved and all(one[n].abs().sum() > 0 for n in moved)  # training happened
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5, msg=name)
