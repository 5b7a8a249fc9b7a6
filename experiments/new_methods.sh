#!/usr/bin/env bash
# The methods added since the paper on the same demo-scale task as experiments/paper_findings.sh
# (tiny target of `make demo`, forget05 task 1, lr 1e-3, 10 epochs, batch 4; each method's own
# default weights and arguments; RMU on the tiny 2-layer model: layer 1, layers 0,1, alpha 1).
# Resumable; results: the report in experiments/results/new_methods/.
set -euo pipefail
cd "$(dirname "$0")/.."
R=experiments/runs/new_methods
source experiments/demo_task.sh
for m in SimNPO+GD WGA+GD SatImp+GD UNDIAL+GD CE-U TV; do run "$m" --method "$m"; done
run RMU --method RMU --method-arg layer=1 --method-arg layers=0,1 --method-arg alpha=1
$U report "$R" --baseline demo_out/target --out experiments/results/new_methods --title "Methods since the paper"
