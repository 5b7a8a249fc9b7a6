"""Unlearning methods: forget terms and regularisers, registered by name and composed.

``"ME+GD"`` parses into the forget term ``ME`` and the regulariser ``GD``; the objective is
``forget_coeff * forget + reg_coeff * reg`` (docs/methods.md). Each term declares

* the batch parts it reads and what it needs from the reference (:mod:`unlearn.reference`):
  ``ref="nll"``: per-sequence reference NLLs, computed once per task and cached (no second model
  in memory); ``ref="logits"``: full reference distributions at every step (a frozen model);
* its own hyper-parameters with their defaults (``args``), which it receives by name, and its
  default weight in the objective (``coeff``); a forget term also says whether its sequences
  mask the question (``mask_question``).

Users override the arguments with ``--method-arg NAME=VALUE`` (``method_args:`` in YAML); a name
that both terms declare is written ``TERM.NAME`` (``DPO.beta=0.2``). Adding a loss-based method is
its math in :mod:`unlearn.losses`, one entry here and its tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from unlearn import chunked, losses
from unlearn.errors import ConfigError

PAPER = "https://arxiv.org/abs/2410.08109"


class BatchView:
    """Model outputs for one batch, computed once per part and shared by every term.

    ``chunk``: rows per chunk when the logits are chunked (:mod:`unlearn.chunked`): the terms then
    get per-position values from :meth:`rows` and never a (B, T, V) tensor; ``autocast``: the
    mixed-precision context the head runs under then (the model's own forward has it already)."""

    def __init__(self, model, batch: dict, reference=None, seed: int = 0, chunk: int | None = None,
                 autocast=contextlib.nullcontext):
        self.model, self.batch, self.reference, self.seed = model, batch, reference, seed
        self.chunk, self.autocast = chunk, autocast
        self._logits: dict[str, torch.Tensor] = {}
        self._hidden: dict[tuple, tuple] = {}
        self.notes: dict[str, float] = {}  # parts of a term's value that the training log shows beside it

    def note(self, name: str, value: torch.Tensor) -> None:
        """Show ``value`` (a part of a term) in the training log under ``name``."""
        self.notes[name] = value.detach().float().item()

    def labels(self, part: str) -> torch.Tensor:
        return self.batch[part]["labels"]

    def logits(self, part: str) -> torch.Tensor:
        if part not in self._logits:
            p = self.batch[part]
            self._logits[part] = self.model(input_ids=p["input_ids"], attention_mask=p["attention_mask"]).logits
        return self._logits[part]

    def _final_hidden(self, part: str, frozen: bool = False):
        if (part, frozen) not in self._hidden:
            if frozen:
                model = getattr(self.reference, "model", None)
                if model is None:
                    raise RuntimeError("this method needs a reference model but none was loaded")
                with torch.no_grad():
                    self._hidden[part, frozen] = chunked.final_hidden(model, self.batch[part])
            else:
                self._hidden[part, frozen] = chunked.final_hidden(self.model, self.batch[part])
        return self._hidden[part, frozen]

    def rows(self, part: str, fn, select: str = "labels", ref: bool = False, labels: torch.Tensor | None = None,
             **args) -> torch.Tensor:
        """``fn(logits, target[, ref_logits], **args)`` at the counted positions of ``part``, chunked, (N,)."""
        mask, target = chunked.positions(self.batch[part], select, labels)
        hidden, head = self._final_hidden(part)
        frozen = self._final_hidden(part, frozen=True) if ref else None
        row_fn = (lambda z, y, *r: fn(z, y, *r, **args)) if args else fn
        with self.autocast():
            return chunked.rows(hidden, head, mask, target, row_fn, self.chunk, frozen)

    def rows_mean(self, part: str, fn, select: str = "labels", ref: bool = False, labels=None, **args):
        """The mean of :meth:`rows` (0, still connected to the graph, when no position counts)."""
        values = self.rows(part, fn, select, ref, labels, **args)
        return values.mean() if values.numel() else self._final_hidden(part)[0].float().sum() * 0.0

    def nll(self, part: str) -> torch.Tensor:
        """Summed answer NLL per sequence, (B,)."""
        if not self.chunk:
            return losses.sequence_nll(self.logits(part), self.labels(part))
        mask, _ = chunked.positions(self.batch[part], "labels")
        values = self.rows(part, losses.nll_rows)
        return values.new_zeros(mask.shape[0]).index_add(0, mask.nonzero()[:, 0], values)

    def mean_nll(self, part: str) -> torch.Tensor:
        if not self.chunk:
            return losses.mean_nll(self.logits(part), self.labels(part))
        return self.nll(part).sum() / losses.token_counts(self.labels(part)).sum().clamp(min=1)

    def ref_nll(self, part: str) -> torch.Tensor:
        """Cached reference NLLs of this batch's items (:class:`unlearn.reference.Reference`)."""
        stats = getattr(self.reference, "stats", None)
        if stats is None or part not in stats:
            raise RuntimeError(f"reference NLLs of '{part}' were not computed before training")
        idx = self.batch["index"].to(stats[part].device)
        return stats[part][idx].to(self.labels(part).device)

    def ref_logits(self, part: str) -> torch.Tensor:
        return self._ref_logits(self.batch[part])

    def _ref_logits(self, p: dict) -> torch.Tensor:
        model = getattr(self.reference, "model", None)
        if model is None:
            raise RuntimeError("this method needs a reference model but none was loaded")
        with torch.no_grad():
            return model(input_ids=p["input_ids"], attention_mask=p["attention_mask"]).logits

    def hidden(self, part: str, layer: int, frozen: bool = False) -> torch.Tensor:
        """``(B, T, H)`` output of decoder layer ``layer`` (0-based) for ``part``: one forward hook on
        that layer only (no ``output_hidden_states`` over every layer); ``frozen``: the reference
        model's, without gradient."""
        model = getattr(self.reference, "model", None) if frozen else self.model
        if model is None:
            raise RuntimeError("this method needs a reference model but none was loaded")
        p = self.batch[part]
        with torch.no_grad() if frozen else contextlib.nullcontext():
            return hidden_states(model, p["input_ids"], p["attention_mask"], layer)

    def padded(self, part: str, length: int) -> dict:
        """``part`` as the official code feeds it: every sequence padded to ``length`` with its EOS
        (the last real token; the official pad token is the EOS), attention 0 on the padding, and
        every position labelled (its ``mask: false`` labels are the padded input ids)."""
        p = self.batch[part]
        ids, mask = p["input_ids"][:, :length], p["attention_mask"][:, :length]
        last = ids.gather(1, (mask.sum(dim=1, keepdim=True) - 1).clamp(min=0))
        fill = length - ids.shape[1]
        if fill > 0:
            ids = torch.cat([ids, last.expand(-1, fill)], dim=1)
            mask = torch.cat([mask, mask.new_zeros(mask.shape[0], fill)], dim=1)
        ids = torch.where(mask.bool(), ids, last)  # padding inside the batch too
        return {"input_ids": ids, "attention_mask": mask, "labels": ids}

    def padded_logits(self, part: str, length: int) -> tuple[torch.Tensor, dict]:
        p = self.padded(part, length)
        return self.model(input_ids=p["input_ids"], attention_mask=p["attention_mask"]).logits, p


def decoder_layer(model, layer: int) -> torch.nn.Module:
    """Decoder layer ``layer`` of a causal LM, found through DDP / DeepSpeed / PEFT wrappers: the
    module named ``...layers.<layer>`` (the transformers naming of every decoder-only family)."""
    found = [m for name, m in model.named_modules() if re.search(rf"(^|\.)(layers|h)\.{layer}$", name)]
    if not found:
        raise ConfigError(f"the model has no decoder layer {layer}")
    return found[0]


def hidden_states(model, input_ids, attention_mask, layer: int) -> torch.Tensor:
    """The output of decoder layer ``layer`` on these inputs (a forward hook; the pass itself runs
    through the model so that DDP, DeepSpeed and FSDP do their part)."""
    cache: list[torch.Tensor] = []

    def keep(module, args, output):
        cache.append(output[0] if isinstance(output, tuple) else output)

    # A LoRA model's reference (AdapterOff) is a callable over the model itself: hook that model.
    owner = model if isinstance(model, torch.nn.Module) else model.model
    handle = decoder_layer(owner, layer).register_forward_hook(keep)
    try:
        model(input_ids=input_ids, attention_mask=attention_mask)
    finally:
        handle.remove()
    return cache[0]


@dataclass(frozen=True)
class Term:
    """One loss term: ``fn(view, **args)`` → 0-dim tensor."""

    name: str
    fn: Callable[..., torch.Tensor]
    parts: tuple[str, ...]
    ref: str | None = None  # None | "nll" | "logits"
    ref_parts: tuple[str, ...] = ()
    args: dict[str, Any] = field(default_factory=dict)  # hyper-parameter -> default
    coeff: float = 1.0  # default weight of the term in the objective
    scenario_coeff: dict[str, float] = field(default_factory=dict)  # scenario -> default weight there
    mask_question: bool = True  # forget terms: question tokens carry no loss in forget sequences
    doc: str = ""
    label: str = ""  # name of this term in logs; default "<name> forget term" / "<name> regulariser"
    source: str = ""  # the paper that defines it
    trainable: Callable[..., list[str]] | None = None  # args -> regexes of the only parameters that train
    task_vector: bool = False  # the trained weights are then negated: θ − α (θ_trained − θ)

    @property
    def needs(self) -> list[str]:
        """What the term needs beyond the model: reference NLLs, a frozen model, refusals, a retain set."""
        out = {"nll": ["reference NLLs (cached)"], "logits": ["a frozen reference model"]}.get(self.ref, [])
        if self.trainable is not None:
            out.append("hidden states of one layer; trains only some parameters")
        if any(p.endswith("_idk") for p in self.parts):
            out.append("refusals")
        if any(p.startswith("retain") or p == "forget_mismatch" for p in self.parts):
            out.append("a retain set")
        return out


BETA = {"beta": 0.1}  # inverse temperature of the preference losses (docs/methods.md)


def _me(v: BatchView, pad_to: int) -> torch.Tensor:
    if not pad_to and v.chunk:
        return v.rows_mean("forget", losses.uniform_kl_rows)
    if not pad_to:  # real tokens only: question, answer, one EOS
        return losses.max_entropy(v.logits("forget"), v.labels("forget"))
    logits, p = v.padded_logits("forget", pad_to)
    return losses.max_entropy(logits, p["labels"])


RMU_CONTROL = "rmu_control"  # the control vector's key among the reference statistics (saved in checkpoints)


def _rmu_vector(v: BatchView, size: int, steering_coeff: float, like: torch.Tensor) -> torch.Tensor:
    """RMU's control vector: uniform in [0, 1)^H, unit norm, times the steering coefficient. Drawn
    from the run's seed at the first step and kept with the reference statistics, which every
    checkpoint saves: a resumed run uses the saved vector, not a new draw."""
    ref = v.reference
    stats = getattr(ref, "stats", None) or {}
    if RMU_CONTROL not in stats:
        g = torch.Generator().manual_seed(v.seed)
        u = torch.rand(size, generator=g)
        stats = {**stats, RMU_CONTROL: u / u.norm() * steering_coeff}
        if ref is not None:
            ref.stats = stats
    return stats[RMU_CONTROL].to(device=like.device, dtype=torch.float32)


def _rmu(v: BatchView, layer: int, steering_coeff: float, alpha: float, layers: str) -> torch.Tensor:
    """RMU's whole objective: forget activations steered to the control vector, plus alpha times the
    retain activations' distance to the frozen model's (both at ``layer``)."""
    h = v.hidden("forget", layer)
    forget = losses.activation_distance(h, _rmu_vector(v, h.shape[-1], steering_coeff, h), v.labels("forget"))
    r = v.hidden("retain", layer)
    retain = losses.activation_distance(r, v.hidden("retain", layer, frozen=True), v.labels("retain"))
    v.note("RMU forget distance", forget)
    v.note("RMU retain distance", retain)  # unweighted: the objective adds alpha times it
    return forget + alpha * retain


def _rmu_trainable(layer: int, steering_coeff: float, alpha: float, layers: str) -> list[str]:
    ids = "|".join(x.strip() for x in str(layers).split(",") if x.strip())
    return [rf"(^|\.)(layers|h)\.({ids})\.mlp\.down_proj\."]


def _kl(v: BatchView, pad_to: int) -> torch.Tensor:
    if not pad_to and v.chunk:
        return v.rows_mean("retain", losses.kl_rows, select="attention", ref=True)
    if not pad_to:  # real tokens only
        return losses.kl(v.logits("retain"), v.ref_logits("retain"), v.batch["retain"]["attention_mask"].bool())
    logits, p = v.padded_logits("retain", pad_to)
    return losses.kl(logits, v._ref_logits(p), torch.ones_like(p["attention_mask"], dtype=torch.bool))

def _wga(v: BatchView, beta: float) -> torch.Tensor:
    if v.chunk:
        return v.rows_mean("forget", losses.wga_rows, beta=beta)
    return losses.wga(v.logits("forget"), v.labels("forget"), beta)


def _satimp(v: BatchView, beta1: float, beta2: float) -> torch.Tensor:
    if v.chunk:
        return v.rows_mean("forget", losses.satimp_rows, beta1=beta1, beta2=beta2)
    return losses.satimp(v.logits("forget"), v.labels("forget"), beta1, beta2)


def _undial(v: BatchView, beta: float) -> torch.Tensor:
    if v.chunk:
        return v.rows_mean("forget", losses.undial_rows, ref=True, beta=beta)
    return losses.undial(v.logits("forget"), v.ref_logits("forget"), v.labels("forget"), beta)


def _ce_u(v: BatchView, ignore_first: int) -> torch.Tensor:
    if v.chunk:
        return v.rows_mean("forget", losses.ce_u_rows, labels=losses.ce_u_labels(v.labels("forget"), ignore_first))
    return losses.ce_u(v.logits("forget"), v.labels("forget"), ignore_first)


FORGET_TERMS: dict[str, Term] = {
    t.name: t
    for t in [
        Term("GA", lambda v: -v.mean_nll("forget"), ("forget",), doc="gradient ascent on the forget answers",
             source="Jang et al. 2023, arXiv 2210.01504"),
        Term("NPO", lambda v, beta: losses.npo(v.nll("forget"), v.ref_nll("forget"), beta), ("forget",),
             ref="nll", ref_parts=("forget",), args=BETA, doc="negative preference optimisation", source="Zhang et al. 2024, arXiv 2404.05868"),
        Term("DPO", lambda v, beta: losses.dpo(v.nll("forget_idk"), v.nll("forget"),
                                               v.ref_nll("forget_idk"), v.ref_nll("forget"), beta),
             ("forget", "forget_idk"), ref="nll", ref_parts=("forget", "forget_idk"), args=BETA,
             doc="prefer a refusal over the true answer", source="Rafailov et al. 2023, arXiv 2305.18290"),
        Term("IDK", lambda v: v.mean_nll("forget_idk"), ("forget_idk",), doc="fine-tune the forget questions on refusals",
             source="Maini et al. 2024, arXiv 2401.06121"),
        Term("ME", lambda v, pad_to: _me(v, pad_to), ("forget",), args={"pad_to": 0},
             coeff=0.1, scenario_coeff={"real_world": 0.5, "continual": 1.0}, mask_question=False,
             doc="maximise entropy: push next-token distributions towards uniform, question tokens included; "
                 "pad_to=500 averages over every position of sequences padded to 500, as officially",
             source="Yuan et al. 2025, arXiv 2410.08109"),
        Term("LLMU", lambda v: -v.mean_nll("forget"), ("forget",),
             doc="GA; its regulariser (mismatched answers' NLL + KL) is part of the method",
             source="Yao et al. 2023, arXiv 2310.10683"),
        Term("SimNPO", lambda v, beta, gamma: losses.simnpo(v.nll("forget"), losses.token_counts(v.labels("forget")),
                                                             beta, gamma),
             ("forget",), args={"beta": 2.5, "gamma": 0.0}, coeff=0.1375,
             doc="NPO without a reference, on the length-normalised NLL with a margin gamma",
             source="Fan et al. 2024, arXiv 2410.07163"),
        Term("WGA", _wga, ("forget",),
             args={"beta": 1.0}, doc="gradient ascent with each token weighted by its probability to the power beta",
             source="Wang et al. 2025, arXiv 2502.19301"),
        Term("SatImp", _satimp, ("forget",), args={"beta1": 5.0, "beta2": 1.0}, coeff=0.1,
             doc="gradient ascent with token weights p^beta1 (1 - p)^beta2 (saturation x importance)",
             source="Yang et al. 2025, arXiv 2505.11953"),
        Term("UNDIAL", _undial, ("forget",), ref="logits", args={"beta": 10.0},
             doc="self-distillation towards the frozen model with the true token's logit lowered by beta",
             source="Dong et al. 2024, arXiv 2402.10052"),
        Term("RMU", _rmu, ("forget", "retain"), ref="logits", trainable=_rmu_trainable,
             args={"layer": 7, "steering_coeff": 6.5, "alpha": 1200.0, "layers": "5,6,7"},
             doc="representation misdirection: steer layer `layer`'s activations on forget text towards a fixed "
                 "random vector, keep the retain activations (weight `alpha`); only the MLP down-projections of "
                 "`layers` train",
             source="Li et al. 2024, arXiv 2403.03218"),
        Term("TV", lambda v, alpha: v.mean_nll("forget"), ("forget",), args={"alpha": 1.0}, task_vector=True,
             doc="task-vector negation: fine-tune on the forget set (this loss), then move the weights the other "
                 "way: θ − alpha (θ_fine-tuned − θ)",
             source="Ilharco et al. 2023, arXiv 2212.04089 (a MUSE baseline)"),
        Term("CE-U", _ce_u, ("forget",), args={"ignore_first": 1},
             doc="cross-entropy towards the model's own distribution with the true token removed",
             source="Yang et al. 2025, arXiv 2503.01224"),
    ]
}

REGULARIZERS: dict[str, Term] = {
    t.name: t
    for t in [
        Term("GD", lambda v: v.mean_nll("retain"), ("retain",), doc="gradient descent on the retain set",
             source="Liu et al. 2022, arXiv 2203.12817"),
        Term("KL", lambda v, pad_to: _kl(v, pad_to), ("retain",), ref="logits", args={"pad_to": 0},
             doc="KL(p_ref ‖ p) on retain sequences; pad_to=500 averages over every position of sequences "
                 "padded to 500, as officially", source="Maini et al. 2024, arXiv 2401.06121"),
        Term("AP", lambda v, beta: losses.ap(v.nll("retain"), v.nll("retain_idk"), beta), ("retain", "retain_idk"),
             args=BETA, doc="answer preservation: prefer the retain answer over a refusal",
             source="Yuan et al. 2025, arXiv 2410.08109"),
    ]
}

# Methods whose regulariser is part of their definition (not offered as FORGET+REG): LLMU's is the
# NLL of the forget question with its retain partner's answer plus KL, weighted together by reg_coeff.
LLMU_REG = Term("LLMU", lambda v: v.mean_nll("forget_mismatch") + _kl(v, 0), ("forget_mismatch", "retain"),
                ref="logits", doc="mismatched answers' NLL + KL(p_ref ‖ p) on retain sequences")
DEFAULT_REG = {"LLMU": LLMU_REG}


@dataclass(frozen=True)
class Objective:
    """``forget_coeff * forget(batch) + reg_coeff * reg(batch)``, each term called with its arguments."""

    forget: Term
    reg: Term | None
    forget_coeff: float = 1.0
    reg_coeff: float = 1.0
    forget_args: dict[str, Any] = field(default_factory=dict)
    reg_args: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        own = self.reg is not None and DEFAULT_REG.get(self.forget.name) is self.reg
        return self.forget.name + (f"+{self.reg.name}" if self.reg and not own else "")

    @property
    def terms(self) -> list[Term]:
        return [self.forget] + ([self.reg] if self.reg else [])

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p for t in self.terms for p in t.parts))

    @property
    def ref_nll_parts(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p for t in self.terms if t.ref == "nll" for p in t.ref_parts))

    @property
    def needs_ref_model(self) -> bool:
        return any(t.ref == "logits" for t in self.terms)

    @property
    def trainable_patterns(self) -> list[str] | None:
        """Regexes of the only parameters that train (RMU), or None: every trainable weight trains."""
        for t in self.terms:
            if t.trainable is not None:
                return t.trainable(**(self.forget_args if t is self.forget else self.reg_args))
        return None

    @property
    def method_args(self) -> dict[str, Any]:
        """Every argument of both terms, qualified (``NPO.beta``): what ``config.yaml`` records."""
        return {**{f"{self.forget.name}.{k}": v for k, v in self.forget_args.items()},
                **({f"{self.reg.name}.{k}": v for k, v in self.reg_args.items()} if self.reg else {})}

    def __call__(self, view: BatchView) -> tuple[torch.Tensor, dict[str, float]]:
        f = self.forget.fn(view, **self.forget_args)
        loss = self.forget_coeff * f
        parts = {self.forget.label or f"{self.forget.name} forget term": f.detach().float().item()}
        if self.reg is not None:
            r = self.reg.fn(view, **self.reg_args)
            loss = loss + self.reg_coeff * r
            parts[self.reg.label or f"{self.reg.name} regulariser"] = r.detach().float().item()
        return loss, {**parts, **getattr(view, "notes", {})}


