"""The numbers behind the README's SmolLM2 findings, read from the experiment's results (no model loads).

    python experiments/smollm2/findings.py [experiments/results/smollm2] > experiments/results/smollm2/findings.md

Prints markdown: the single-task table (final model of each method, plus the step ``--keep best
--mu-floor 0.9`` would keep from its training-time log), the continual table (MU and FE after each
task) and the wall time of each stage and run. Whatever stages are done so far are printed.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

COLUMNS = [
    ("MU", "Model Utility"),
    ("FE", "Forget Efficacy"),
    ("Forget Quality", "Forget Quality"),
    ("Forget ROUGE", "Forget ROUGE"),
    ("Retain ROUGE", "Retain ROUGE"),
    ("Forget Token Entropy", "Forget Token Entropy"),
    ("Real Authors ROUGE", "Real Authors ROUGE"),
    ("World Facts ROUGE", "Real World ROUGE"),
]
PAPER = ["GA+GD", "GA+KL", "NPO+GD", "NPO+KL", "DPO+GD", "DPO+KL", "IDK+GD", "IDK+KL", "ME+GD", "IDK+AP"]
NEW = ["SimNPO+GD", "WGA+GD", "SatImp+GD", "UNDIAL+GD", "CE-U", "TV", "RMU"]
CONTINUAL = ["GA+GD", "NPO+GD", "NPO+GD-fixed-ref", "ME+GD", "IDK+AP"]
SCALED = "RMU (c 300, α 1000, lr {})"  # rmu_scaled.yaml's runs, one per lr


def fmt(v) -> str:
    if v in (None, ""):
        return "–"
    v = float(v)
    return f"{v:.2e}" if v and abs(v) < 1e-3 else f"{v:.3f}"


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def kept_step(log: Path, floor: float = 0.9) -> tuple[int, dict] | None:
    """The evaluation ``--keep best --mu-floor floor`` keeps: highest FE among those whose MU stays at
    least ``floor`` × the first evaluation's MU (training-time MU: Forget and Retain sets)."""
    if not log.is_file():
        return None
    rows = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    if not rows:
        return None
    start = rows[0]["Model Utility"]
    ok = [r for r in rows if r.get("Model Utility") is not None and r["Model Utility"] >= floor * start]
    best = max(ok, key=lambda r: r["Forget Efficacy"]) if ok else None
    return (best["step"], best) if best else None


def single_task(root: Path) -> list[str]:
    out = [
        "| method | " + " | ".join(c for c, _ in COLUMNS) + " | kept step (FE / train-time MU) |",
        "|---" * (len(COLUMNS) + 2) + "|",
    ]
    refs = [("target (before)", root / "target_eval"), ("retain model", root / "retain_eval")]
    runs = (
        [(m, root / "methods" / f"method-{m}") for m in PAPER]
        + [(m, root / "new_methods" / f"method-{m}") for m in NEW]
        + [(SCALED.format(lr), root / "rmu_scaled" / f"method-RMU__lr-{lr}") for lr in ("5e-05", "0.001")]
    )
    for name, folder in refs + runs:
        s = read_json(folder / "summary.json")
        if s is None:
            continue
        kept = kept_step(folder / "eval_log.jsonl")
        keep = (
            "–" if kept is None else f"{kept[0]} ({fmt(kept[1]['Forget Efficacy'])} / {fmt(kept[1]['Model Utility'])})"
        )
        out.append(f"| {name} | " + " | ".join(fmt(s.get(k)) for _, k in COLUMNS) + f" | {keep} |")
    return out


def continual(root: Path) -> list[str]:
    out = []
    for key, label in (("Model Utility", "MU"), ("Forget Efficacy", "FE"), ("Retain ROUGE", "Retain ROUGE")):
        rows = []
        for m in CONTINUAL:
            f = root / "continual" / m / "continual.csv"
            if f.is_file():
                vals = [r.get(key) for r in csv.DictReader(f.open())]
                rows.append(f"| {m} | " + " | ".join(fmt(v) for v in vals) + " |" + " – |" * (5 - len(vals)))
        if rows:
            out += [
                f"{label} after each task:",
                "",
                "| method | task 1 | task 2 | task 3 | task 4 | task 5 |",
                "|---|---|---|---|---|---|",
                *rows,
                "",
            ]
    return out


def run_times(root: Path) -> list[str]:
    """Minutes per run: a sweep's ``seconds`` (a run resumed from its checkpoint counts from the resume,
    so it is marked) and the sum of a continual run's per-task ``seconds``."""
    out = []
    for stage in ("methods", "new_methods", "rmu_scaled"):
        f = root / stage / "sweep.csv"
        for r in csv.DictReader(f.open()) if f.is_file() else []:
            if r.get("seconds"):
                note = " (from a checkpoint on)" if "resumed" in r.get("status", "") else ""
                name = SCALED.format(r["lr"]) if stage == "rmu_scaled" else r["method"]
                out.append(f"| {name} | {float(r['seconds']) / 60:.0f}{note} |")
    for m in CONTINUAL:
        f = root / "continual" / m / "continual.csv"
        rows = list(csv.DictReader(f.open())) if f.is_file() else []
        timed = [float(r["seconds"]) for r in rows if r.get("seconds")]
        if timed:
            out.append(f"| continual {m}, {len(timed)} of {len(rows)} tasks | {sum(timed) / 60:.0f} |")
    return ["| run | minutes |", "|---|---|", *out, ""] if out else []


def main(argv: list[str]) -> int:
    results = Path(argv[0] if argv else "experiments/results/smollm2")
    root = results / "runs"
    lines = ["## One task (forget01 task 1, 40 QA)", "", *single_task(root), ""]
    cont = continual(root)
    if cont:
        lines += ["## Continual (forget01 tasks 1-5)", "", *cont]
    times = results / "times.csv"
    if times.is_file():
        lines += ["## Wall time per stage (2 CPU cores)", "", "| stage | minutes |", "|---|---|"]
        seen = set()
        for r in csv.DictReader(times.open()):  # a stage run again (its folder lost with a checkout) is marked
            lines.append(f"| {r['stage']}{' (again)' if r['stage'] in seen else ''} | {int(r['seconds']) / 60:.0f} |")
            seen.add(r["stage"])
    per_run = run_times(root)
    if per_run:
        lines += [
            "",
            "Per run (the paper's methods: training, evaluations while training and the final evaluation; "
            "the newer methods: training and the final evaluation):",
            "",
            *per_run,
        ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
