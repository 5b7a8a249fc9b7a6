"""The numbers behind the README's SmolLM2 findings, read from the experiment's results (no model loads).

    python experiments/smollm2/findings.py [experiments/results/smollm2] > experiments/results/smollm2/findings.md

Prints markdown: the single-task table (final model of each method, plus the step ``--keep best
--mu-floor 0.9`` would keep from its training-time log), the seeds tables (each method over seeds
1001-1003: mean ± standard deviation, the 95% t-interval of the mean beside one run's interval over the
items, and every pair of methods' difference with Welch's 95% interval), the continual table (MU and FE
after each task) and the wall time of each stage and run. Whatever stages are done so far are printed.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import numpy as np
from scipy import stats

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


SEED_STAGES = {"seeds": "{}", "seeds_me_pad": "{} (ME.pad_to 192)"}  # stage: how its runs are named
SEED_COLUMNS = COLUMNS[:5] + COLUMNS[6:7] + COLUMNS[5:6]  # Real Authors ROUGE before the entropy
PAIR_KEYS = ("Model Utility", "Forget Efficacy", "Forget ROUGE", "Retain ROUGE")


def seed_runs(root: Path) -> dict[str, dict[int, Path]]:
    """``{setting: {seed: run folder}}`` of the seeds stages' finished runs, in PAPER's order."""
    found: dict[str, dict[int, Path]] = {}
    for stage, label in SEED_STAGES.items():
        for folder in sorted((root / stage).glob("*seed-*")):
            seed = re.search(r"seed-(\d+)$", folder.name)
            if seed is None or not (folder / "summary.json").is_file():
                continue
            setting = re.sub(r"(^|__)seed-\d+$", "", folder.name).removeprefix("method-") or "ME+GD"
            found.setdefault(label.format(setting), {})[int(seed.group(1))] = folder
    order = {m: i for i, m in enumerate(PAPER)}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0].split(" ")[0], 99), kv[0])))


def values(runs: dict[int, Path], key: str) -> np.ndarray:
    """``key``'s value in each run's summary.json, in seed order."""
    got = [(read_json(runs[s] / "summary.json") or {}).get(key) for s in sorted(runs)]
    return np.array([float(v) for v in got if isinstance(v, (int, float))])


def t_interval(v: np.ndarray) -> str:
    """The 95% t-interval of the mean over seeds, cut to [0, 1] (as unlearn report does)."""
    if v.size < 2:
        return "–"
    lo, hi = stats.t.interval(0.95, v.size - 1, loc=v.mean(), scale=stats.sem(v)) if v.std() > 0 else (v[0], v[0])
    return f"[{max(lo, 0.0):.3f}, {min(hi, 1.0):.3f}]"


def item_half_width(runs: dict[int, Path], key: str) -> str:
    """The mean half-width of the runs' own 95% intervals over the items (intervals.json)."""
    widths = []
    for folder in runs.values():
        iv = (read_json(folder / "intervals.json") or {}).get("intervals", {}).get(key) or {}
        if iv.get("lo") is not None and iv.get("hi") is not None:
            widths.append((iv["hi"] - iv["lo"]) / 2)
    return "–" if not widths else f"±{np.mean(widths):.3f}"


def welch(a: np.ndarray, b: np.ndarray) -> str:
    """``a − b`` (means over seeds) and Welch's 95% interval; bold when the interval excludes 0."""
    if a.size < 2 or b.size < 2:
        return "–"
    diff = a.mean() - b.mean()
    if a.std() == 0 and b.std() == 0:
        return f"{diff:+.3f} (no spread)"
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    text = f"{diff:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}]"
    return f"**{text}**" if ci.low > 0 or ci.high < 0 else text


def seeds(root: Path) -> list[str]:
    runs = seed_runs(root)
    if not runs:
        return []
    out = [
        "Each method's final model over its seeds: mean ± standard deviation.",
        "",
        "| method | seeds | " + " | ".join(c for c, _ in SEED_COLUMNS) + " |",
        "|---" * (len(SEED_COLUMNS) + 2) + "|",
    ]
    for name, per_seed in runs.items():
        cells = []
        for _, key in SEED_COLUMNS:
            v = values(per_seed, key)
            cells.append("–" if v.size == 0 else fmt(v[0]) if v.size == 1 else f"{v.mean():.3f} ± {v.std(ddof=1):.3f}")
        out.append(f"| {name} | {', '.join(map(str, sorted(per_seed)))} | " + " | ".join(cells) + " |")
    out += [
        "",
        "Where the spread comes from: the 95% t-interval of the mean over seeds, beside the mean half-width of "
        "each run's own 95% interval over the items (bootstrap, intervals.json). The seeds differ in training's "
        "randomness (the order of the batches); the interval over items reflects the sampling of 40 forget "
        "and 317 utility questions. Forget Quality: each seed's value (a KS test on 40 items takes 39 values).",
        "",
        "| method | MU: over seeds | MU: one run, over items | FE: over seeds | FE: one run, over items "
        "| Forget Quality, by seed |",
        "|---|---|---|---|---|---|",
    ]
    for name, per_seed in runs.items():
        cells = []
        for key in ("Model Utility", "Forget Efficacy"):
            cells += [t_interval(values(per_seed, key)), item_half_width(per_seed, key)]
        fq = ", ".join(fmt(v) for v in values(per_seed, "Forget Quality"))
        out.append(f"| {name} | " + " | ".join(cells) + f" | {fq} |")
    names = [n for n, r in runs.items() if len(r) >= 2]
    if len(names) < 2:
        return out + [""]
    out += [
        "",
        "Every pair of methods: the difference of their means over seeds (row − column) with Welch's 95% "
        "interval. **Bold**: the interval excludes 0, the difference is larger than the spread over seeds; "
        "plain: not distinguishable with these seeds.",
        "",
    ]
    for key in PAIR_KEYS:
        out += [f"{key}:", "", "| row − column | " + " | ".join(names[1:]) + " |", "|---" * len(names) + "|"]
        for i, a in enumerate(names[:-1]):
            cells = [welch(values(runs[a], key), values(runs[b], key)) if j > i else "" for j, b in enumerate(names)]
            out.append(f"| {a} | " + " | ".join(cells[1:]) + " |")
        out.append("")
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
    for stage in ("methods", "new_methods", "rmu_scaled", *SEED_STAGES):
        f = root / stage / "sweep.csv"
        for r in csv.DictReader(f.open()) if f.is_file() else []:
            if r.get("seconds"):
                note = " (from a checkpoint on)" if "resumed" in r.get("status", "") else ""
                name = SCALED.format(r["lr"]) if stage == "rmu_scaled" else r.get("method") or "ME+GD"
                if stage in SEED_STAGES:
                    name = SEED_STAGES[stage].format(name) + f", seed {r['seed']}"
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
    over_seeds = seeds(root)
    if over_seeds:
        lines += ["## Three seeds (forget01 task 1, evaluated at the end)", "", *over_seeds]
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
            "the newer methods: training and the final evaluation; the seeds stages: training, the evaluation "
            "before (Forget and Retain) and the final one; a run that ran beside another, one thread each, "
            "takes longer):",
            "",
            *per_run,
        ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
