"""Target 1: ``unlearn run --method GA+GD`` against a bare PyTorch loop, as whole processes, on CPU.

Both processes start from the same saved ~110M-parameter Llama (hidden 768, 12 layers, 12 heads,
MLP 2048, vocabulary 32k, tied embeddings) and the same synthetic TOFU-layout task (20 forget
items, batch 4, AdamW, one epoch = 5 optimiser steps here), pad each batch to its longest
sequence and save the model at the end. They alternate A B A B A B; the best wall time of each
is kept. The per-step losses of the two must agree: it is the same optimisation.

    python perf/train_overhead.py [--quick] [--repeats 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    PYTHON,
    ROOT,
    UNLEARN,
    alternate,
    best,
    measure,
    n_params,
    print_rows,
    ratio_line,
    synth_texts,
    write_data,
    write_llama,
)

TARGET = 1.15


def model_dirs(work: Path, quick: bool) -> tuple[Path, Path]:
    data = write_data(work / "data")
    size = dict(hidden=256, layers=4, heads=4, intermediate=688) if quick else {}
    model = write_llama(work / ("llama_small" if quick else "llama_110m"), synth_texts(data), **size)
    return model, data


def commands(model: Path, data: Path, work: Path, epochs: int, method: str = "GA+GD") -> dict[str, list[str]]:
    from unlearn.refusals import REFUSALS

    bare = [
        PYTHON,
        str(ROOT / "perf" / "bare_loop.py"),
        str(model),
        str(data),
        str(work / "out_bare"),
        "--split",
        "forget05",
        "--retain-file",
        "retain50",
        "--task",
        "1",
        "--batch-size",
        "4",
        "--epochs",
        str(epochs),
        "--n-refusals",
        str(len(REFUSALS)),
    ]
    ours = UNLEARN + [
        "run",
        "--model",
        str(model),
        "--data",
        str(data),
        "--split",
        "forget05",
        "--task-id",
        "1",
        "--method",
        method,
        "--batch-size",
        "4",
        "--grad-accum",
        "1",
        "--epochs",
        str(epochs),
        "--lr",
        "1e-5",
        "--dtype",
        "float32",
        "--no-eval",
        "--out",
        str(work / "out_unlearn"),
        "--overwrite",
    ]
    return {"bare PyTorch loop": bare, f"unlearn run --method {method}": ours}


def run(quick: bool = False, repeats: int | None = None, work: Path | None = None) -> list[dict]:
    repeats = repeats or (1 if quick else 3)
    work = Path(work or tempfile.mkdtemp(prefix="unlearn-bench-train-"))
    model, data = model_dirs(work, quick)
    print(
        f"[train overhead] model {n_params(model) / 1e6:.0f}M parameters in {model}; {repeats} alternating runs each",
        flush=True,
    )
    cmds = commands(model, data, work, epochs=1)
    results = alternate({name: (lambda c=c: measure(c, cwd=ROOT)) for name, c in cmds.items()}, repeats)
    (bare_name, bare), (ours_name, ours) = results.items()
    b, o = best(bare), best(ours)
    for name, runs in results.items():
        print(
            f"  {name:<34} wall {' '.join(f'{m.wall:6.1f}' for m in runs)} s   CPU "
            f"{' '.join(f'{m.cpu:6.1f}' for m in runs)} s   peak RSS {max(m.max_rss_mib for m in runs):.0f} MiB",
            flush=True,
        )
    bare_losses = json.loads(b.output.strip().splitlines()[-1])["losses"]
    log = [json.loads(line) for line in (work / "out_unlearn" / "train_log.jsonl").read_text().splitlines()]
    diff = max(abs(x - row["loss"]) for x, row in zip(bare_losses, log, strict=False))
    print(f"  steps {len(log)} (bare {len(bare_losses)}); largest per-step loss difference {diff:.2e}", flush=True)
    if len(log) != len(bare_losses) or diff > 1e-3:
        print("  WARNING: the two processes did not run the same optimisation", flush=True)
    rows = [
        ratio_line("train overhead: unlearn GA+GD / bare loop (wall, best)", o.wall / b.wall, TARGET),
        ratio_line("train overhead: unlearn GA+GD / bare loop (CPU time, best)", o.cpu / b.cpu),
    ]
    print_rows(rows)
    if not quick:
        shutil.rmtree(work / "out_bare", ignore_errors=True)
        shutil.rmtree(work / "out_unlearn", ignore_errors=True)
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small model and one run each (smoke test)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--work", type=Path, default=None, help="folder for the models and outputs (kept)")
    a = ap.parse_args()
    run(a.quick, a.repeats, a.work)
