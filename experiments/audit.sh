#!/usr/bin/env bash
# "Does it really forget?" (README): unlearn audit on the demo's ME+GD and IDK+AP models and on a
# GA+GD model of the same demo-scale task (tiny target of `make demo`, forget05 task 1, lr 1e-3,
# 10 epochs, batch 4), each beside the target and the retain model. Membership inference uses
# the demo data's holdout05.json (authors no model was trained on). The relearning attack runs
# at the task's learning rate (1e-3, 20 steps of 4 rows on half the forget set).
# Resumable (finished audits are kept); results: experiments/results/audit/<model>/.
set -euo pipefail
cd "$(dirname "$0")/.."
R=experiments/runs/audit
source experiments/demo_task.sh
[ -f demo_out/data/holdout05.json ] || $U data synth --out demo_out/data  # (demos made before holdout sets)
run ga_gd --method GA+GD --no-eval
audit() {  # name, model folder
  local out=experiments/results/audit/$1
  [ -f "$out/audit.json" ] || $U audit --model "$2" --target-model demo_out/target --retain-model demo_out/retain_model \
    --data demo_out/data --split forget05 --task-id 1 --max-length 128 --relearn-lr 1e-3 --out "$out" --resume
}
audit me_gd demo_out/me_gd
audit idk_ap demo_out/idk_ap
audit ga_gd "$R/ga_gd"
