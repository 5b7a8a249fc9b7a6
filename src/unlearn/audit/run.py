"""``unlearn audit``: the attacks run on a model (and the target and retain models beside it).

Everything is checked before any model loads (attack names, data, holdout, bit widths, the
output folder). Then each model is loaded once and every attack asked for runs on it; each
(attack, model) result is written atomically to ``DIR/attacks/<attack>.<model>.json`` with the
settings it was computed under, and its per-item records to ``DIR/items/<attack>.<model>.jsonl``,
so ``--resume`` skips what is finished. ``DIR/audit.json`` (the sections ``mia``, ``memorization``,
``relearn``, ``quantization``, ``prompts``), ``DIR/audit.png`` and the terminal table are made
from those files at the end. Every model pass goes through the evaluation runner
(:mod:`unlearn.evaluation.scoring`: batched, length-sorted); the audited models' files are only read.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from unlearn import distributed, models, outputs
from unlearn.audit.attacks import ORDER, RUNNERS, Subject
from unlearn.audit.inputs import AUDIT, OWN, PLOT, AuditInputs, check_inputs
from unlearn.audit.plot import audit_plot
from unlearn.audit.scores import assemble, print_audit
from unlearn.config import inputs_of
from unlearn.distributed import state
from unlearn.errors import OutputError
from unlearn.io import atomic_write_json, atomic_write_jsonl, json_safe
from unlearn.protocols import prompt_format_for
from unlearn.rundir import RunDir

log = logging.getLogger("unlearn")


SETTINGS = {  # the Config fields each attack's result depends on (besides the model and the data)
    "mia": ("mia_k", "ref_model", "max_length", "dtype", "prompt_format"),
    "memorization": ("dtype", "prompt_format"),
    "prompts": ("icl_examples", "prefix_fraction", "seed", "dtype", "prompt_format"),
    "quantization": ("quant_bits", "quant_group_size", "dtype", "prompt_format"),
    "relearn": (
        "relearn_steps",
        "relearn_lr",
        "relearn_batch_size",
        "relearn_fraction",
        "seed",
        "weight_decay",
        "max_length",
        "dtype",
        "mixed_precision",
        "prompt_format",
    ),
}


def _settings(cfg, inputs: AuditInputs, attack: str, role: str) -> dict:
    out = {k: getattr(cfg, k) for k in SETTINGS[attack]}
    if attack == "quantization":
        out["backend"] = inputs.backend
    return {"model": inputs.models[role], "data": inputs.data_key, **out}


# --------------------------------------------------------------------------- the folder


def _prepare(out: Path, cfg) -> None:
    """The audit's own entries of ``out`` claimed (:func:`unlearn.outputs.claim`): with ``--resume`` they
    are continued, with ``--overwrite`` moved aside (never an input, never a file of the user's)."""
    if cfg.resume and cfg.overwrite:
        raise OutputError("--resume continues the audit in --out and --overwrite starts it again: give one")
    outputs.claim(
        out,
        OWN,
        overwrite=cfg.overwrite,
        inputs=inputs_of(cfg),
        keep=OWN if cfg.resume else (),
        what="an audit",
        hint="; --resume to finish it",
    )
    (out / "attacks").mkdir(parents=True, exist_ok=True)
    (out / "items").mkdir(exist_ok=True)


def _done(out: Path, attack: str, role: str, settings: dict) -> dict | None:
    path = out / "attacks" / f"{attack}.{role}.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    if saved.get("settings") != json.loads(json.dumps(settings)):
        log.info("%s: computed under other settings; running it again", path)
        return None
    return saved["result"], saved.get("seconds")


def run_audit(cfg, inputs: AuditInputs | None = None) -> dict:
    """``unlearn audit``: every attack of ``cfg.attacks`` on ``cfg.model`` (and ``cfg.target_model``,
    ``cfg.retain_model``), written to ``cfg.out``; returns ``audit.json``'s content."""
    inputs = inputs or check_inputs(cfg)
    out = Path(cfg.out)
    main = distributed.is_main_process()
    with RunDir(out).locked(main):
        if main:
            _prepare(out, cfg)
        distributed.wait_for_everyone()
        results: dict[str, dict[str, dict]] = {a: {} for a in inputs.attacks}
        cost: dict[str, dict[str, float | None]] = {a: {} for a in inputs.attacks}  # seconds per attack and model
        for role, path in inputs.models.items():
            pending = []
            for attack in (a for a in ORDER if a in inputs.attacks):
                done = _done(out, attack, role, _settings(cfg, inputs, attack, role)) if cfg.resume else None
                if done is None:
                    pending.append(attack)
                else:
                    results[attack][role], cost[attack][role] = done
            if pending:
                subject = _load(cfg, role, path)
                for attack in pending:
                    if main:
                        print(f"audit: {attack} on the {role} model ({path})")
                    start = time.perf_counter()
                    summary, items = RUNNERS[attack](cfg, inputs, subject, out)
                    cost[attack][role] = round(time.perf_counter() - start, 2)
                    if main:  # every process computed the same results (gathered): one writes
                        atomic_write_jsonl(out / "items" / f"{attack}.{role}.jsonl", json_safe(items))
                        saved = {"settings": _settings(cfg, inputs, attack, role), "result": summary}
                        atomic_write_json(
                            out / "attacks" / f"{attack}.{role}.json",
                            json_safe({**saved, "seconds": cost[attack][role]}),
                        )
                    results[attack][role] = summary
                del subject
        if inputs.saved_retain is not None:
            for attack in inputs.attacks:
                saved = _from_saved(inputs.saved_retain, attack)
                if saved is not None:
                    results[attack]["retain"] = saved
        audit = {**assemble(cfg, inputs, results), "seconds": cost}
        if main:
            atomic_write_json(out / AUDIT, json_safe(audit))
            audit_plot(audit, out / PLOT)
            outputs.discard_aside(out)  # an audit --overwrite replaced
        distributed.wait_for_everyone()
    if main:
        print_audit(audit)
        print("audit: seconds per attack (" + ", ".join(f"{role}" for role in inputs.models) + "): " + "; ".join(
            f"{a} " + " / ".join("–" if cost[a].get(r) is None else f"{cost[a][r]:.1f}" for r in inputs.models)
            for a in ORDER if a in cost
        ))  # fmt: skip
        print(f"audit: wrote {out / AUDIT} and {out / PLOT}")
    return audit


def _from_saved(saved: dict, attack: str) -> dict | None:
    """The audited model's result of ``attack`` in a saved ``audit.json`` (the retain model's), as
    :data:`RUNNERS` return it; relearning is not taken (its split depends on the settings)."""
    section = saved.get(attack) or {}
    if attack == "mia":
        return {"auc": section["auc"]["unlearned"]} if "unlearned" in section.get("auc", {}) else None
    if attack == "relearn":
        return None
    return section.get("unlearned")


def _load(cfg, role: str, path: str) -> Subject:
    model, tokenizer = models.load_model(
        path, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code, attn_implementation=cfg.attn_implementation
    )
    models.check_finite(model, f"the {role} model {path}")
    model.to(state().device)
    return Subject(role, path, model, tokenizer, prompt_format_for(tokenizer, cfg, path))
