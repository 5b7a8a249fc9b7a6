"""Unlearning methods: forget terms and regularisers, registered by name and composed.

``"ME+GD"`` parses into the forget term ``ME`` and the regulariser ``GD``; the objective is
``forget_coeff * forget + reg_coeff * reg`` (PAPER.md §1). Each term declares the batch parts it
reads and what it needs from the reference model, so the trainer loads only what is needed:

* ``ref="nll"``: per-sequence reference NLLs, computed once per task before training and cached
  (no second model in memory while training);
* ``ref="logits"``: full reference distributions at every step (KL), so a frozen reference model
  stays in memory.

All the math lives in :mod:`unlearn.losses`; a term is a few lines that pick its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from . import losses

PAPER = "https://arxiv.org/abs/2410.08109"


class BatchView:
    """Model outputs for one batch, computed once per part and shared by every term."""

    def __init__(self, model, batch: dict, ref_model=None, ref_stats: dict | None = None):
        self.model, self.batch, self.ref_model, self.ref_stats = model, batch, ref_model, ref_stats
        self._logits: dict[str, torch.Tensor] = {}

    def labels(self, part: str) -> torch.Tensor:
        return self.batch[part]["labels"]

    def logits(self, part: str) -> torch.Tensor:
        if part not in self._logits:
            p = self.batch[part]
            self._logits[part] = self.model(input_ids=p["input_ids"], attention_mask=p["attention_mask"]).logits
        return self._logits[part]

    def nll(self, part: str) -> torch.Tensor:
        """Summed answer NLL per sequence, (B,)."""
        return losses.sequence_nll(self.logits(part), self.labels(part))

    def mean_nll(self, part: str) -> torch.Tensor:
        return losses.mean_nll(self.logits(part), self.labels(part))

    def ref_nll(self, part: str) -> torch.Tensor:
        """Cached reference NLLs of this batch's items (see :func:`unlearn.train.reference_nlls`)."""
        if self.ref_stats is None or part not in self.ref_stats:
            raise RuntimeError(f"reference NLLs of '{part}' were not computed before training")
        idx = self.batch["index"].to(self.ref_stats[part].device)
        return self.ref_stats[part][idx].to(self.labels(part).device)

    def ref_logits(self, part: str) -> torch.Tensor:
        if self.ref_model is None:
            raise RuntimeError("this method needs a reference model but none was loaded")
        p = self.batch[part]
        with torch.no_grad():
            return self.ref_model(input_ids=p["input_ids"], attention_mask=p["attention_mask"]).logits


@dataclass(frozen=True)
class Term:
    name: str
    fn: Callable[[BatchView, float], torch.Tensor]
    parts: tuple[str, ...]
    ref: str | None = None  # None | "nll" | "logits"
    ref_parts: tuple[str, ...] = ()
    doc: str = ""
    label: str = ""  # name of this term in logs; default "<name> forget term" / "<name> regulariser"


FORGET_TERMS: dict[str, Term] = {
    t.name: t
    for t in [
        Term("GA", lambda v, b: -v.mean_nll("forget"), ("forget",),
             doc="gradient ascent on the forget answers"),
        Term("NPO", lambda v, b: losses.npo(v.nll("forget"), v.ref_nll("forget"), b), ("forget",),
             ref="nll", ref_parts=("forget",), doc="negative preference optimisation (arXiv 2404.05868)"),
        Term("DPO", lambda v, b: losses.dpo(v.nll("forget_idk"), v.nll("forget"),
                                            v.ref_nll("forget_idk"), v.ref_nll("forget"), b),
             ("forget", "forget_idk"), ref="nll", ref_parts=("forget", "forget_idk"),
             doc="prefer a refusal over the true answer (arXiv 2305.18290)"),
        Term("IDK", lambda v, b: v.mean_nll("forget_idk"), ("forget_idk",),
             doc="fine-tune the forget questions on refusals"),
        Term("ME", lambda v, b: losses.max_entropy(v.logits("forget"), v.labels("forget")), ("forget",),
             doc="maximise entropy: push next-token distributions towards uniform (this paper)"),
        Term("LLMU", lambda v, b: -v.mean_nll("forget") + v.mean_nll("forget_mismatch"),
             ("forget", "forget_mismatch"),
             doc="GA plus NLL of forget questions with random retain answers (arXiv 2310.10683)"),
    ]
}

