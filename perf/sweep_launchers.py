"""Wall time of one sweep under each launcher, side by side in one run, and whether they agree.

The sweep: the tiny model, the synthetic TOFU-like data (forget01), GA+GD and ME+GD at two learning rates
(4 runs), evaluated with the six metrics (no NLI judge). Each launcher runs it into its own folder from a
fresh ``unlearn sweep`` process: in this process one run after another (the default), ``--parallel 2``,
Ray started here (``--launcher ray``), submitit's local executor 2 at a time. Prints seconds, the ratio
to the in-process sweep, and the largest difference of any key metric from it.

    .venv/bin/python perf/sweep_launchers.py [--out /tmp/sweep_launchers]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

VARIANTS = {
    "in process (default)": [],
    "--parallel 2": ["--parallel", "2"],
    "--launcher ray": ["--launcher", "ray"],
    "submitit local, 2 at once": ["--launcher", "slurm", "--parallel", "2"],
}
KEYS = ("Model Utility", "Forget Efficacy", "Forget Quality")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/sweep_launchers")
    args = ap.parse_args()
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-m", "unlearn", "data", "synth", "--out", str(out / "data")], check=True, capture_output=True
    )
    seconds, tables = {}, {}
    for i, (label, flags) in enumerate(VARIANTS.items()):
        root = out / f"sweep{i}"
        doc = {
            "base": {"model": "tiny", "data": str(out / "data"), "split": "forget01", "nli": "none", "epochs": 2},
            "grid": {"method": ["GA+GD", "ME+GD"], "lr": [1e-3, 1e-4]},
            "out": str(root),
        }
        if "slurm" in flags:
            doc["launcher"] = {"cluster": "local"}
        (out / f"sweep{i}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "unlearn", "sweep", "--config", str(out / f"sweep{i}.yaml"), *flags],
            capture_output=True,
            text=True,
        )
        seconds[label] = time.perf_counter() - start
        if proc.returncode:
            sys.exit(f"{label}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        with open(root / "sweep.csv", newline="") as f:
            tables[label] = {r["run"]: r for r in csv.DictReader(f)}
        print(f"{label}: {seconds[label]:.1f} s", flush=True)
    base = next(iter(VARIANTS))
    print("\n| launcher | wall time (s) | vs in process | largest metric difference |\n|---|---|---|---|")
    for label in VARIANTS:
        diff = max(
            abs(float(tables[label][run][k] or 0) - float(tables[base][run][k] or 0))
            for run in tables[base]
            for k in KEYS
        )
        print(f"| {label} | {seconds[label]:.1f} | {seconds[label] / seconds[base]:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
