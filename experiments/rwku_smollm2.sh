#!/usr/bin/env bash
# RWKU on a CPU: SmolLM2-135M-Instruct (the packaged smollm2-135m preset) and one target (RWKU's target 1,
# Stephen King): the model before unlearning, in-context unlearning (ICU), and GA on the target's synthetic
# texts (RWKU's recipe: 3 epochs, batches of 8, cosine after warm-up, no weight decay, 512-token blocks;
# the rate is per model: RWKU grid-searched 1e-8..1e-5 on 8B models, LR below sets it here).
# Every step is skipped when its folder already holds a result (rerun to resume). Measured on 2 CPU cores on
# a stand-in of RWKU's per-target sizes (docs/performance.md): about 20 minutes per full evaluation (BBH's
# and fluency's 256-token answers are most of it; SETS=forget,neighbor,mia takes about 100 s) and 6 minutes
# of GA training: about 70 minutes for the three steps.
#   bash experiments/rwku_smollm2.sh                       # the hub set jinzhuoran/RWKU (network)
#   RWKU_DATA=path/to/snapshot bash experiments/rwku_smollm2.sh
#   RWKU_DATA=$(python experiments/rwku_standin.py /tmp/rwku_standin) bash experiments/rwku_smollm2.sh
#                                                          # a stand-in of RWKU's sizes, to time it offline
set -euo pipefail
cd "$(dirname "$0")/.."
U=".venv/bin/unlearn"
DATA=${RWKU_DATA:-jinzhuoran/RWKU}
R=${RWKU_RUNS:-experiments/runs/rwku_smollm2}
LR=${LR:-1e-5}
SETS=${SETS:-forget,neighbor,mia,utility}
COMMON=(--benchmark rwku --data "$DATA" --split 1 --model smollm2-135m --eval-sets "$SETS")
step() {  # step NAME eval|run ARGS...: run it unless OUT/NAME/summary.json exists, and say how long it took
  local name=$1 cmd=$2 again=(); shift 2
  if [ -f "$R/$name/summary.json" ]; then echo "$name: done already"; return; fi
  if [ -d "$R/$name" ]; then  # an interrupted step: a run resumes from its checkpoint, an evaluation starts again
    if [ "$cmd" = run ]; then again=(--resume); else again=(--overwrite); fi
  fi
  local t0=$SECONDS
  $U "$cmd" "$@" --out "$R/$name" "${again[@]}"
  echo "$name: $((SECONDS - t0)) s" | tee -a "$R/times.txt"
}
mkdir -p "$R"
step before eval "${COMMON[@]}"
step icu eval "${COMMON[@]}" --method ICU
step ga run "${COMMON[@]}" --method GA --lr "$LR" --epochs 3 --batch-size 4 --effective-batch 8 \
    --lr-schedule cosine --warmup 2 --weight-decay 0 --save-every 5
$U report "$R" --out "$R/report" --title "RWKU target 1 on SmolLM2-135M"
