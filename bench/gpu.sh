#!/usr/bin/env bash
# Issue 19's GPU measurements in one prepared call on a lent GPU machine: every result goes to $OUT (default
# ./gpu-out), one file per step plus summary.md (8 files at most come back from a device call).
#
#   1 tests      the CUDA-only tests (pytest -m cuda): precision flags, no host sync per step, pairing on CUDA, ...
#   2 rehearsal  config/cifar10-{uncond,cond}.yaml through the real Snakefile with every stage on CUDA
#                (bench/gpu_rehearsal.py: batch 64, the paper's pools, 35-NFE sampling at batch 500, FID blocks,
#                DG discriminators through the ADM encoder, guided sampling, tables)
#   3 train      NCSN++ kimg/s with none and aot pairing, uncond pool 512 and cond 2048 per class, the loop's wait
#                for pairing and peak memory (bench/train_throughput.py), fp32 and bf16
#   4 sample     sampling images/s at 35 NFE and the FID-50k block time extrapolated (bench/sample_throughput.py)
#   5 pairing    the pairing bench: cost matrices on the GPU, lapjv / scipy on the host (bench/pairing.py)
#   6 edm        EDM's own train.py beside ours at the same batch and network, ratio ours/EDM
#                (bench/edm_side_by_side.py; EDM's code from tools/carry-edm)
#
# Prepare here (once; both folders are git-ignored, about 26 MB together):
#   tools/gpu-wheels                 # .whl: Snakemake, jsonschema, clean-fid, lapjv for the device's Python 3.12
#   tools/carry-edm [EDM_CLONE]      # third_party/edm: NVlabs/edm's training code
# then one device call: carry [".whl", "third_party/edm"], command "bash bench/gpu.sh", timeout_s 600. The step
# limits add up to 560 s, so the call returns its files even if a step hangs. GPU_STEPS=3,6 runs some steps only.
#
#   bash bench/gpu.sh --dry          # no GPU: every step at tiny sizes on the CPU, same scripts (GPU_DRY=1 too)
# Also: GPU_WORK (scratch folder, default /tmp/aot-gpu), EDM_DIR (default third_party/edm), PYTHON (python3).
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=${GPU_DRY:-0}
[[ ${1:-} == --dry ]] && DRY=1
OUT=${OUT:-$PWD/gpu-out}
WORK=${GPU_WORK:-/tmp/aot-gpu}
STEPS=${GPU_STEPS:-1,2,3,4,5,6}
EDM=${EDM_DIR:-third_party/edm}
PY=${PYTHON:-python3}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg

