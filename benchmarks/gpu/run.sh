#!/usr/bin/env bash
# Run ON the GPU machine through the device tool, after prepare.sh, in one call:
#   run(command="bash benchmarks/gpu/run.sh", carry=[".whl", ".busi"], timeout_s=590)
# Installs the carried wheels, then measures training images/s at 299 px (fp32, bf16 +
# channels_last, + torch.compile), the training loader alone by worker count, and the paper
# protocol (10 folds x 53 epochs) on BUSI.
set -uo pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
  && python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site .whl/antlr4*.tar.gz \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
out="${OUT:-/tmp/out}"; mkdir -p "$out"
rc=0  # pipefail: a benchmark that fails makes its step fail, not tee; the call reports it
python3 benchmarks/bench_gpu.py throughput --batch-sizes 16 64 128 2>&1 | tee "$out/throughput.log" || rc=1
python3 benchmarks/bench_gpu.py loader --root .busi/Dataset_BUSI_with_GT --worker-counts 0 4 12 \
  --batches 40 2>&1 | tee "$out/loader.log" || rc=1
# What is left of the call's 590 s goes to the paper protocol; folds that do not fit are
# projected from the ones that ran (the record says so: met_is_projected).
budget=$(( ${CALL_LIMIT_S:-590} - SECONDS - 40 ))
timeout $(( budget + 30 )) python3 benchmarks/bench_gpu.py paper --root .busi/Dataset_BUSI_with_GT \
  --workers "${WORKERS:-12}" --budget-s "$budget" 2>&1 | tee "$out/paper.log" || rc=1
cp outputs/benchmarks/*.jsonl "$out/" 2>/dev/null || true
exit $rc
