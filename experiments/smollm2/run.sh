#!/usr/bin/env bash
# The paper's findings on a real pretrained model, SmolLM2-135M-Instruct, on 2 CPU cores (issue: evidence
# on a real model). Resumable: every stage is skipped when its result exists, so it can run in parts
# (STAGES="data target retain" bash experiments/smollm2/run.sh runs some). Wall time per stage is
# appended to experiments/results/smollm2/times.csv; the report goes to experiments/results/smollm2/report/
# (a folder unlearn created and owns: its .unlearn-owned.json is committed, so the next report replaces it).
#
# Sizes (chosen to fit 2 CPU cores; TOFU's full 4,000 QA would take days here):
#   - forget: forget01 tasks 1-5 of the release (5 x 40 QA): task 1 for the ten methods, 1-5 for continual;
#   - retain: the first 100 QA of retain_perturbed (the Retain evaluation set is those same 100);
#   - Real Authors (100) and World Facts (117) as they are: a pretrained model knows some of them, so
#     Model Utility means what it means in the paper;
#   - target: 300 QA, 5 epochs at lr 1e-4 (batch 8); retain model: the 100 retain QA only, same settings;
#   - unlearning (methods.yaml, new_methods.yaml, continual): 5 epochs, batch 4 (50 steps on a 40-QA task) at
#     lr 5e-5: each forget QA is seen 5 times, at about the step size with which the SmolLM2 demo forgot;
#     RMU also with c and alpha on this model's scale (rmu_scaled.yaml, part of the new_methods stage;
#     experiments/smollm2/rmu_scale.py measures why).
#   - seeds: NPO+GD, ME+GD, IDK+GD, IDK+AP and GA+GD with seeds 1001-1003, and ME+GD with the official ME
#     averaging (ME.pad_to = the max length, 192), each evaluated once at the end (seeds.yaml, seeds_me_pad.yaml):
#     the spread over seeds behind the findings' comparisons.
# Every training stage writes a checkpoint every few steps and resumes from it when rerun.
# On 2 cores, two stages side by side with one thread each do about 1.2x the work of one stage on two
# (measured: a training step and a generation batch, one 2-thread process vs two 1-thread ones), e.g.
#   OMP_NUM_THREADS=1 STAGES="methods new_methods" bash experiments/smollm2/run.sh &
#   OMP_NUM_THREADS=1 STAGES=continual bash experiments/smollm2/run.sh
# then STAGES=report (a second copy of a running stage is refused: its folder is locked).
set -euo pipefail
{  # read whole before it runs: editing this file while a stage runs cannot change what the rest does
cd "$(dirname "$0")/../.."
U=${UNLEARN:-.venv/bin/unlearn}
SRC=${DATA:-../shared/data/tofu}
R=experiments/runs/smollm2
OUT=experiments/results/smollm2
STAGES=${STAGES:-"data target retain evals methods new_methods continual seeds report"}
mkdir -p "$R" "$OUT"
[ -f "$OUT/times.csv" ] || echo "stage,seconds" > "$OUT/times.csv"

# The finished runs' small files (summary, configs, training-time log, continual curve) are kept in
# $OUT/runs (committed); the run folders with their models are not. On a fresh checkout they are put
# back into $R, so that a finished run is not run again and the report covers every run. A run that
# stopped half-way is not restored (its checkpoint is gone): it runs again from the start.
python3 - "$R" "$OUT" <<'PY'
import csv, json, pathlib, shutil, sys
runs, kept = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]) / "runs"
for f in kept.rglob("*") if kept.is_dir() else []:
    rel = f.relative_to(kept)
    if not f.is_file() or (runs / rel).exists():
        continue
    if rel.parts[0] == "continual" and len(rel.parts) > 2:  # continual/<method>/...: finished after 5 tasks
        curve = kept.joinpath(*rel.parts[:2], "continual.csv")
        finished = curve.is_file() and sum(1 for _ in csv.DictReader(curve.open())) >= 5
    else:
        finished = f.name == "sweep.csv" or (f.parent / "summary.json").is_file()
    if finished:
        for d in reversed([p for p in (runs / rel).parents if p.is_relative_to(runs / rel.parts[0])]):
            if not d.exists():  # a folder unlearn made, put back: recorded as unlearn's again, so that a
                d.mkdir(parents=True)  # sweep resumed in it may replace its own sweep.csv
                (d / ".unlearn-owned.json").write_text(json.dumps({"created": True, "names": []}))
        shutil.copy(f, runs / rel)
