#!/usr/bin/env bash
# Everything issue 26 measures on a GPU, in one sitting, as one script for a session lent a CUDA machine
# (the `device` tool runs it in the repository root; what it writes under $OUT comes back). About 8
# minutes on one H200; carry benchmarks/nanogpt (see nanogpt_reference.py). Install first: a CUDA build of torch is on that machine's index, as are the test
# extras. Each step is timed and its output kept, so a step that fails leaves the others' figures.
set -u
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
step() {  # step NAME COMMAND...: run it, keep its output and its exit status
  local name=$1
  shift
  local start=$SECONDS
  "$@" >"$OUT/$name.log" 2>&1
  echo "$name: exit $? in $((SECONDS - start)) s" | tee -a "$OUT/steps.txt"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" 2>&1
python -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())" >>"$OUT/gpu.txt"
# The graph-replayed decoding equals the eager one, token for token (skipped on CPU).
step tests python -m pytest -q -p no:cacheprovider tests/test_batch_generation.py tests/test_generate.py
# Single-sequence and batched decoding, with and without CUDA graphs.
for preset in small large; do
  step "batch_$preset" python benchmarks/batch_generation.py --preset "$preset" --device cuda --rounds 3 \
    --out "$OUT/batch_generation_${preset}_cuda.json"
  step "batch_${preset}_no_graphs" python benchmarks/batch_generation.py --preset "$preset" --device cuda \
    --rounds 3 --no-graphs --out "$OUT/batch_generation_${preset}_cuda_no_graphs.json"
done
# Training: `large` in bf16 with and without compile, and fp32 (TF32 is on by default now).
step bench_large python -m attnlab bench --preset large --device cuda --compile both --dtypes fp32,bf16 \
  --budget 10 --out "$OUT/bench_large_cuda.json"
# The reference: nanoGPT's model and step at `large`'s architecture (benchmarks/nanogpt/model.py, carried).
step nanogpt python benchmarks/nanogpt_reference.py --device cuda --dtype bf16 --compile both \
  --out "$OUT/nanogpt_reference_cuda.json"
step bench_small python -m attnlab bench --preset small --device cuda --compile both --dtypes fp32,bf16 \
  --out "$OUT/bench_small_cuda.json"
cat "$OUT/steps.txt"
