#!/usr/bin/env bash
# GPU validation on one machine without network, in under 8 minutes:
#   1. install flare-xlt against the machine's own torch / transformers / peft / accelerate, with the
#      few packages it lacks taken from benchmarks/gpu/wheels (nothing the machine has is replaced);
#   2. run the `gpu` test tier (tests/gpu);
#   3. benchmark FLARE against LoRA at Llama-3.1-8B shapes (benchmarks/gpu/bench.py);
#   4. with two or more GPUs: FSDP2 against DDP, step time and per-GPU peak memory
#      (benchmarks/gpu/fsdp2_check.py; skipped with fewer).
# Results go to $OUT (default benchmarks/gpu/out): environment.txt, gpu_tests.txt, gpu_bench.json/.md,
# fsdp2_check_ddp.json / fsdp2_check_fsdp2.json (or fsdp2_check.txt saying why it was skipped).
#
#   bash benchmarks/gpu/validate.sh           # on the GPU machine
#   bash benchmarks/gpu/validate.sh --tiny    # dry run with tiny shapes (CPU: the gpu tests skip)
#
# The wheels are fetched beforehand on a machine with network (python 3.12, manylinux x86_64; 46 MB):
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux_2_24_x86_64 \
#     --platform manylinux_2_17_x86_64 --no-deps -d benchmarks/gpu/wheels bitsandbytes==0.50.2 \
#     datasets==5.2.0 jsonargparse==4.53.0 docstring-parser==0.18.0 typeshed-client==2.14.0 dill==0.4.1 \
#     xxhash==4.1.0 multiprocess==0.70.19 setuptools==84.2.1 pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 \
#     pygments==2.21.0
# (datasets also needs pyarrow and pandas, which are too large to carry; nothing here imports datasets.)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-benchmarks/gpu/out}"
WHEELS=benchmarks/gpu/wheels
PYTHON="${PYTHON:-python3}"
TINY=""
if [[ "${1:-}" == "--tiny" ]]; then TINY="--tiny"; fi
mkdir -p "$OUT"
START=$SECONDS
log() { echo "[validate +$((SECONDS - START))s] $*"; }

# A venv that sees the machine's packages: installs go into it, never into a system python (PEP 668).
VENV="${VENV:-${TMPDIR:-/tmp}/flare-gpu-venv}"
if "$PYTHON" -m venv --system-site-packages "$VENV" >/dev/null 2>&1; then
  PY="$VENV/bin/python"
else
  log "no venv module: installing into $PYTHON's environment"
  PY="$PYTHON"
  export PIP_BREAK_SYSTEM_PACKAGES=1
fi

log "machine"
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c 'import sys, torch, transformers, peft, accelerate; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), "transformers", transformers.__version__, "peft", peft.__version__, "accelerate", accelerate.__version__)'
} | tee "$OUT/environment.txt"

log "install what the machine lacks"
missing=()
for pair in bitsandbytes:bitsandbytes jsonargparse:jsonargparse docstring-parser:docstring_parser \
            typeshed-client:typeshed_client dill:dill xxhash:xxhash multiprocess:multiprocess datasets:datasets \
            pytest:pytest pluggy:pluggy iniconfig:iniconfig pygments:pygments; do
  if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('${pair#*:}') is None)"; then
    missing+=("${pair%%:*}")
  fi
done
if ((${#missing[@]})); then
  log "from $WHEELS: ${missing[*]}"
  "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" --no-deps "${missing[@]}"
fi
# the project itself: its dependency ranges are the machine's business (--no-deps), setuptools comes
# from the wheels folder for the isolated build
"$PY" -m pip install --quiet --no-index --find-links "$WHEELS" --no-deps .
"$PY" -c 'import flare, flare.hf.device; print("flare-xlt installed:", flare.__file__)'

log "gpu tests"
set +e
"$PY" -m pytest -q -p no:cacheprovider -m gpu tests/gpu 2>&1 | tee "$OUT/gpu_tests.txt"
TESTS=${PIPESTATUS[0]}
set -e
log "gpu tests exit status $TESTS"

log "benchmark"
# the budget leaves the 8 minutes some room: once spent, no new row starts (and the table says so)
set +e
"$PY" benchmarks/gpu/bench.py $TINY --out "$OUT" --budget-s "${BENCH_BUDGET_S:-330}" > "$OUT/gpu_bench.log" 2>&1
BENCH=$?
set -e
grep -v -i warn "$OUT/gpu_bench.log" | tail -n 40 || true
cat "$OUT/gpu_bench.md" 2>/dev/null || true
log "FSDP2 check"
# FSDP2 against DDP (benchmarks/gpu/fsdp2_check.py): needs two or more GPUs, skipped otherwise
# (also in the --tiny dry run on the CPU)
GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')
FSDP=0
if ((GPUS >= 2)); then
  set +e
  "$PY" -m accelerate.commands.launch --multi_gpu --num_processes "$GPUS" --mixed_precision bf16 \
    benchmarks/gpu/fsdp2_check.py ddp "$OUT" > "$OUT/fsdp2_check_ddp.log" 2>&1
  DDP_STATUS=$?
  "$PY" -m accelerate.commands.launch --config_file examples/accelerate/fsdp2.yaml --num_processes "$GPUS" \
    benchmarks/gpu/fsdp2_check.py fsdp2 "$OUT" > "$OUT/fsdp2_check_fsdp2.log" 2>&1
  FSDP=$?
  set -e
  if ((DDP_STATUS != 0)); then FSDP=1; fi
  tail -n 3 "$OUT/fsdp2_check_ddp.log" "$OUT/fsdp2_check_fsdp2.log" || true
  log "FSDP2 check exit status $FSDP (ddp $DDP_STATUS)"
else
  log "FSDP2 check skipped: $GPUS GPU(s), needs 2 or more" | tee "$OUT/fsdp2_check.txt"
fi
log "done: gpu tests exit status $TESTS, benchmark exit status $BENCH, FSDP2 check exit status $FSDP"
if ((TESTS != 0 || BENCH != 0 || FSDP != 0)); then exit 1; fi
