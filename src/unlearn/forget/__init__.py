"""``unlearn forget``: the practitioner's command — unlearn until the records are forgotten, prove it,
ship the model.

1. Everything is checked before any model loads (the records, the settings, the output folder);
   the budget is chosen from the forget set's size and the model's (:mod:`.plan`) and printed.
2. The run is :func:`unlearn.pipeline.run` with evaluation while unlearning: the Forget, Retain and
   Holdout records are evaluated before the first step and at each stopping point, and training stops
   at the first evaluation that meets the goal (:mod:`.goal`); a goal never met keeps the best
   evaluated weights (``--keep best``) and the command exits with status 3.
3. The saved model is audited (relearning, quantization, paraphrase/prefix/in-context/jailbreak
   prompts, membership inference against the holdout) and everything is written to one report with
   the verdict first (:mod:`.report`), and a model card beside the weights.

Resumable with ``--resume`` (a checkpoint is written at each stopping point).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

from unlearn import distributed, memory, outputs, pipeline
from unlearn.config import Config
from unlearn.data import read_records
from unlearn.errors import ConfigError, DataError, OutputError
from unlearn.evaluation.intervals import read_intervals
from unlearn.evaluation.sets import EvalSet
from unlearn.forget import report
from unlearn.forget.goal import Goal
from unlearn.forget.plan import KEEP_WITHIN, STYLES, choose
from unlearn.io import atomic_write_text, read_jsonl_log
from unlearn.protocols.closer_look import file_sets
from unlearn.protocols.plan import plan_evaluation
from unlearn.rundir import AUDIT, BEFORE, EVAL_LOG, KEPT, RunDir, eval_file

log = logging.getLogger("unlearn")
ATTACKS = "relearn,quantization,prompts"  # (+ mia with a holdout)
EXAMPLES = 3
REPORT_FILES = ["forget.json", "report.md", "report.html"]


def forget(cfg: Config, given: dict, style: str = "forget", keep_within: float = KEEP_WITHIN,
           max_steps: int | None = None) -> int:  # fmt: skip
    """Run ``unlearn forget``; returns the exit status (0 goal met, 3 not met)."""
    started = time.time()
    if style not in STYLES:
        raise ConfigError(f"--style: choose forget or refuse, got {style!r}")
    if not 0 <= keep_within < 1:
        raise ConfigError(f"--keep-within: a share between 0 and 1, got {keep_within}")
    if max_steps is not None and max_steps < 1:
        raise ConfigError(f"--max-steps: at least 1, got {max_steps}")
    if not cfg.forget:
        raise DataError("give the records to forget: --forget FILE (JSON lines with question and answer)")
    if not cfg.out:
        raise OutputError("no output folder: give --out DIR")
    if cfg.model == "tiny":
        raise ConfigError("--model: give the model to unlearn from (a folder, a hub id or smollm2-135m)")
    forget_rows = read_records(cfg.forget)
    retain_rows = read_records(cfg.retain) if cfg.retain else []
    holdout_rows = read_records(cfg.holdout) if cfg.holdout else []
    if len(forget_rows) < 2 and "relearn" in ATTACKS:
        raise DataError(f"{cfg.forget}: give at least 2 records (the relearning check learns half of them)")
    params = memory.model_shape(cfg.model, cfg.trust_remote_code).params
    device = "cuda" if distributed.state().device.type == "cuda" else "cpu"
    plan, settings = choose(
        style, len(forget_rows), len(retain_rows), params, given, holdout=bool(holdout_rows),
        keep_within=keep_within, max_steps=max_steps, device=device, processes=distributed.state().num_processes,
    )  # fmt: skip
    attacks = ATTACKS + (",mia" if holdout_rows else "")
    cfg = dataclasses.replace(cfg, **settings, eval=True, audit=True, attacks=given.get("attacks", attacks))
    out = RunDir(cfg.out)
    if distributed.is_main_process():
        print("unlearn forget — the plan:")
        for line in plan.lines():
            print("  " + line)
        if not retain_rows:
            print("  note: no --retain records: nothing keeps the rest of what the model knows intact")
        if not holdout_rows:
            print("  note: no --holdout records: the goal falls back to half of the values before (weaker)")
    sets = file_sets(cfg.forget, cfg.retain)
    if holdout_rows:
        sets.append(EvalSet("Holdout", holdout_rows, "forget", layout="files", truth=False))
    eval_plan = plan_evaluation(cfg, sets=sets)
    goal = Goal(keep_within, bool(holdout_rows))
    if cfg.resume:
        goal.start = next((r for r in read_jsonl_log(out / EVAL_LOG) if r["step"] == 0), None)
    eval_plan.goal = goal
    if distributed.is_main_process():  # the report's files: a user's file of those names is refused
        found = outputs.present(out.path, REPORT_FILES)
        outputs.refuse_foreign(out.path, found)
    result = pipeline.run(cfg, plan=eval_plan)
    if distributed.is_main_process():
        outputs.record(out.path, REPORT_FILES)
    if not distributed.is_main_process():
        return 0
    return _conclude(cfg, plan, goal, result, out, forget_rows, retain_rows, holdout_rows, started)


def _conclude(cfg, plan, goal, result, out: RunDir, forget_rows, retain_rows, holdout_rows, started) -> int:
    rows = read_jsonl_log(out / EVAL_LOG)
    if not goal.checks:  # (a resumed run whose evaluations were all done before): judge the logged rows
        for row in rows:
            goal.checks.setdefault(row["step"], {"step": row["step"], "met": bool(row.get("goal met"))})
    kept = _read_json(out / KEPT)
    audit = _read_json(out / AUDIT / "audit.json")
    audit_rows, back = report.audit_findings(audit)
    steps = result.steps or (rows[-1]["step"] if rows else 0)
    found = report.verdict(plan, goal, kept, steps, back)
    summary = out.read_summary() or {}
    start = rows[0] if rows else {}
    before = {s: {m: start.get(f"{s} {m}") for m in report.METRICS} for s in report.SETS}
    after = {s: {m: summary.get(f"{s} {m}") for m in report.METRICS} for s in report.SETS}
    intervals = read_intervals(out.path)
    for s in report.SETS:
        for m in report.METRICS:
            if (iv := intervals.get(f"{s} {m}")) is not None:
                after[s][f"{m} 95%"] = f"[{iv.lo:.3f}, {iv.hi:.3f}]"
    records = {"forget": report.record_hashes(forget_rows)}
    if retain_rows:
        records["retain"] = report.record_hashes(retain_rows)
    if holdout_rows:
        records["holdout"] = report.record_hashes(holdout_rows)
    notes = []
    if not retain_rows:
        notes.append("no retain set was given: nothing kept the rest of the model's knowledge intact")
    if not holdout_rows:
        notes.append("no holdout set was given: the goal was half of the values before, which shows the model "
                     "changed on the records, not that they now look unseen")  # fmt: skip
    if summary.get("unavailable"):
        notes.append(f"not computed: {summary['unavailable']}")
    payload = {
        "verdict": found,
        "model": {"input": cfg.model, "saved": str(out.model), "adapter": str(out.adapter) if cfg.lora else None},
        "inputs": {"forget": cfg.forget, "retain": cfg.retain, "holdout": cfg.holdout},
        "records": records,
        "plan": plan.as_dict(),
        "steps": steps,
        "kept": kept,
        "goal": {str(k): v for k, v in sorted(goal.checks.items())},
        "before": before,
        "after": after,
        "audit": {"findings": audit_rows, "comes back under": back, "file": str(out / AUDIT / "audit.json")},
        "evaluations": rows,
        "notes": notes,
        "seconds": round(time.time() - started, 1),
    }
    examples = {name: _examples(out, name) for name in ("Forget", "Retain")}
    report.write_reports(out.path, payload, examples, audit_rows)
    if out.model.is_dir():
        atomic_write_text(out.model / "README.md", report.model_card(payload))
    print(f"\nverdict: {found['text']}")
    print(f"report: {out / 'report.md'} (and report.html, forget.json); model: {out.model}")
    return found["exit status"]


def _examples(out: RunDir, name: str) -> list[dict]:
    after = read_jsonl_log(out / eval_file(name))[:EXAMPLES]
    before = {r["question"]: r.get("generation", "") for r in read_jsonl_log(out / BEFORE / eval_file(name))}
    return [{**r, "before": before.get(r["question"], "")} for r in after]


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