PY

timed() {  # timed NAME CMD...: run CMD, append its wall time
  local name=$1; shift
  local t0; t0=$(date +%s)
  "$@"
  echo "$name,$(( $(date +%s) - t0 ))" >> "$OUT/times.csv"
}
want() { [[ " $STAGES " == *" $1 "* ]]; }
again() { if [ -d "$1/checkpoint" ]; then echo --resume; else echo --overwrite; fi; }  # resume an interrupted stage

if want data && [ ! -f "$R/data/world_facts_perturbed.json" ]; then
  D=$R/data; mkdir -p "$D"
  python3 - "$SRC" "$D" <<'PY'
import json, sys
src, dst = sys.argv[1], sys.argv[2]
rows = lambda name: [json.loads(x) for x in open(f"{src}/{name}.json") if x.strip()]
tasks = {"1", "2", "3", "4", "5"}
for name in ("forget01", "forget01_perturbed"):
    with open(f"{dst}/{name}.json", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows(name) if str(r["task_id"]) in tasks)
retain = rows("retain_perturbed")[:100]
with open(f"{dst}/retain_perturbed.json", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in retain)
with open(f"{dst}/retain90.json", "w") as f:
    f.writelines(json.dumps({"question": r["question"], "answer": r["answer"]}) + "\n" for r in retain)
for name in ("real_authors_perturbed", "world_facts_perturbed"):
    with open(f"{dst}/{name}.json", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows(name))
PY
  cp "$SRC/../idontknow.jsonl" "$R/idontknow.jsonl"
  cat "$R/data/forget01.json" "$R/data/retain90.json" > "$R/target_train.jsonl"
fi

ft=(--model smollm2-135m --epochs 5 --lr 1e-4 --batch-size 8 --grad-accum 1 --warmup 10 --max-length 192 --save-every 20)
if want target && [ ! -f "$R/target/model/config.json" ]; then
  timed target_finetune $U finetune "${ft[@]}" --train "$R/target_train.jsonl" --out "$R/target" $(again "$R/target")
fi
if want retain && [ ! -f "$R/retain_model/model/config.json" ]; then
  timed retain_finetune $U finetune "${ft[@]}" --train "$R/data/retain90.json" --out "$R/retain_model" $(again "$R/retain_model")
fi
ev=(--data "$R/data" --split forget01 --task-id 1 --nli none --eval-batch-size 32)
if want evals; then
  [ -f "$R/target_eval/summary.json" ] || timed target_eval $U eval --model "$R/target/model" "${ev[@]}" \
      --retain-model "$R/retain_model/model" --out "$R/target_eval" --overwrite
  [ -f "$R/retain_eval/summary.json" ] || timed retain_eval $U eval --model "$R/retain_model/model" "${ev[@]}" \
      --retain-model "$R/retain_model/model" --out "$R/retain_eval" --overwrite
fi
if want methods; then
  timed methods $U sweep --config experiments/smollm2/methods.yaml
fi
if want new_methods; then
  timed new_methods $U sweep --config experiments/smollm2/new_methods.yaml
  timed rmu_scaled $U sweep --config experiments/smollm2/rmu_scaled.yaml  # RMU with c on this model's scale
fi
if want seeds; then  # issue 32: five methods x 3 seeds, and ME+GD with the official ME averaging, evaluated at the end
  timed seeds $U sweep --config experiments/smollm2/seeds.yaml
  timed seeds_me_pad $U sweep --config experiments/smollm2/seeds_me_pad.yaml