def valid_method_names() -> list[str]:
    return list(FORGET_TERMS) + [f"{f}+{r}" for f, t in FORGET_TERMS.items()
                                 if f not in DEFAULT_REG and not t.task_vector for r in REGULARIZERS]


def negate_task_vector(model, original: dict[str, torch.Tensor], alpha: float) -> None:
    """Task-vector negation in place: every trained weight θ_ft becomes θ − α (θ_ft − θ), with θ the
    weights before training (``original``, by name). A LoRA model's delta is its adapter: scaling
    ``lora_B`` by −α turns ``W + BA`` into ``W − α BA``."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.mul_(-alpha)
            elif p.requires_grad and name in original:
                p.copy_((1 + alpha) * original[name].to(p.device, p.dtype) - alpha * p)


def parse_method(name: str) -> tuple[Term, Term | None]:
    """``"ME+GD"`` → (ME, GD); ``"GA"`` → (GA, None); ``"LLMU"`` → (LLMU, its own regulariser)."""
    forgets = {k.upper(): t for k, t in FORGET_TERMS.items()}
    regs = {k.upper(): t for k, t in REGULARIZERS.items()}
    pieces = [p.strip().upper() for p in str(name).split("+")]
    if len(pieces) > 2 or pieces[0] not in forgets or (len(pieces) == 2 and pieces[1] not in regs):
        raise ConfigError(
            f"unknown method '{name}'. Forget terms: {', '.join(FORGET_TERMS)}; regularisers: "
            f"{', '.join(REGULARIZERS)}; write FORGET or FORGET+REG (e.g. ME+GD, IDK+AP, NPO+KL) or LLMU "
            "(`unlearn methods` describes each)")
    forget = forgets[pieces[0]]
    if forget.task_vector and len(pieces) == 2:
        raise ConfigError(f"{forget.name} takes no regulariser: its fine-tuning step learns the forget set only")
    if len(pieces) == 2:
        reg = regs[pieces[1]]
    else:
        reg = DEFAULT_REG.get(forget.name)
    return forget, reg


def _arguments_text(terms: list[Term]) -> str:
    listed = [f"{t.name}.{k} (default {v})" for t in terms for k, v in t.args.items()]
    return ", ".join(listed) if listed else "none"


def _convert(value: Any, default: Any, where: str) -> Any:
    """``value`` (a YAML value or the text of a flag) as the type of the argument's default."""
    kind = type(default)
    try:
        if kind is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return low in ("true", "1", "yes", "on")
            return bool(value)
        if isinstance(value, bool):
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"method argument {where} must be {kind.__name__}, got {value!r}") from None