REGULARIZERS: dict[str, Term] = {
    t.name: t
    for t in [
        Term("GD", lambda v, b: v.mean_nll("retain"), ("retain",), doc="gradient descent on the retain set"),
        Term("KL", lambda v, b: losses.kl(v.logits("retain"), v.ref_logits("retain"),
                                          v.batch["retain"]["attention_mask"].bool()),
             ("retain",), ref="logits", doc="KL(p_ref || p) on retain sequences"),
        Term("AP", lambda v, b: losses.ap(v.nll("retain"), v.nll("retain_idk"), b), ("retain", "retain_idk"),
             doc="answer preservation: prefer the retain answer over a refusal (this paper)"),
    ]
}

# Methods whose regulariser is part of their definition.
DEFAULT_REG = {"LLMU": "KL"}


@dataclass(frozen=True)
class Objective:
    """``forget_coeff * forget(batch) + reg_coeff * reg(batch)``."""

    forget: Term
    reg: Term | None
    forget_coeff: float = 1.0
    reg_coeff: float = 1.0
    beta: float = 0.1

    @property
    def name(self) -> str:
        return self.forget.name + (f"+{self.reg.name}" if self.reg else "")

    @property
    def parts(self) -> tuple[str, ...]:
        parts = list(self.forget.parts) + (list(self.reg.parts) if self.reg else [])
        return tuple(dict.fromkeys(parts))

    @property
    def ref_nll_parts(self) -> tuple[str, ...]:
        terms = [self.forget] + ([self.reg] if self.reg else [])
        return tuple(dict.fromkeys(p for t in terms if t.ref == "nll" for p in t.ref_parts))

    @property
    def needs_ref_model(self) -> bool:
        return any(t is not None and t.ref == "logits" for t in (self.forget, self.reg))

    def __call__(self, view: BatchView) -> tuple[torch.Tensor, dict[str, float]]:
        f = self.forget.fn(view, self.beta)
        loss = self.forget_coeff * f
        parts = {self.forget.label or f"{self.forget.name} forget term": f.detach().float().item()}
        if self.reg is not None:
            r = self.reg.fn(view, self.beta)
            loss = loss + self.reg_coeff * r
            parts[self.reg.label or f"{self.reg.name} regulariser"] = r.detach().float().item()
        return loss, parts


def valid_method_names() -> list[str]:
    names = list(FORGET_TERMS) + [f"{f}+{r}" for f in FORGET_TERMS if f not in DEFAULT_REG for r in REGULARIZERS]
    return names


def parse_method(name: str) -> tuple[Term, Term | None]:
    """``"ME+GD"`` → (ME, GD); ``"GA"`` → (GA, None); ``"LLMU"`` → (LLMU, KL)."""
    pieces = [p.strip().upper() for p in name.split("+")]
    if len(pieces) > 2 or pieces[0] not in FORGET_TERMS or (len(pieces) == 2 and pieces[1] not in REGULARIZERS):
        raise ValueError(
            f"unknown method '{name}'. Forget terms: {', '.join(FORGET_TERMS)}; regularisers: "
            f"{', '.join(REGULARIZERS)}; write FORGET or FORGET+REG (e.g. ME+GD, IDK+AP, NPO+KL) or LLMU")
    forget = FORGET_TERMS[pieces[0]]
    if len(pieces) == 2:
        reg = REGULARIZERS[pieces[1]]
    else:
        reg = REGULARIZERS[DEFAULT_REG[forget.name]] if forget.name in DEFAULT_REG else None
    return forget, reg


def method_defaults(name: str) -> dict:
    """The paper's per-method defaults: ME trains on question tokens too, with forget_coeff 0.1."""
    forget, _ = parse_method(name)
    if forget.name == "ME":
        return {"forget_coeff": 0.1, "mask": False}
    return {"forget_coeff": 1.0, "mask": True}


def build_objective(name: str, forget_coeff: float | None = None, reg_coeff: float = 1.0,
                    beta: float = 0.1) -> Objective:
    forget, reg = parse_method(name)
    if forget_coeff is None:
        forget_coeff = method_defaults(name)["forget_coeff"]
    return Objective(forget, reg, forget_coeff, reg_coeff, beta)


FINETUNE = Objective(Term("NLL", lambda v, b: v.mean_nll("qa"), ("qa",), doc="fine-tuning", label="nll"), None)
