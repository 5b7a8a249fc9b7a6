#!/usr/bin/env bash
# The methods added since the paper on the same demo-scale task as experiments/paper_findings.sh
# (tiny target of `make demo`, forget05 task 1, lr 1e-3, 10 epochs, batch 4; each method's own
# default weights and arguments; RMU on the tiny 2-layer model: layer 1, layers 0,1, alpha 1).
# Resumable; results: experiments/results/new_methods.csv and the report in experiments/results/new_methods/.
set -euo pipefail
cd "$(dirname "$0")/.."
U=${UNLEARN:-.venv/bin/unlearn}
R=experiments/runs/new_methods
[ -f demo_out/target/model/config.json ] || $U demo --out demo_out --overwrite
common=(--model demo_out/target/model --data demo_out/data --retain-model demo_out/retain_model --split forget05
        --task-id 1 --epochs 10 --lr 1e-3 --batch-size 4 --grad-accum 1 --max-length 128 --nli none)
run() {  # name, args...
  local name=$1; shift
  [ -f "$R/$name/summary.json" ] || $U run "${common[@]}" "$@" --out "$R/$name" --overwrite
}
for m in SimNPO+GD WGA+GD SatImp+GD UNDIAL+GD CE-U TV; do run "$m" --method "$m"; done
run RMU --method RMU --method-arg layer=1 --method-arg layers=0,1 --method-arg alpha=1
$U report "$R" --baseline demo_out/target --out experiments/results/new_methods --title "Methods since the paper"