# What the device's image lacks, from the carried wheels; the checkout itself on the path (no install).
if [[ -d .whl ]] && ls .whl/*.whl >/dev/null 2>&1 && [[ $DRY == 0 ]]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl ||
        { echo "gpu.sh: installing .whl failed" >&2; exit 1; }
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
# The workflow's jobs run `python -m aot ...`: make `python` the interpreter that has torch (a wrapper, not a link:
# a linked venv interpreter would not find its venv).
want=$("$PY" -c 'import sys; print(sys.executable)')
if [[ $(python -c 'import sys; print(sys.executable)' 2>/dev/null) != "$want" ]]; then
    mkdir -p "$WORK/bin" && printf '#!/bin/sh\nexec "%s" "$@"\n' "$want" > "$WORK/bin/python" &&
        chmod +x "$WORK/bin/python" && export PATH="$WORK/bin:$PATH"
fi

if [[ $DRY == 1 ]]; then DEV=cpu; else DEV=cuda; fi
SUMMARY=$OUT/summary.md
{
    echo "# bench/gpu.sh $([[ $DRY == 1 ]] && echo '--dry (CPU, tiny sizes: no number here means anything)')"
    echo
    echo "- started $(date -u +%FT%TZ); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(
        git status --porcelain 2>/dev/null | grep -q . && echo ' + uncommitted changes')"
    echo "- $("$PY" -c 'import platform, torch; print(f"python {platform.python_version()}, torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}, " + (torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"))')"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/- nvidia-smi: /'
    echo "- host: $(nproc) CPUs, $("$PY" -c 'import aot.training.pairing as p; print("pairing solvers:", ", ".join(p.SOLVERS))')"
    echo
    echo "| step | exit | seconds | output |"
    echo "|---|---|---|---|"
} > "$SUMMARY"

run_limited() {  # LIMIT CMD...: CMD in its own process group; the whole group is killed at LIMIT seconds
    local limit=$1; shift
    setsid "$@" &
    local pid=$!
    ( sleep "$limit"; kill -TERM -- "-$pid" 2>/dev/null; sleep 10; kill -KILL -- "-$pid" 2>/dev/null ) &
    local watchdog=$!
    wait "$pid"
    local rc=$?
    kill "$watchdog" 2>/dev/null
    return $rc
}

step() {  # N NAME LIMIT CMD...: one step, its output in $OUT/N-NAME.md, a line in the summary
    local n=$1 name=$2 limit=$3; shift 3
    [[ ",$STEPS," == *",$n,"* ]] || return 0
    local file=$OUT/$n-$name.md t0=$SECONDS
    echo "== step $n $name (limit ${limit}s): $*" >&2
    { echo "# step $n $name"; echo; echo "\`$*\`"; echo; echo '```'; } > "$file"
    run_limited "$limit" "$@" >> "$file" 2>&1
    local rc=$?
    echo '```' >> "$file"
    local why=$rc
    (( rc == 143 || rc == 137 )) && why="$rc (killed at the ${limit}s limit)"
    echo "| $n $name | $why | $((SECONDS - t0)) | $n-$name.md |" >> "$SUMMARY"
    tail -n 25 "$file" >&2
}

if [[ $DRY == 1 ]]; then
    step 1 tests 120 "$PY" -m pytest -m cuda -q -rs -p no:cacheprovider tests
    step 2 rehearsal 900 "$PY" bench/gpu_rehearsal.py --device cpu --dry --work "$WORK/rehearsal"
    step 3 train 300 bash -c "'$PY' bench/train_throughput.py --cases tiny --batch 8 --pool 16 --kimg 0.016 &&
        '$PY' bench/train_throughput.py --cases tiny --batch 8 --pool 16 --kimg 0.016 --precision bf16 &&
        '$PY' bench/train_throughput.py --cases tiny --batch 8 --pool 40 --kimg 0.04 --cond"
    step 4 sample 300 "$PY" bench/sample_throughput.py --dry
    step 5 pairing 120 "$PY" bench/pairing.py --sizes 64 --instances 1 --no-per-class
    step 6 edm 300 "$PY" bench/edm_side_by_side.py --dry --edm "$EDM" --work "$WORK/edm" --runs fp32:none,bf16:aot
else
    step 1 tests 60 "$PY" -m pytest -m cuda -q -rs -p no:cacheprovider tests
    step 2 rehearsal 200 "$PY" bench/gpu_rehearsal.py --device cuda --work "$WORK/rehearsal"
    step 3 train 90 bash -c "'$PY' bench/train_throughput.py --device cuda --cases paper --batch 64 --kimg 1.536 &&
        '$PY' bench/train_throughput.py --device cuda --cases paper --batch 64 --kimg 1.536 --precision bf16 &&
        '$PY' bench/train_throughput.py --device cuda --cases paper --batch 64 --kimg 4.096 --cond"
    step 4 sample 50 "$PY" bench/sample_throughput.py --device cuda --images 2000
    step 5 pairing 50 "$PY" bench/pairing.py --sizes 512,2048 --device cuda --instances 3
    step 6 edm 110 "$PY" bench/edm_side_by_side.py --edm "$EDM" --kimg 4 --work "$WORK/edm" \
        --runs fp32:none,fp32:aot,bf16:aot
fi
echo "- finished $(date -u +%FT%TZ)" >> "$SUMMARY"
cat "$SUMMARY"
! grep -q '^| [0-9] [a-z]* | [1-9]' "$SUMMARY"
