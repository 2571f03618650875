#!/usr/bin/env bash
# One GPU, one command, under 9 minutes on an H200: a t5-small-sized recommender trained from scratch in bf16 on
# Amazon Beauty with P5-SID IDs (bench/gpu_quality.yaml), validated on 2,000 users every EVERY minutes of training,
# the best point scored on all test users. Prints test HR@10 and the model FLOPs utilisation (model FLOPs per token,
# counted by torch.utils.flop_counter, x tokens/s / 989e12, the H200's dense bf16 peak) and writes
# OUT_DIR/learning-curve-beauty-p5sid-gpu.json.
#
#   bash bench/gpu_quality.sh [key=value ...]          # trainer overrides, e.g. train.max_batch=128
#
# Environment: DATA (Beauty folder), MINUTES (training budget, 4.5), EVERY (1.5), CONFIG, OUT_DIR (bench/out),
# RUN_DIR, PEAK_FLOPS (989e12), PYTHON (python3), TAG (gpu), DATASET_NAME (beauty).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/datasets/derived/Beauty}
exec "${PYTHON:-python3}" bench/learning_curve.py --method p5sid --data "$DATA" --config "${CONFIG:-bench/gpu_quality.yaml}" \
    --minutes "${MINUTES:-4.5}" --every "${EVERY:-1.5}" --peak-flops "${PEAK_FLOPS:-989e12}" \
    --out-dir "${OUT_DIR:-bench/out}" --run-dir "${RUN_DIR:-bench/out/runs/gpu-quality}" --tag "${TAG:-gpu}" \
    --dataset-name "${DATASET_NAME:-beauty}" "$@"