fi
if want continual; then
  common=(--model "$R/target/model" --data "$R/data" --split forget01 --tasks 1-5 --epochs 5 --lr 5e-5
          --batch-size 4 --grad-accum 1 --max-length 192 --nli none --eval-batch-size 32 --save-every 10)
  finished() { [ -f "$1/continual.csv" ] && [ "$(tail -n +2 "$1/continual.csv" | wc -l)" -ge 5 ]; }  # 5 tasks done
  for m in GA+GD NPO+GD ME+GD IDK+AP; do
    finished "$R/continual/$m" || timed "continual_$m" $U continual "${common[@]}" --method "$m" --out "$R/continual/$m"
  done
  finished "$R/continual/NPO+GD-fixed-ref" || timed "continual_NPO+GD-fixed-ref" $U continual "${common[@]}" \
      --method NPO+GD --fix-ref-model --out "$R/continual/NPO+GD-fixed-ref"
fi
if want report; then  # also on partial results: the stages done so far
  done_runs=(); for d in "$R/methods" "$R/new_methods" "$R/rmu_scaled" "$R/seeds" "$R/seeds_me_pad" "$R/continual" "$R/retain_eval"; do [ -d "$d" ] && done_runs+=("$d"); done
  # the numbers behind the report, small enough to keep (first: a report that fails leaves them kept): every summary and training-time log
  python3 - "$R" "$OUT" <<'PY'
import hashlib, json, pathlib, shutil, sys
runs, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
names = ("summary.json", "intervals.json", "eval_log.jsonl", "continual.csv", "kept.json", "sweep.csv", "config.yaml",
         "eval_config.yaml")
for f in (f for name in names for f in runs.rglob(name)):
    if "/model/" in str(f) or "/data/" in str(f):
        continue
    dest = out / "runs" / f.relative_to(runs)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(f, dest)
# the per-item records of the seeds stages' final evaluations, for the paired comparisons (unlearn report's
# column against a reference run, unlearn report --compare): numbers only, each question replaced by a hash
# of its text (items still match across runs; the data set's text is not copied), floats to 7 digits
for f in (f for stage in ("seeds", "seeds_me_pad") for f in (runs / stage).glob("*/eval_*.jsonl")):
    if f.name == "eval_log.jsonl" or not (f.parent / "summary.json").is_file():
        continue
    rows = []
    for line in f.read_text().splitlines():
        r = json.loads(line) if line.strip() else None
        if not isinstance(r, dict) or not isinstance(r.get("question"), str):
            continue
        if not r["question"].startswith("sha256:"):
            r["question"] = "sha256:" + hashlib.sha256(r["question"].encode()).hexdigest()[:16]
        rows.append({k: (float(f"{v:.7g}") if isinstance(v, float) else [float(f"{x:.7g}") for x in v]
                         if isinstance(v, list) and all(isinstance(x, float) for x in v) else v)
                     for k, v in r.items() if k == "question" or isinstance(v, (int, float, list)) or v is None})
    dest = out / "runs" / f.relative_to(runs)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("".join(json.dumps(r) + "\n" for r in rows))
PY
  $U report "${done_runs[@]}" --baseline "$R/target_eval" --out "$OUT/report" \
      --title "The paper's findings on SmolLM2-135M-Instruct (2 CPU cores)"
  # item by item: two seeds of one method (how far apart one training's randomness puts them), and ME+GD
  # with the official padded averaging against ME+GD on the same seed
  pair() { [ -f "$R/$1/summary.json" ] && [ -f "$R/$2/summary.json" ] && $U report --compare "$R/$1" "$R/$2" --out "$OUT/$3" > /dev/null; }
  pair seeds/method-ME+GD__seed-1001 seeds/method-ME+GD__seed-1002 compare_me_gd_seed_1001_1002 || true
  pair seeds/method-ME+GD__seed-1001 seeds_me_pad/seed-1001 compare_me_gd_pad_seed_1001 || true
  python3 experiments/smollm2/findings.py "$OUT" > "$OUT/findings.md.tmp" && mv "$OUT/findings.md.tmp" "$OUT/findings.md"
fi
echo "results: $OUT"
exit
}
