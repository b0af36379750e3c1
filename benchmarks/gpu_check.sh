#!/usr/bin/env bash
# The GPU check: on one CUDA GPU, within 10 minutes,
#   1. the CUDA tests (tests/test_cuda.py), then the whole test suite, on the GPU machine;
#   2. bf16 training throughput of the CIFAR-10-sized UNet (35.7M parameters, images/s);
#   3. sampling throughput (samples/s, NFE 20) and the samplers' per-step overhead.
# Without a GPU it runs the CPU fallback: the CUDA tests (skipped), the SDE tests and the throughput
# script with the tiny UNet, in well under a minute.
#
#   bash benchmarks/gpu_check.sh                 # results in $OUT (if set) or runs/gpu_check/
#   GPU_CHECK_COMPILE=1 bash benchmarks/gpu_check.sh   # also time training under torch.compile
#
# The package runs from the source tree (PYTHONPATH=.), so the GPU machine needs only torch, numpy,
# scipy, einops, typer and safetensors installed. What else the tests need (torchsde, trampoline,
# pytest, pytest-xdist, scikit-learn, pillow and their dependencies) is installed, only if missing,
# from benchmarks/wheels/ into a temporary folder — no registry access. Fill that folder on a machine
# with internet access, for the GPU machine's Python version (here 3.11) and platform:
#
#   pip download --dest benchmarks/wheels --no-deps --only-binary=:all: \
#       --python-version 3.11 --platform manylinux2014_x86_64 \
#       torchsde trampoline pytest pluggy iniconfig packaging pytest-xdist execnet \
#       scikit-learn joblib threadpoolctl pillow
#
# (about 20 MB; the folder is not committed).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/runs/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python}
command -v "$PY" >/dev/null || PY=python3
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
LOG=$OUT/gpu_check.log
: >"$LOG"
status=0
say() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$LOG"; }

# ---- 1. dependencies --------------------------------------------------------------------------------
missing=()
for pair in torch:torch numpy:numpy scipy:scipy einops:einops typer:typer safetensors:safetensors \
    torchsde:torchsde trampoline:trampoline pytest:pytest pluggy:pluggy iniconfig:iniconfig packaging:packaging \
    xdist:pytest-xdist execnet:execnet sklearn:scikit-learn joblib:joblib threadpoolctl:threadpoolctl PIL:pillow; do
    module=${pair%%:*} dist=${pair#*:}
    "$PY" -c "import $module" 2>/dev/null || missing+=("$dist")
done
if ((${#missing[@]})); then
    if [ -d benchmarks/wheels ]; then
        SITE=$(mktemp -d)
        trap 'rm -rf "$SITE"' EXIT
        say "installing from benchmarks/wheels: ${missing[*]}"
        for dist in "${missing[@]}"; do  # one by one: a wheel that is absent only loses its own tests
            "$PY" -m pip install -q --no-index --find-links benchmarks/wheels --no-deps --target "$SITE" "$dist" \
                >>"$LOG" 2>&1 || say "warning: no wheel for $dist in benchmarks/wheels"
        done
        export PYTHONPATH="$PYTHONPATH:$SITE"
    else
        say "warning: missing ${missing[*]} and no benchmarks/wheels/ folder (see the top of this script)"
    fi
fi
for module in torch torchsde pytest; do
    "$PY" -c "import $module" 2>/dev/null || { say "FATAL: cannot import $module"; exit 2; }
done

if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    GPU=1
    say "CUDA: $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0), "| torch", torch.__version__)')"
else
    GPU=0
    say "no CUDA device: running the CPU fallback (tiny sizes)"
fi
XDIST=()
"$PY" -c "import xdist" 2>/dev/null && XDIST=(-n "${GPU_CHECK_WORKERS:-8}")

run() {  # run LABEL SECONDS COMMAND...: a stage with a time limit; its output goes to the log
    local label=$1 limit=$2
    shift 2
    say "== $label (limit ${limit}s)"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG" | tail -n 25
    local rc=${PIPESTATUS[0]}
    say "== $label: exit $rc after $((SECONDS - start))s"
    ((rc == 0)) || status=1
}

# ---- 2. tests -----------------------------------------------------------------------------------------
PYTEST=("$PY" -m pytest -q -p no:cacheprovider -ra)
run "CUDA tests" 180 "${PYTEST[@]}" tests/test_cuda.py
if ((GPU)); then
    # device "auto" puts torchrun rank r on cuda:r: with one GPU the 2-rank DDP test runs on the CPU (gloo)
    TORCHRUN_TEST=tests/test_train.py::test_torchrun_two_ranks_stay_in_sync_and_write_one_checkpoint
    NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
    DESELECT=()
    if ((NGPU < 2)); then
        DESELECT=(--deselect "$TORCHRUN_TEST")
        run "DDP test on the CPU (one GPU only)" 120 env CUDA_VISIBLE_DEVICES= "${PYTEST[@]}" "$TORCHRUN_TEST"
    fi
    run "test suite" 300 "${PYTEST[@]}" "${XDIST[@]}" "${DESELECT[@]}" --ignore=tests/test_cuda.py tests
else
    run "test subset (CPU fallback)" 120 "${PYTEST[@]}" tests/test_sde.py
fi

# ---- 3. throughput ------------------------------------------------------------------------------------
if ((GPU)); then
    extra=()
    [ "${GPU_CHECK_COMPILE:-0}" = 1 ] && extra=(--compile)
    run "throughput (CIFAR-10 UNet, bf16)" 240 "$PY" benchmarks/gpu_throughput.py --out "$OUT/throughput.md" "${extra[@]}"
else
    run "throughput (CPU fallback, tiny UNet)" 120 "$PY" benchmarks/gpu_throughput.py --device cpu --tiny \
        --out "$OUT/throughput.md"
fi

say "done: $([ $status = 0 ] && echo 'all stages passed' || echo 'SOME STAGES FAILED') — log $LOG"
exit $status