def resolve_args(forget: Term, reg: Term | None, given: dict[str, Any] | None) -> tuple[dict, dict]:
    """(forget term's arguments, regulariser's arguments): the declared defaults with ``given`` applied.

    ``given`` maps ``NAME`` or ``TERM.NAME`` to a value; an unknown name is refused with the list
    of the method's arguments, and a bare name both terms declare must be qualified.
    """
    terms = [forget] + ([reg] if reg else [])
    values = {t.name: dict(t.args) for t in terms}
    method = forget.name + (f"+{reg.name}" if reg else "")
    for key, value in (given or {}).items():
        prefix, _, arg = str(key).rpartition(".")
        if prefix:
            owners = [t for t in terms if t.name.upper() == prefix.upper()]
            if not owners:
                raise ConfigError(f"method argument '{key}': {method} has no term {prefix} "
                                  f"(its arguments: {_arguments_text(terms)})")
        else:
            owners = [t for t in terms if arg in t.args]
            if len(owners) > 1:
                raise ConfigError(f"method argument '{arg}' belongs to {' and '.join(t.name for t in owners)}: "
                                  f"write {' or '.join(f'{t.name}.{arg}' for t in owners)}")
        if not owners or arg not in owners[0].args:
            raise ConfigError(f"unknown method argument '{key}' for {method} (its arguments: {_arguments_text(terms)})")
        term = owners[0]
        values[term.name][arg] = _convert(value, term.args[arg], f"{term.name}.{arg}")
    return values[forget.name], (values[reg.name] if reg else {})


