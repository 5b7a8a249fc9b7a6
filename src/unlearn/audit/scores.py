"""The audit's results put together: ``audit.json`` from the attacks' results, the forget-set scores
the plot and the table show, and the terminal table."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.table import Table

from unlearn.audit.inputs import AuditInputs
from unlearn.evaluation import mia

log = logging.getLogger("unlearn")


ROLES = ("unlearned", "target", "retain")


def _recovery(before: float, after: float, target: float) -> float | None:
    gap = target - before
    return None if abs(gap) < 1e-12 else (after - before) / gap


def assemble(cfg, inputs: AuditInputs, results: dict) -> dict:
    """``audit.json``: one section per attack, each with the value of every model audited."""
    models = dict(inputs.models)
    if inputs.saved_retain is not None:
        models["retain"] = inputs.saved_retain.get("models", {}).get("unlearned", cfg.retain_model)
    audit = {
        "models": models,
        "attacks": inputs.attacks,
        "data": {
            "source": cfg.data or cfg.forget,
            "split": cfg.split,
            "task_id": cfg.task_id,
            "forget": len(inputs.forget.rows),
            "holdout": len(inputs.holdout or []),
            "key": inputs.data_key,
        },
    }
    if "mia" in results:
        sec = {"k": cfg.mia_k, "auc": {role: r["auc"] for role, r in results["mia"].items()}}
        retain = sec["auc"].get("retain")
        if retain:
            sec["privleak"] = {
                role: {a: mia.privleak(v, retain[a]) for a, v in aucs.items() if a in retain}
                for role, aucs in sec["auc"].items()
                if role != "retain"
            }
        audit["mia"] = sec
    if "memorization" in results:
        audit["memorization"] = dict(results["memorization"])
    if "relearn" in results:
        sec = dict(results["relearn"])
        u, t = sec.get("unlearned"), sec.get("target")
        if u and t:
            sec["recovery"] = {m: _recovery(u["before"][m], u["after"][m], t["measured"][m]) for m in u["before"]}
        audit["relearn"] = sec
    if "quantization" in results:
        audit["quantization"] = {
            "backend": inputs.backend,
            "group_size": cfg.quant_group_size,
            **results["quantization"],
        }
    if "prompts" in results:
        audit["prompts"] = dict(results["prompts"])
    return audit


def forget_scores(audit: dict) -> dict[str, dict[str, float]]:
    """``{check: {role: forget-set ROUGE}}``: what the plot and the table show first."""
    rows: dict[str, dict[str, float]] = {}
    for role, variants in audit.get("prompts", {}).items():
        for name, v in variants.items():
            if name != "unavailable":
                rows.setdefault("plain" if name == "plain" else name, {})[role] = v["ROUGE"]
    for role, levels in ((r, v) for r, v in audit.get("quantization", {}).items() if isinstance(v, dict)):
        for label, v in levels.items():
            if label != "full precision" and "forget" in v:
                rows.setdefault(f"quantized {label}", {})[role] = v["forget"]["ROUGE"]
    relearn = audit.get("relearn", {})
    if "unlearned" in relearn:
        rows.setdefault("relearned (measured half)", {})["unlearned"] = relearn["unlearned"]["after"]["ROUGE"]
        for role in ("target", "retain"):
            if role in relearn:
                rows["relearned (measured half)"][role] = relearn[role]["measured"]["ROUGE"]
    return rows


def print_audit(audit: dict) -> None:
    roles = [r for r in ROLES if r in audit["models"]]
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    table = Table(title="Audit: does the forgotten knowledge come back? (forget set; higher = more remembered)")
    table.add_column("check", no_wrap=True)
    for role in roles:
        table.add_column(role, justify="right")
    for check, values in forget_scores(audit).items():
        table.add_row(f"ROUGE {check}", *(fmt(values.get(r)) for r in roles))
    for attack in (audit.get("mia") or {}).get("auc", {}).get("unlearned", {}):
        table.add_row(f"MIA AUC {attack}", *(fmt(audit["mia"]["auc"].get(r, {}).get(attack)) for r in roles))
    leak = (audit.get("mia") or {}).get("privleak")
    if leak:
        table.add_row("PrivLeak Min-K% (0: as retain)", *(fmt(leak.get(r, {}).get("Min-K%")) for r in roles))
    for key in ("exact_memorization", "extraction_strength"):
        if "memorization" in audit:
            table.add_row(key.replace("_", " "), *(fmt(audit["memorization"].get(r, {}).get(key)) for r in roles))
    Console(width=120).print(table)
    rec = audit.get("relearn", {}).get("recovery")
    if rec:
        print(
            "relearning recovery (0: nothing back, 1: as before unlearning): "
            + ", ".join(f"{m} {fmt(v)}" for m, v in rec.items())
        )
