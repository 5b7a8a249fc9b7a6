"""Targets 2 and 3: cached reference statistics, and the ME term's memory.

2. ``unlearn run`` with NPO+GD against GA+GD as whole processes on the ~110M Llama of
   ``train_overhead.py`` (same data, batch size, steps). NPO's reference NLLs are computed once,
   before training, by the model itself; no second model is kept. Peak RSS of NPO+GD must stay
   within 1.08x of GA+GD's, and its wall time within 1.05x of GA+GD's plus that one-off pass
   (timed inside the process by ``timed_unlearn.py``). DPO+GD runs three sequences a step, so it
   is held to the same targets against IDK+AP, which also runs three and has no reference at
   all. GA+KL (KL keeps a frozen reference model in memory) is shown for scale.
3. The ME loss against a cross-entropy over the same (8, 256, 32000) float32 logits, forward +
   backward, each in its own process (``me_memory_probe.py``): the extra peak memory over the
   logits themselves. The official formulation (a V-wide uniform tensor, ``log(p + 1e-12)``) is
   shown for scale.

    python perf/memory.py [--quick] [--repeats 2] [--work DIR] [--only ref|me]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PYTHON, ROOT, alternate, best, measure, print_rows, ratio_line  # noqa: E402
from train_overhead import commands, model_dirs  # noqa: E402

MEMORY_TARGET, TIME_TARGET = 1.08, 1.05


def _timed(method: str, model: Path, data: Path, work: Path, epochs: int):
    cmd = commands(model, data, work / method.replace("+", "_"), epochs, method)[f"unlearn run --method {method}"]
    stats = work / f"{method.replace('+', '_')}_ref.json"
    full = [PYTHON, str(ROOT / "perf" / "timed_unlearn.py"), str(stats)] + cmd[3:]  # cmd[:3] = python -m unlearn

    def go():
        m = measure(full, cwd=ROOT)
        m.ref_pass = json.loads(stats.read_text())["reference_pass_s"]
        return m

    return go


def reference_statistics(quick: bool, repeats: int, work: Path) -> list[dict]:
    model, data = model_dirs(work, quick)
    epochs = 1
    print(
        f"[reference statistics] {model.name}; GA+GD / NPO+GD and IDK+AP / DPO+GD alternate {repeats}x, GA+KL once",
        flush=True,
    )
    runs = alternate({m: _timed(m, model, data, work, epochs) for m in ("GA+GD", "NPO+GD")}, repeats)
    # DPO+GD runs three sequences a step (forget, refusal, retain); IDK+AP also runs three
    # (refusal, retain, retain + refusal) and has no reference at all: the like-for-like baseline.
    runs.update(alternate({m: _timed(m, model, data, work, epochs) for m in ("IDK+AP", "DPO+GD")}, repeats))
    runs.update(alternate({"GA+KL": _timed("GA+KL", model, data, work, epochs)}, 1))
    for name, ms in runs.items():
        print(
            f"  {name:<8} wall {' '.join(f'{m.wall:6.1f}' for m in ms)} s   reference pass "
            f"{' '.join(f'{m.ref_pass:5.1f}' for m in ms)} s   peak RSS "
            f"{' '.join(f'{m.max_rss_mib:6.0f}' for m in ms)} MiB",
            flush=True,
        )
    ga, npo = best(runs["GA+GD"]), min(runs["NPO+GD"], key=lambda m: m.wall)
    npo_rss = max(m.max_rss_mib for m in runs["NPO+GD"])
    idk, dpo = best(runs["IDK+AP"]), min(runs["DPO+GD"], key=lambda m: m.wall)
    dpo_rss, kl = max(m.max_rss_mib for m in runs["DPO+GD"]), runs["GA+KL"][0]
    rows = [
        ratio_line("NPO+GD / GA+GD peak RSS", npo_rss / ga.max_rss_mib, MEMORY_TARGET),
        ratio_line("NPO+GD / (GA+GD + one-off reference pass) wall", npo.wall / (ga.wall + npo.ref_pass), TIME_TARGET),
        ratio_line("NPO+GD one-off reference pass / GA+GD wall", npo.ref_pass / ga.wall),
        ratio_line("DPO+GD / IDK+AP peak RSS (both 3 sequences a step)", dpo_rss / idk.max_rss_mib, MEMORY_TARGET),
        ratio_line(
            "DPO+GD / (IDK+AP + one-off reference pass) wall", dpo.wall / (idk.wall + dpo.ref_pass), TIME_TARGET
        ),
        ratio_line("DPO+GD / GA+GD peak RSS (3 sequences a step against 2)", dpo_rss / ga.max_rss_mib),
        ratio_line("GA+KL / GA+GD peak RSS (KL keeps a reference model)", kl.max_rss_mib / ga.max_rss_mib),
    ]
    print_rows(rows)
    for method in ("GA+GD", "NPO+GD", "IDK+AP", "DPO+GD", "GA+KL"):
        shutil.rmtree(work / method.replace("+", "_"), ignore_errors=True)
    return rows


def me_memory(quick: bool) -> list[dict]:
    shape = ("8", "256", "32000")  # a few seconds: the same in quick mode
    print(
        f"[ME memory] forward + backward on ({', '.join(shape)}) float32 logits, extra peak over the logits", flush=True
    )
    extra = {}
    for kind in ("ce", "me", "me_official"):
        m = measure([PYTHON, str(ROOT / "perf" / "me_memory_probe.py"), kind, *shape], cwd=ROOT)
        r = json.loads(m.output.strip().splitlines()[-1])
        extra[kind] = r["extra_peak_mib"]
        print(
            f"  {kind:<12} extra peak {r['extra_peak_mib']:7.0f} MiB  (= {r['extra_peak_mib'] / r['logits_mib']:.2f}"
            f" x the logits; loss {r['loss']:.6f})",
            flush=True,
        )
    rows = [
        ratio_line("ME / cross-entropy extra peak memory", extra["me"] / extra["ce"], 1.0),
        ratio_line(
            "official ME (uniform tensor) / cross-entropy extra peak memory", extra["me_official"] / extra["ce"]
        ),
    ]
    print_rows(rows)
    return rows


def run(quick: bool = False, repeats: int | None = None, work: Path | None = None) -> list[dict]:
    repeats = repeats or (1 if quick else 2)
    work = Path(work or tempfile.mkdtemp(prefix="unlearn-bench-mem-"))
    return reference_statistics(quick, repeats, work) + me_memory(quick)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small model and one run each (smoke test)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--work", type=Path, default=None, help="folder for the models and outputs (kept)")
    ap.add_argument("--only", choices=("ref", "me"), default=None)
    a = ap.parse_args()
    if a.only == "me":
        me_memory(a.quick)
    elif a.only == "ref":
        reference_statistics(a.quick, a.repeats or (1 if a.quick else 2), Path(a.work or tempfile.mkdtemp()))
    else:
        run(a.quick, a.repeats, a.work)
