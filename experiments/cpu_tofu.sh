#!/usr/bin/env bash
# Unlearning the real TOFU files on a CPU with the tiny preset (configs/cpu_tofu.yaml): the target
# memorises forget01 task 1 and the Retain evaluation set's first 300 QA, a retain model learns those
# 300 only (for Forget Quality), then ME+GD unlearns task 1. Resumable; about 3 minutes on 2 cores.
# DATA: the official data folder (default ../shared/data/tofu, this repository's test machines).
set -euo pipefail
cd "$(dirname "$0")/.."
U=${UNLEARN:-.venv/bin/unlearn}
DATA=${DATA:-../shared/data/tofu}
R=runs/cpu_tofu
mkdir -p $R
grep '"task_id": "1"' "$DATA/forget01.json" > $R/forget.jsonl
head -n 300 "$DATA/retain_perturbed.json" > $R/retain.jsonl
cat $R/forget.jsonl $R/retain.jsonl > $R/train.jsonl
ft=(--model tiny --epochs 40 --lr 3e-3 --batch-size 16 --grad-accum 1 --warmup 20 --weight-decay 0 --max-length 192)
[ -f $R/target/model/config.json ] || $U finetune "${ft[@]}" --train $R/train.jsonl --out $R/target --overwrite
[ -f $R/retain_model/model/config.json ] || $U finetune "${ft[@]}" --train $R/retain.jsonl --out $R/retain_model --overwrite
[ -f $R/target_eval/summary.json ] || $U eval --model $R/target/model --data "$DATA" --split forget01 --task-id 1 \
    --nli none --eval-batch-size 32 --out $R/target_eval --overwrite
[ -f $R/me_gd/summary.json ] || $U run --config configs/cpu_tofu.yaml --eval-data "$DATA" --model $R/target/model \
    --forget $R/forget.jsonl --retain $R/retain.jsonl --baseline $R/target_eval --out $R/me_gd --overwrite
