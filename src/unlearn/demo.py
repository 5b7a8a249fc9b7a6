"""``unlearn demo``: the whole story offline, on built-in defaults.

synthetic fictitious authors → a target model fine-tuned on all of them → a retain model
fine-tuned without the forget task (for TOFU's Forget Quality) → ME+GD and IDK+AP unlearning →
evaluation of every model → a before/after table and a report.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from unlearn import outputs, pipeline
from unlearn.config import Config
from unlearn.data import read_records
from unlearn.errors import DataError
from unlearn.evaluation.judges import load_embedder, load_nli
from unlearn.evaluation.sets import forget_set
from unlearn.evaluation.six_metrics import evaluate, write_evaluation
from unlearn.io import atomic_write_jsonl
from unlearn.loading import load_for_training
from unlearn.pipeline import finetune
from unlearn.protocols.closer_look import Judges, load_eval_sets, retain_ratios_from
from unlearn.protocols.plan import EvalPlan
from unlearn.report import write_report
from unlearn.rundir import RunDir
from unlearn.synthetic import write_synthetic

log = logging.getLogger("unlearn")

# Per model: data size, fine-tuning and unlearning settings that make the demo's point in minutes.
SETTINGS = {
    "tiny": dict(
        authors=100,
        qa_per_author=4,
        split="forget05",
        task_id=1,
        finetune=dict(epochs=30, lr=3e-3, batch_size=16, grad_accum=1, warmup=20, weight_decay=0.0),
        unlearn=dict(epochs=10, lr=1e-3, batch_size=4, grad_accum=1),
        max_length=128,
        measured=dict(total=134, target=44),  # seconds, alone on 2 CPU cores
    ),
    # A pretrained model keeps its answers' templates: a few steps past the point where it has forgotten
    # it starts to lose the retained authors too. The runs evaluate every 3 steps and keep the weights
    # that forgot most while keeping 90% of the starting Model Utility (--keep best), as measured.
    # Sized for 10 minutes on 2 CPU cores (docs/performance.md): 3 epochs at 3e-4 memorise the authors
    # (Forget ROUGE 0.93) in 41 steps where 8 at 1e-4 took 110; the fused AdamW step (0.1 s against 0.66);
    # 10 unlearning steps each, the fewest the verdicts take as a test of the method.
    "smollm2-135m": dict(
        authors=20,
        qa_per_author=3,
        split="forget05",
        task_id=1,
        finetune=dict(epochs=3, lr=3e-4, batch_size=8, grad_accum=1, warmup=4, optim="adamw_fused"),
        unlearn=dict(
            epochs=15,
            lr=5e-5,
            batch_size=4,
            grad_accum=1,
            eval_every=3,
            eval_sets="forget,retain",
            keep="best",
            mu_floor=0.9,
            optim="adamw_fused",
        ),
        methods={"me_gd": {"epochs": 14}, "idk_ap": {"epochs": 14}},  # 10 steps each (the verdicts' minimum)
        max_length=128,
        # SmolLM2's chat format without the system message its template adds when none is given ("You are
        # a helpful AI assistant named SmolLM, ..."): 34 tokens a question and answer instead of 55. The
        # official closer-look prompts carry no system message either.
        prompt_format="<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n",
        measured=dict(total=552, target=141),  # seconds, alone on 2 CPU cores (docs/performance.md)
    ),
}
# name -> (method, overrides of the unlearning settings). ME+GD at the paper's forget weight 0.1
# needs 15 epochs to forget on the tiny model; IDK+AP converges faster: more epochs only make it
# over-refuse on retain questions.
METHODS = {"me_gd": ("ME+GD", {"epochs": 15}), "idk_ap": ("IDK+AP", {"epochs": 5})}
STAGES = ("target", "retain_model", "me_gd", "idk_ap")
SHOW = [
    "Forget ROUGE",
    "Forget Probability",
    "Forget Paraphrased ROUGE",
    "Retain ROUGE",
    "Retain Probability",
    "Model Utility",
    "Forget Efficacy",
    "Forget Quality",
]


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _step(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


def run_demo(
    out: str | Path,
    model: str = "tiny",
    overwrite: bool = False,
    nli: str | None = "none",
    seed: int = 1001,
    scale: float = 1.0,
) -> dict:
    """Run the demo into ``out``; returns ``{name: summary}``. ``scale`` < 1 uses fewer authors (tests)."""
    with RunDir(out).locked():
        return _run_demo(Path(out), model, overwrite, nli, seed, scale)


def _run_demo(out: Path, model: str, overwrite: bool, nli: str | None, seed: int, scale: float) -> dict:
    if model not in SETTINGS:
        raise DataError(f"unknown demo model '{model}' (choose: {', '.join(SETTINGS)})")
    s = SETTINGS[model]
    if model == "tiny":
        # The tiny model's matrices are too small to gain from intra-op threads, and a second
        # thread that has to wait for a busy core slows every step down many times over.
        torch.set_num_threads(1)
    out = Path(out)
    outputs.claim(out, [*STAGES, "data", "report"], overwrite=overwrite, what="a demo")
    t0 = time.time()
    measured = s["measured"]
    print(
        f"Estimated time: about {_minutes(measured['total'] * scale)} (measured alone on 2 CPU cores; more "
        "cores or a GPU take less, other work on the cores more).",
        flush=True,
    )
    authors = max(20, int(round(s["authors"] * scale / 10)) * 10)
    data = write_synthetic(out / "data", n_authors=authors, qa_per_author=s["qa_per_author"], seed=0)
    split, task = s["split"], s["task_id"]
    sets = load_eval_sets(data, split, task)
    base = Config(
        model=model,
        seed=seed,
        max_length=s["max_length"],
        prompt_format=s.get("prompt_format"),
        nli=nli,
        data=str(data),
        split=split,
        task_id=task,
    )

    _step(f"1/5 fine-tuning the target model ({model}) on {authors} fictitious authors + general knowledge")
    ft = dataclasses.replace(base, out=str(out / "target"), **s["finetune"])
    target = finetune(ft, [str(data / "full.json"), str(data / "general.json")])
    pace = (time.time() - t0) / measured["target"]  # this machine against the measured one
    print(f"Estimated time left: about {_minutes(pace * (measured['total'] - measured['target']) * scale)}.")

    _step("2/5 fine-tuning the retain model (everything but the forget task), for Forget Quality")
    forget_rows = {
        (r["question"], r["answer"]) for r in read_records(data / f"{split}.json") if int(r["task_id"]) == task
    }
    keep = [r for r in read_records(data / "full.json") if (r["question"], r["answer"]) not in forget_rows]
    retain_file = out / "data" / "retain_model_train.json"
    atomic_write_jsonl(retain_file, [{"question": r["question"], "answer": r["answer"]} for r in keep])
    rt = dataclasses.replace(ft, out=str(out / "retain_model"))
    retain_model = finetune(rt, [str(retain_file), str(data / "general.json")])

    _step("3/5 evaluating the target and the retain model")
    judges = Judges(load_embedder(None), load_nli(nli))
    summaries = {}
    plan = EvalPlan(
        sets,
        judges,
        retain_ratios_from(retain_model, forget_set(sets), batch_size=base.eval_batch_size),
        batch_size=base.eval_batch_size,
    )
    for name, path in (("target", target), ("retain_model", retain_model)):
        m, tok, fmt, _ = load_for_training(dataclasses.replace(base, model=str(path)), [])
        ev = evaluate(m, tok, fmt, sets, judges.embedder, judges.nli, plan.batch_size, plan.retain_ratios)
        write_evaluation(ev, out / name)
        summaries[name] = ev.summary
    plan.before = str(out / "target")  # the runs' verdicts compare with it (no second evaluation of it)

    for i, (name, (method, overrides)) in enumerate(METHODS.items()):
        _step(f"{4 + i}/5 unlearning with {method}, then evaluating")
        overrides = s.get("methods", {}).get(name, overrides)  # a model's own settings for the method
        cfg = dataclasses.replace(
            base, model=str(target), method=method, out=str(out / name), **{**s["unlearn"], **overrides}
        )
        summaries[name] = pipeline.run(cfg, plan=plan).summary

    write_report(
        [out / "me_gd", out / "idk_ap", out / "retain_model"],
        out / "report",
        baseline=out / "target",
        title="unlearn demo",
    )
    outputs.discard_aside(out)  # the earlier demo --overwrite replaced
    print_before_after(summaries)
    print(f"\nDone in {time.time() - t0:.0f} s. Report: {out / 'report' / 'report.md'}")
    return summaries


def check_demo(summaries: dict) -> list[str]:
    """The demo's promises: it really forgets and really keeps. Returns the broken ones."""
    t, u = summaries["target"], summaries["me_gd"]
    problems = []
    if not u["Forget ROUGE"] <= 0.5 * t["Forget ROUGE"]:
        problems.append(f"Forget ROUGE {u['Forget ROUGE']:.3f} is above half the target's {t['Forget ROUGE']:.3f}")
    if not u["Retain ROUGE"] >= 0.8 * t["Retain ROUGE"]:
        problems.append(f"Retain ROUGE {u['Retain ROUGE']:.3f} is below 80% of the target's {t['Retain ROUGE']:.3f}")
    return problems


def print_before_after(summaries: dict) -> None:
    names = [n for n in ("target", "retain_model", "me_gd", "idk_ap") if n in summaries]
    labels = {
        "target": "target (before)",
        "retain_model": "retain model",
        "me_gd": "ME+GD (after)",
        "idk_ap": "IDK+AP (after)",
    }
    table = Table(title="Before and after unlearning")
    table.add_column("metric")
    for n in names:
        table.add_column(labels[n], justify="right")
    for key in SHOW:
        cells = []
        for n in names:
            v = summaries[n].get(key)
            cells.append("n/a" if v is None else f"{v:.3f}")
        table.add_row(key, *cells)
    Console(width=120).print(table)
    problems = check_demo(summaries)
    if problems:
        print("WARNING: the demo did not make its point: " + "; ".join(problems))
    else:
        t = summaries["target"]
        for name, label in (("me_gd", "ME+GD"), ("idk_ap", "IDK+AP")):
            if name in summaries:
                u = summaries[name]
                print(
                    f"{label}: Forget ROUGE {t['Forget ROUGE']:.2f} -> {u['Forget ROUGE']:.2f}, "
                    f"Retain ROUGE {t['Retain ROUGE']:.2f} -> {u['Retain ROUGE']:.2f}."
                )
