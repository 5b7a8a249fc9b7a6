#!/usr/bin/env bash
# `unlearn forget` as a practitioner runs it, on records a model has learned (README, "Make a model
# forget your records"). Resumable: each finished step is skipped; results are appended to
# experiments/results/forget_show.csv as they come.
#   1. the demo's tiny target (make demo's model) and 20 of its records; 40 retain records; 20 holdout
#      records of the same kind it never saw (the synthetic generator with another seed)
#   2. the same, with a budget of 1 step: the "not met" path (exit status 3)
#   3. SmolLM2-135M-Instruct fine-tuned on the 20 + 40 records (8 epochs, lr 1e-4), then forget
set -uo pipefail
cd "$(dirname "$0")/.."
U=${UNLEARN:-.venv/bin/unlearn}
R=experiments/runs/forget
mkdir -p "$R" experiments/results
[ -f demo_out/target/model/config.json ] || $U demo --out demo_out --overwrite
.venv/bin/python - <<'PY'
import json, pathlib
from unlearn.data import read_records
from unlearn.synthetic import generate
d = pathlib.Path("experiments/runs/forget/data")
if not (d / "holdout.jsonl").is_file():
    d.mkdir(parents=True, exist_ok=True)
    split = read_records("demo_out/data/forget05.json")
    forget = [r for r in split if int(r["task_id"]) == 1]
    taken = {r["question"] for r in split}
    retain = [r for r in read_records("demo_out/data/full.json") if r["question"] not in taken][:40]
    known = {r["question"] for r in read_records("demo_out/data/full.json")}
    holdout = [r for r in generate(100, 4, seed=7)["full.json"] if r["question"] not in known][:20]
    for name, rows in (("forget", forget), ("retain", retain), ("holdout", holdout), ("train", forget + retain)):
        (d / f"{name}.jsonl").write_text("".join(json.dumps({"question": r["question"], "answer": r["answer"]}) + "\n"
                                                 for r in rows))
PY
D=$R/data
sets=(--forget $D/forget.jsonl --retain $D/retain.jsonl --holdout $D/holdout.jsonl --nli none)
record() {  # name, command..., run and append one CSV row
  local name=$1; shift
  [ -f "$R/$name/forget.json" ] && return
  local start=$(date +%s) resume=()
  [ -d "$R/$name/checkpoint" ] && resume=(--resume)  # a run killed part-way goes on from its checkpoint
  "$@" "${resume[@]}" >> "$R/$name.log" 2>&1
  local rc=$? seconds=$(( $(date +%s) - start ))
  .venv/bin/python - "$R/$name" "$name" "$rc" "$seconds" <<'PY'
import csv, json, pathlib, sys
out, name, rc, seconds = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
f = json.loads((out / "forget.json").read_text())
b, a = f["before"], f["after"]
row = {"run": name, "exit": rc, "wall s": seconds, "steps planned": f["plan"]["steps"], "stopped at": f["steps"],
       "verdict": f["verdict"]["code"], "Forget ROUGE before": b["Forget"]["ROUGE"], "after": a["Forget"]["ROUGE"],
       "Holdout ROUGE after": a["Holdout"]["ROUGE"], "Retain ROUGE before": b["Retain"]["ROUGE"],
       "Retain ROUGE after": a["Retain"]["ROUGE"], "comes back under": "; ".join(f["audit"]["comes back under"])}
path = pathlib.Path("experiments/results/forget_show.csv")
new = not path.exists()
with path.open("a", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=list(row))
    if new:
        w.writeheader()
    w.writerow({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
print(row)
PY
}
record tiny $U forget --model demo_out/target/model "${sets[@]}" --max-length 128 --out $R/tiny
record tiny_1_step $U forget --model demo_out/target/model "${sets[@]}" --max-length 128 --max-steps 1 \
    --out $R/tiny_1_step
[ -f $R/smollm2_target/model/config.json ] || $U finetune --model smollm2-135m --train $D/train.jsonl --epochs 8 \
    --lr 1e-4 --batch-size 8 --grad-accum 1 --warmup 10 --max-length 128 --out $R/smollm2_target > $R/smollm2_target.log 2>&1
record smollm2 $U forget --model $R/smollm2_target/model "${sets[@]}" --max-length 128 --out $R/smollm2
