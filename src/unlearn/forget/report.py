"""What ``unlearn forget`` tells its user: the verdict in plain words, before and after, examples, the
audit with what each attack means, the settings and where the model is (``report.md``,
``report.html``, ``forget.json``), and the model card shipped with the model (``model/README.md``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from unlearn.audit.scores import forget_scores
from unlearn.forget.plan import NOT_MET
from unlearn.io import atomic_write_json, atomic_write_text, json_safe
from unlearn.report.render import render_html, render_markdown
from unlearn.report.tables import Block, Table, clip

SETS = ("Forget", "Retain", "Holdout")
METRICS = ("ROUGE", "Probability")
MEANING = {
    "plain": "the questions asked as they are",
    "paraphrase": "the questions reworded",
    "prefix": "the start of the answer given, the rest asked for",
    "in_context": "a few solved examples of other records put before the question",
    "quantized": "the weights rounded to fewer bits",
    "jailbreak": "an instruction to ignore earlier unlearning",
    "relearned (measured half)": "the model fine-tuned on half of the forget records, measured on the other half",
    "MIA": "membership inference: can an attacker tell forget records from holdout records (0.5: cannot)",
}
COMES_BACK = 0.5  # a check that recovers half of the gap between the unlearned and the original model


def record_hashes(rows: list[dict]) -> dict:
    """What the model card says of a set: the count and SHA-256 of each record (never the records)."""
    digests = [
        hashlib.sha256(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}, sort_keys=True,
                                  ensure_ascii=False).encode("utf-8")).hexdigest()
        for r in rows
    ]  # fmt: skip
    whole = hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()
    return {"count": len(rows), "sha256 of the set": whole, "sha256 of each record": digests}


def audit_findings(audit: dict | None) -> tuple[list[list[str]], list[str]]:
    """``(table rows, what comes back)``: each check's forget ROUGE for the unlearned and the original
    model, the share of the gap it recovers, and the checks that recover half of it or more."""
    if not audit:
        return [], []
    scores = forget_scores(audit)
    plain = scores.get("plain", {})
    u0, t0 = plain.get("unlearned"), plain.get("target")
    rows, back = [], []
    for check, values in scores.items():
        u, t = values.get("unlearned"), values.get("target", t0)
        share = None
        if check != "plain" and u is not None and u0 is not None and t0 is not None and t0 > u0 + 1e-9:
            share = (u - u0) / (t0 - u0)
            if share >= COMES_BACK:
                back.append(check)
        meaning = next((m for k, m in MEANING.items() if check.startswith(k)), "")
        rows.append([check, meaning, _f(u), _f(t), "–" if share is None else f"{100 * share:.0f}%"])
    relearn = (audit.get("relearn") or {}).get("recovery", {}).get("ROUGE")
    if relearn is not None and relearn >= COMES_BACK and "relearned (measured half)" not in back:
        back.append("relearned (measured half)")
    auc = ((audit.get("mia") or {}).get("auc") or {}).get("unlearned", {})
    for attack, value in auc.items():
        rows.append(
            [f"MIA AUC {attack}", MEANING["MIA"], _f(value), _f(audit["mia"]["auc"].get("target", {}).get(attack)), ""]
        )
    return rows, back


def verdict(plan, goal, kept: dict | None, steps: int, back: list[str]) -> dict:
    """The verdict in plain words, and the exit status it means."""
    met_step = kept.get("step") if kept and kept.get("goal met") else None
    shown = met_step if met_step is not None else kept["step"] if kept else max(goal.checks, default=0)
    last = goal.checks.get(shown, {})
    f = last.get("forget", {}).get("ROUGE", {})
    r = last.get("retain", {}).get("ROUGE", {})
    against = (
        f"holdout {_f(f.get('holdout'))}, its 95% upper bound {_f(f.get('holdout upper 95%'))}"
        if plan.holdout
        else f"half of before: {_f(f.get('half of before'))}"
    )
    kept_text = (
        f"the {plan.n_retain} retain records keep {100 * r['value'] / r['before']:.0f}% of their ROUGE"
        if r.get("before")
        else "no retain set was given, so nothing checked that the rest is intact"
    )
    if met_step == 0:
        code, status = "nothing to forget", 0
        text = (
            f"Nothing to forget: before any unlearning the {plan.n_forget} records were already recalled no better "
            f"than records the model never saw (forget ROUGE {_f(f.get('value'))}; {against}). The model was not "
            "changed."
        )
    elif met_step is not None:
        code, status = "forgotten and kept", 0
        text = (
            f"Forgotten and kept: after {met_step} steps the {plan.n_forget} forget records are "
            + (
                "recalled no better than records the model never saw"
                if plan.holdout
                else "recalled half as well as before or less"
            )
            + f" (forget ROUGE {_f(f.get('value'))}; {against}), and {kept_text}."
        )
    else:
        failed = "forgotten" if not last.get("forgotten") else "kept"
        code, status = "not met", NOT_MET
        text = (
            f"NOT met within the budget of {steps} steps: the forget records were "
            + (
                "not forgotten enough"
                if failed == "forgotten"
                else "forgotten only by losing too much of the retain records"
            )
            + f" (forget ROUGE {_f(f.get('value'))}; {against}; {kept_text}). "
            + (
                f"The best evaluated weights (step {kept['step']}) were kept. "
                if kept
                else "The last weights were kept. "
            )
            + "Raise --max-steps or --lr, or loosen --keep-within."
        )
    if back:
        text += f" Warning: the audit brings the forgotten answers back under: {', '.join(back)}."
    elif met_step:
        text += " The audit's attacks did not bring them back (none recovered half of what was forgotten)."
    return {"code": code, "text": text, "exit status": status}


def blocks(result: dict, examples: dict[str, list[dict]], audit_rows: list[list[str]]) -> list[Block]:
    out = [
        Block("heading", f"unlearn forget: {result['inputs']['forget']}", level=1),
        Block("text", result["verdict"]["text"]),
        Block("text", f"The model is saved in {result['model']['saved']} (from {result['model']['input']})."),
        Block("heading", "Before and after"),
    ]
    rows = []
    for s in SETS:
        for m in METRICS:
            b, a = result["before"].get(s, {}).get(m), result["after"].get(s, {}).get(m)
            if b is not None or a is not None:
                rows.append([f"{s} {m}", _f(b), _f(a), result["after"].get(s, {}).get(f"{m} 95%", "")])
    out.append(Block("table", table=Table(["set and metric", "before", "after", "after: 95% interval"], rows)))
    for name, items in examples.items():
        if items:
            out.append(Block("heading", f"{name} examples", level=3))
            out.append(
                Block("table", table=Table(["question", "answer", "before", "after"], [
                    [clip(i["question"]), clip(i["ground_truth"]), clip(i.get("before", "")), clip(i["generation"])]
                    for i in items
                ]))
            )  # fmt: skip
    out.append(Block("heading", "Audit: does it come back?"))
    if audit_rows:
        out.append(
            Block("text", "Forget-set ROUGE under each attack (higher: more remembered); 'recovered' is the share "
                  "of what unlearning removed that the attack brings back.")
        )  # fmt: skip
        out.append(
            Block("table", table=Table(["check", "what it does", "unlearned", "original", "recovered"], audit_rows))
        )
    else:
        out.append(Block("text", "No audit was run."))
    out.append(Block("heading", "Settings"))
    out.append(Block("list", items=[f"{k}: {v}" for k, v in result["plan"].items() if k != "chosen"] + result["notes"]))
    return out


def write_reports(out: Path, result: dict, examples: dict, audit_rows: list) -> None:
    atomic_write_json(out / "forget.json", json_safe(result))
    b = blocks(result, examples, audit_rows)
    atomic_write_text(out / "report.md", render_markdown(b))
    atomic_write_text(out / "report.html", render_html(b, "unlearn forget"))


def model_card(result: dict) -> str:
    r = result["records"]
    lines = [
        "# Unlearned model",
        "",
        f"Made by `unlearn forget` from `{result['model']['input']}` with {result['plan']['method']} "
        f"(lr {result['plan']['lr']:g}, {result['steps']} steps).",
        "",
        f"**Verdict:** {result['verdict']['text']}",
        "",
        "## What was removed",
        "",
        f"{r['forget']['count']} records (SHA-256 of the set: `{r['forget']['sha256 of the set']}`); the records "
        "themselves are not part of this card. Each record's SHA-256 (of its JSON with sorted keys) is in "
        "`forget.json` beside the run.",
        "",
        f"Kept: {r['retain']['count'] if r.get('retain') else 0} retain records; compared with "
        f"{r['holdout']['count'] if r.get('holdout') else 0} holdout records never trained on.",
    ]
    return "\n".join(lines) + "\n"


def _f(v) -> str:
    return "–" if v is None else f"{v:.3f}"
