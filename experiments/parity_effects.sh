#!/usr/bin/env bash
# The measured effect of each protocol detail we keep different from the official code on purpose
# (docs/parity.md), at demo scale on a CPU: the demo's tiny target (run `make demo` first), forget05
# task 1, ME+GD / GA+KL for 10 epochs at lr 1e-3, batch 4. Each pair differs only in the flag that
# restores the official behaviour. Results: experiments/results/parity_effects.csv (resumable).
set -euo pipefail
cd "$(dirname "$0")/.."
R=experiments/runs/parity
source experiments/demo_task.sh
run me_gd_real_tokens --method ME+GD
run me_gd_padded_128 --method ME+GD --method-arg ME.pad_to=128
run ga_kl_real_tokens --method GA+KL
run ga_kl_padded_128 --method GA+KL --method-arg KL.pad_to=128
# The target's own evaluation with the official plain-prompt masking (the space before the answer
# is part of the prompt, so the merged first answer token is not scored) against ours.
[ -f "$R/target_eval_plain/summary.json" ] || $U eval --model demo_out/target/model --data demo_out/data \
    --split forget05 --task-id 1 --nli none --out "$R/target_eval_plain" --overwrite
[ -f "$R/target_eval_official_prompt/summary.json" ] || $U eval --model demo_out/target/model --data demo_out/data \
    --split forget05 --task-id 1 --nli none --prompt-format $'Question: {question}\nAnswer: ' \
    --out "$R/target_eval_official_prompt" --overwrite
.venv/bin/python - <<'PY'
import csv, json, pathlib
root = pathlib.Path("experiments/runs/parity")
keys = ["Forget ROUGE", "Forget Probability", "Retain ROUGE", "Retain Probability", "Model Utility",
        "Forget Efficacy", "Forget Quality"]
rows = []
for d in sorted(p for p in root.iterdir() if (p / "summary.json").is_file()):
    s = json.loads((d / "summary.json").read_text())
    rows.append({"run": d.name, **{k: None if s.get(k) is None else round(s[k], 4) for k in keys}})
out = pathlib.Path("experiments/results/parity_effects.csv")
with out.open("w", newline="") as fh:
    w = csv.DictWriter(fh, ["run", *keys]); w.writeheader(); w.writerows(rows)
print(out.read_text())
PY
