#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU machine (CI never runs them).
#
#   bash benchmarks/gpu_checks.sh            # results under $OUT (default /tmp/gpu-checks)
#
# 1. benchmarks/gpu_sweep.py in float32 and bfloat16: AlphaSweep with the model on the GPU and the
#    task vector on the CPU, bit-exact against the CPU streaming merge, α=0 restores the ranker;
# 2. the whole test suite with CUDA visible, so that device="auto" takes the GPU: adapt and
#    train_ranker run on CUDA with bf16 autocast, re-rankers score on the GPU.
# 3. with MERGE_BENCH=1, benchmarks/bench_merge.py on that machine (16 cores), cold cache.
# Packages that the machine's image lacks (pydantic, bm25s, ranx, ...) are installed offline from
# wheels in .gpuwheels/ when that folder is carried along.
set -u
out=${OUT:-/tmp/gpu-checks}
mkdir -p "$out"
py=${PYTHON:-python3}
if [ -d .gpuwheels ]; then
    "$py" -m pip install -q --no-deps --no-index .gpuwheels/*.whl 2>&1 | tail -3
fi
# the `taskrank` command itself (offline: no build isolation, no dependencies fetched)
"$py" -m pip install -q --no-deps --no-index --no-build-isolation -e . 2>&1 | tail -3
export PYTHONPATH="$PWD/src" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
"$py" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
    | tee -a "$out/gpu.txt"
if [ "${SWEEP:-1}" = 1 ]; then
    for dtype in float32 bfloat16; do
        "$py" benchmarks/gpu_sweep.py --dtype "$dtype" 2>&1 | tail -20 | tee "$out/sweep_$dtype.txt"
    done
fi
# TESTS: which tests to run (default: all of them)
# shellcheck disable=SC2086
timeout "${TEST_TIMEOUT:-300}" "$py" -m pytest -q -n 8 -p no:cacheprovider ${TESTS:-tests} > "$out/pytest.txt" 2>&1
tail -30 "$out/pytest.txt"
if [ "${MERGE_BENCH:-0}" = 1 ]; then
    df -h /tmp | tee "$out/merge.txt"
    timeout "${BENCH_TIMEOUT:-300}" "$py" benchmarks/bench_merge.py --work /tmp/bench-merge --repeats 3 2>&1 \
        | tee -a "$out/merge.txt"
fi