SCENARIOS = ("fictitious", "real_world", "continual")


def _default_coeff(term: Term | None, scenario: str | None) -> float:
    return 1.0 if term is None else term.scenario_coeff.get(scenario, term.coeff)


def build_objective(method: str, method_args: dict[str, Any] | None = None, forget_coeff: float | None = None,
                    reg_coeff: float | None = None, scenario: str | None = None) -> Objective:
    """The objective of ``method``; arguments and weights left out take the terms' defaults (for
    ``scenario``: the official ME+GD weight is 0.1 on TOFU, 0.5 in the real world, 1.0 continual)."""
    forget, reg = parse_method(method)
    forget_args, reg_args = resolve_args(forget, reg, method_args)
    return Objective(forget, reg,
                     _default_coeff(forget, scenario) if forget_coeff is None else float(forget_coeff),
                     _default_coeff(reg, scenario) if reg_coeff is None else float(reg_coeff), forget_args, reg_args)


def resolve(cfg, scenario: str | None = None):
    """``(objective, cfg)``: the run's objective, and a copy of ``cfg`` with every default the
    method decides written in (weights, question mask, qualified method arguments), as
    ``config.yaml`` records it. ``cfg`` itself is not changed."""
    objective = build_objective(cfg.method, cfg.method_args, cfg.forget_coeff, cfg.reg_coeff, scenario)
    resolved = dataclasses.replace(
        cfg, forget_coeff=objective.forget_coeff, reg_coeff=objective.reg_coeff,
        mask=objective.forget.mask_question if cfg.mask is None else cfg.mask, method_args=objective.method_args)
    return objective, resolved


def describe() -> list[dict]:
    """Every forget term and regulariser: name, kind, description, needs, arguments, weight, source
    (``unlearn methods`` and the README's methods table are made from it)."""
    rows = []
    for kind, terms in (("forget term", FORGET_TERMS), ("regulariser", REGULARIZERS)):
        for t in terms.values():
            weight = f"{t.coeff:g}" + "".join(f", {k} {v:g}" for k, v in t.scenario_coeff.items())
            rows.append({"name": t.name, "kind": kind, "description": t.doc, "needs": ", ".join(t.needs) or "–",
                         "arguments": ", ".join(f"{k}={v}" for k, v in t.args.items()) or "–",
                         "weight": weight, "source": t.source})
    return rows


def methods_table() -> str:
    """The README's methods table, in Markdown."""
    lines = ["| term | kind | what it does | needs | arguments (defaults) | default weight | source |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| `{r['name']}` | {r['kind']} | {r['description']} | {r['needs']} | {r['arguments']} | "
              f"{r['weight']} | {r['source']} |" for r in describe()]
    return "\n".join(lines)


FINETUNE = Objective(Term("NLL", lambda v: v.mean_nll("qa"), ("qa",), doc="fine-tuning", label="nll"), None)
