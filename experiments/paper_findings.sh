#!/usr/bin/env bash
# Reproduce the findings of the paper (its §5) at demo scale, on a CPU, offline:
#   1. the ten method combinations on one fictitious forget task (a sweep);
#   2. continual unlearning of 5 tasks with ME+GD, IDK+AP, GA+GD and NPO+GD, the last with and
#      without a fixed reference model;
#   3. one report (table, MU-FE trade-off, continual curves, before/after examples).
# Runs are resumable: rerunning skips what is finished. Results: experiments/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
U=${UNLEARN:-.venv/bin/unlearn}
RUNS=experiments/runs
[ -f demo_out/target/model/config.json ] || $U demo --out demo_out --overwrite

$U sweep --config experiments/methods.yaml

common=(--model demo_out/target/model --data demo_out/data --split forget05 --tasks 1-5 --epochs 10
        --lr 1e-3 --batch-size 4 --grad-accum 1 --max-length 128 --nli none)
for m in ME+GD IDK+AP GA+GD NPO+GD; do
  $U continual "${common[@]}" --method "$m" --out "$RUNS/continual/$m"
done
$U continual "${common[@]}" --method NPO+GD --fix-ref-model --out "$RUNS/continual/NPO+GD-fixed-ref"

$U report "$RUNS/methods" "$RUNS/continual" --baseline demo_out/target --out experiments/results \
    --title "Paper findings at demo scale"
echo "report: experiments/results/report.md"
