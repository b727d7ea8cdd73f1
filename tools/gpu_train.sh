#!/usr/bin/env bash
# Train the shipped networks on a GPU host with Keras 3 (JAX or PyTorch backend; no TensorFlow needed there).
#
# Needs, in the repo root: .whl/ (keras, namex, optree wheels for the host's Python) and .gpu/{edge,seed}.npz
# (train+val features, see tools/make_firmware.py). Writes weight chunks to $OUT, which
# `python -m training.weights_io import` turns into run folders (evaluated on the test split) on the CPU machine.
#
# JOBS picks the runs (default: all four). The seed MobileNet trains on the PyTorch backend: JAX's backward
# pass for grouped (depthwise) convolutions runs like a dense convolution (jax-ml/jax#13800), which made a
# 224x224 MobileNet epoch ~45 s on an H200 against ~2.5 s for ResNet-18.
set -u
OUT=${OUT:-/tmp/gpu_out}
JOBS=${JOBS:-"edge_mn edge_rn seed_mn seed_rn"}
LIMIT=${TRAIN_SECONDS:-330}
mkdir -p "$OUT" /tmp/runs
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
# one BLAS thread per process: the batch loaders run in threads, and 16 BLAS threads each starve the GPU feed
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.22 AURICLE_LOADER_THREADS=${AURICLE_LOADER_THREADS:-6}
nvidia-smi -L 2>/dev/null
run() {
  local name=$1 backend=$2; shift 2
  KERAS_BACKEND=$backend timeout -s KILL $((LIMIT + 200)) python3 -m training.train --quiet --patience 0 \
    --time-limit "$LIMIT" --out /tmp/runs/"$name" --export-weights "$OUT" "$@" > /tmp/log_"$name".txt 2>&1
  echo "$name ($backend): exit $?"
}
for job in $JOBS; do
  case $job in
    edge_mn) run kws_mobilenet_edge jax --features .gpu/edge.npz --model mobilenet --profile edge --epochs "${EDGE_MN_EPOCHS:-100}" & ;;
    edge_rn) run kws_resnet18_edge jax --features .gpu/edge.npz --model resnet18 --profile edge --epochs "${EDGE_RN_EPOCHS:-60}" & ;;
    seed_mn) run kws_mobilenet_seed torch --features .gpu/seed.npz --model mobilenet --profile seed --epochs "${SEED_MN_EPOCHS:-40}" & ;;
    seed_rn) run kws_resnet18_seed jax --features .gpu/seed.npz --model resnet18 --profile seed --epochs "${SEED_RN_EPOCHS:-40}" --export-dtype float16 & ;;
    *) echo "unknown job $job"; exit 2 ;;
  esac
done
wait
for f in /tmp/log_*.txt; do echo "== $f"; grep -vE '^(W|I)0000|oneDNN|cpu_feature' "$f" | tail -n 60; done > "$OUT"/logs.txt
grep -hE "epoch .*\*|time limit|exported|Error" /tmp/log_*.txt | tail -n 40
ls -la "$OUT"
