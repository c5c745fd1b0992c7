#!/usr/bin/env bash
# The main job: fine-tune the shipped face prior (resface64 trained on every LFW person, see
# benchmarks/face_prior.py) on 25 AT&T subjects (seed 0), select the epoch and calibrate the threshold on
# 5 others, then evaluate once on the 10 subjects it never saw and print that held-out result.
# The recipe is benchmarks/att.py's best on validation subjects (docs/RESULTS.md, AT&T): the prior's
# architecture (l2 embedding, non-positive L1 head) and a CosFace identity loss beside the all-pairs BCE.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${SIAMFACE_DATA:-../shared/data}
OUT=${OUT:-runs/att-main}
SEED=${SEED:-0}
mkdir -p "$(dirname "$OUT")"
RESUME=""
[ -f "$OUT/state.json" ] && RESUME="--resume"
.venv/bin/siamface train --data "$DATA/att_faces" --init face-prior --crop 1.0 --flip --n-val 5 --n-test 10 \
    --select eer --val-way 5 --val-pairs 2000 --epochs 12 --pairs-per-epoch 4096 --patience 12 \
    --pairing all --classes-per-batch 25 --images-per-class 4 --id-loss 1.0 \
    --lr 3e-4 --weight-decay 5e-3 --seed "$SEED" --threads 2 --out "$OUT" $RESUME > "$OUT.train.json"
.venv/bin/siamface evaluate --model "$OUT" --split test --way 10 --tasks 1000 --n-pairs 4000 --seed "$SEED" \
    | .venv/bin/python -c '
import json, sys
r = json.load(sys.stdin)
keys = ["evaluated", "identities", "auc", "eer", "kfold_mean", "kfold_std_error", "TAR@FAR=1e-02",
        "accuracy_at_calibrated_threshold", "calibrated_threshold", "threshold_source", "oneshot_accuracy",
        "oneshot_way", "out"]
print(json.dumps({k: r[k] for k in keys if k in r}, indent=2))'
