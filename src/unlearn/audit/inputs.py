"""What an audit reads, checked before any model loads: the attacks asked for, the forget, retain
and holdout sets (as the run's protocol gives them), the models by role, the quantisation widths."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from unlearn.audit import quantize
from unlearn.data import read_records
from unlearn.errors import ConfigError, DataError, OutputError
from unlearn.evaluation.sets import forget_set
from unlearn.loading import validate_model_settings
from unlearn.protocols import protocol_of
from unlearn.rundir import MODEL

log = logging.getLogger("unlearn")

ATTACKS = ("mia", "memorization", "relearn", "quantization", "prompts")
AUDIT = "audit.json"
PLOT = "audit.png"
OWN = (AUDIT, PLOT, "attacks", "items", "relearn")  # everything an audit writes into its folder


# --------------------------------------------------------------------------- inputs


def parse_attacks(text: str) -> list[str]:
    names = [a.strip() for a in str(text).split(",") if a.strip()]
    unknown = [a for a in names if a not in ATTACKS]
    if unknown or not names:
        raise ConfigError(
            f"--attacks: unknown attack {unknown[0]!r} (valid: {', '.join(ATTACKS)})"
            if unknown
            else f"--attacks: name at least one of {', '.join(ATTACKS)}"
        )
    return list(dict.fromkeys(names))


@dataclass
class AuditInputs:
    """What an audit reads, validated: the sets, the models by role, the attacks."""

    attacks: list[str]
    forget: object  # EvalSet
    retain: object | None  # EvalSet
    holdout: list[dict] | None
    models: dict[str, str]  # role -> model folder or hub id
    saved_retain: dict | None = None  # a retain model's audit.json, used instead of running it
    ref_model: str | None = None
    bits: list[int] = field(default_factory=list)
    backend: str = "simulated"

    @property
    def data_key(self) -> str:
        """A fingerprint of the forget and holdout items: results are only combined over the same."""
        h = hashlib.sha256()
        for q, a in zip(self.forget.questions, self.forget.answers, strict=False):
            h.update(f"{q}\x00{a}\x01".encode())
        for r in self.holdout or []:
            h.update(f"{r['question']}\x00{r['answer']}\x02".encode())
        return h.hexdigest()[:16]


def model_folder(path: str) -> str:
    p = Path(path)
    if (p / MODEL).is_dir() and not (p / "config.json").exists():
        return str(p / MODEL)  # a run's output folder: its model
    return str(path)


def _saved_audit(path: str) -> dict | None:
    for candidate in (Path(path) / AUDIT, Path(path) / "audit" / AUDIT):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text(encoding="utf-8")) | {"_source": str(candidate)}
            except ValueError:
                raise DataError(f"{candidate}: not valid JSON") from None
    return None


def _holdout(cfg, attacks: list[str]) -> list[dict] | None:
    if "mia" not in attacks:
        return None
    path = cfg.holdout
    if path is None and cfg.data and Path(cfg.data).is_dir():
        candidate = Path(cfg.data) / f"holdout{cfg.split[-2:]}.json"
        path = candidate if candidate.is_file() else None
    if path is None:
        raise DataError(
            "the mia attack needs rows never trained on: give --holdout FILE (JSON lines with question "
            "and answer), or leave mia out of --attacks"
        )
    rows = read_records(path, required=("question", "answer"))
    if not rows:
        raise DataError(f"{path}: the holdout set is empty")
    return rows


def check_inputs(cfg) -> AuditInputs:
    """Everything the audit needs, checked before any model loads."""
    attacks = parse_attacks(cfg.attacks)
    validate_model_settings(cfg)  # dtype, attention kernel, mixed precision (the relearning trains)
    if not cfg.out:
        raise OutputError("no output folder: give --out DIR")
    if cfg.model == "tiny":
        raise ConfigError("--model: give the folder of the model to audit (the tiny preset is an untrained model)")
    sets, own_holdout = protocol_of(cfg).audit_sets(cfg)
    if not sets:
        raise DataError("no forget set to audit: give --data DIR (TOFU or real-world layout) or --forget FILE")
    forget = forget_set(sets)
    retain = next((s for s in sets if s.name == "Retain"), None)
    if "quantization" in attacks and retain is None:
        log.warning("no retain set: the quantization attack measures the forget set only")
    if "relearn" in attacks and len(forget.rows) < 2:
        raise DataError("the relearning attack needs at least two forget rows")
    models = {"unlearned": model_folder(cfg.model)}
    saved = None
    if cfg.target_model:
        models["target"] = model_folder(cfg.target_model)
    if cfg.retain_model:
        saved = _saved_audit(cfg.retain_model)
        if saved is None:
            models["retain"] = model_folder(cfg.retain_model)
    backend = quantize.backend(cfg.quant_backend) if "quantization" in attacks else "simulated"
    bits = quantize.check_bits(cfg.quant_bits, backend) if "quantization" in attacks else []
    holdout = (
        own_holdout if own_holdout is not None and not cfg.holdout and "mia" in attacks else _holdout(cfg, attacks)
    )
    inputs = AuditInputs(attacks, forget, retain, holdout, models, saved, cfg.ref_model, bits, backend)
    if saved is not None and saved.get("data", {}).get("key") != inputs.data_key:
        raise DataError(
            f"{saved['_source']}: that audit was run on other forget or holdout items than this one; "
            "audit the retain model on the same data, or give its model folder"
        )
    return inputs
