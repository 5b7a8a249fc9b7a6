"""Every benchmark of the performance targets, side by side on this machine; prints every ratio.

    python perf/run.py            # the full measurement (20 min on 2 idle cores, an hour when busy)
    python perf/run.py --quick    # small models, one run each: a smoke test in a few minutes
    python perf/run.py --only train,eval --work /tmp/bench   # some of them; models kept in --work

1. training overhead: ``unlearn run --method GA+GD`` vs a bare PyTorch loop (train_overhead.py)
2. reference statistics: NPO+GD vs GA+GD, DPO+GD vs IDK+AP, memory and time (memory.py)
3. ME loss memory vs a cross-entropy (memory.py)
4. evaluation vs the official procedure (official_eval.py): ``eval`` on a tiny fine-tuned model,
   ``eval-smollm2`` on SmolLM2-135M-Instruct, 20 items a set, one run each (the official side
   alone takes about 17 minutes here; in --quick mode 4 items a set)
GPU training throughput (gpu_train.py) needs a GPU and is not part of this run.

Each comparison alternates its two sides and keeps the best of N: the machine may be shared, and
ratios of the fastest runs are the least disturbed. Nothing here is part of the test suite.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import memory  # noqa: E402
import official_eval  # noqa: E402
import train_overhead  # noqa: E402
from common import print_rows  # noqa: E402

BENCHMARKS = {
    "train": lambda q, r, w: train_overhead.run(q, r, w / "train"),
    "ref": lambda q, r, w: memory.reference_statistics(q, r or (1 if q else 2), w / "train"),
    "me": lambda q, r, w: memory.me_memory(q),
    "eval": lambda q, r, w: official_eval.run(q, r, w / "eval"),
    "eval-smollm2": lambda q, r, w: official_eval.run(
        q, r or 1, w / "eval", model_name="smollm2-135m", items=4 if q else 20, modes=("judges",)
    ),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small models, one run each (smoke test)")
    ap.add_argument(
        "--repeats", type=int, default=None, help="alternating runs per side (default: train 3, ref 2, eval 2)"
    )
    ap.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    ap.add_argument("--work", type=Path, default=None, help="folder for models and data (kept and reused)")
    args = ap.parse_args()
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = [b for b in chosen if b not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    work = Path(args.work or tempfile.mkdtemp(prefix="unlearn-bench-"))
    import torch

    print(
        f"unlearn benchmarks{' (quick)' if args.quick else ''}: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}; work folder {work}",
        flush=True,
    )
    rows, start = [], time.time()
    for name in chosen:
        rows += BENCHMARKS[name](args.quick, args.repeats, work)
    print(f"\nSummary ({time.time() - start:.0f} s):")
    print_rows(rows)
    missed = [r["name"] for r in rows if r["ok"] is False]
    if missed:
        print(
            f"{len(missed)} target(s) not met"
            + (" (quick mode: small models, not the real measurement)" if args.quick else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
