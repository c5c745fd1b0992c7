#!/usr/bin/env bash
# The main job: the Siamese head p = sigmoid(sum_j a_j |h1_j - h2_j| + b) trained on dlib's face descriptor
# (the shipped starting point dlib-resnet: dlib's ResNet as the frozen twin tower, MMOD detection, 5 landmarks,
# dlib's 150x150 chip) with 25 AT&T subjects (seed 0), the epoch selected and the threshold calibrated on 5
# others, then evaluated once on the 10 subjects it never saw; prints that held-out result.
# The recipe is benchmarks/att.py's best on validation subjects (docs/RESULTS.md, AT&T: the twin): its
# config equals `python benchmarks/att.py --init dlib-resnet --freeze all --no-distortions --flip --no-bf16
# --lr 1e-2 --weight-decay 1e-4` for seed 0.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${SIAMFACE_DATA:-../shared/data}
OUT=${OUT:-runs/att-main}
SEED=${SEED:-0}
mkdir -p "$(dirname "$OUT")"
RESUME=""
[ -f "$OUT/state.json" ] && RESUME="--resume"
.venv/bin/siamface train --data "$DATA/att_faces" --init dlib-resnet --freeze all --no-distortions --flip \
    --no-bf16 --n-val 5 --n-test 10 --select eer --val-way 5 --val-pairs 2000 --epochs 12 --pairs-per-epoch 4096 \
    --patience 12 --pairing all --classes-per-batch 25 --images-per-class 4 \
    --lr 1e-2 --weight-decay 1e-4 --seed "$SEED" --threads 2 --out "$OUT" $RESUME > "$OUT.train.json"
.venv/bin/siamface evaluate --model "$OUT" --split test --way 10 --tasks 1000 --n-pairs 4000 --seed "$SEED" \
    | .venv/bin/python -c '
import json, sys
r = json.load(sys.stdin)
keys = ["evaluated", "identities", "auc", "eer", "kfold_mean", "kfold_std_error", "TAR@FAR=1e-02",
        "accuracy_at_calibrated_threshold", "calibrated_threshold", "threshold_source", "oneshot_accuracy",
        "oneshot_way", "out"]
print(json.dumps({k: r[k] for k in keys if k in r}, indent=2))'
