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

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from unlearn.errors import ConfigError
from unlearn.methods.batch import BatchView, hidden_states  # noqa: F401 (the package's API)
from unlearn.methods.terms import DEFAULT_REG, FORGET_TERMS, PAPER, REGULARIZERS, RMU_CONTROL, Term  # noqa: F401


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
        return {
            **{f"{self.forget.name}.{k}": v for k, v in self.forget_args.items()},
            **({f"{self.reg.name}.{k}": v for k, v in self.reg_args.items()} if self.reg else {}),
        }

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
    return list(FORGET_TERMS) + [
        f"{f}+{r}"
        for f, t in FORGET_TERMS.items()
        if f not in DEFAULT_REG and not (t.task_vector or t.in_context or t.own_retain)
        for r in REGULARIZERS
    ]


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
            "(`unlearn methods` describes each)"
        )
    forget = forgets[pieces[0]]
    if forget.task_vector and len(pieces) == 2:
        raise ConfigError(f"{forget.name} takes no regulariser: its fine-tuning step learns the forget set only")
    if forget.in_context and len(pieces) == 2:
        raise ConfigError(f"{forget.name} takes no regulariser: it trains nothing")
    if forget.own_retain and len(pieces) == 2:
        raise ConfigError(f"{forget.name} takes no regulariser: its retain term is part of it")
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


# The meaningful range of each method argument, by name (every number must also be finite).
POSITIVE_ARGS = ("beta", "beta1", "beta2", "steering_coeff", "alpha")
NON_NEGATIVE_ARGS = (
    "pad_to",
    "gamma",
    "layer",
    "ignore_first",
    "retain_loss_eps",
    "dual_step_size",
    "dual_warmup_epochs",
)


def _check_range(name: str, value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"method argument {where} must be finite, got {value}")
    if name in POSITIVE_ARGS and value <= 0:
        raise ConfigError(f"method argument {where} must be above 0, got {value}")
    if name in NON_NEGATIVE_ARGS and value < 0:
        raise ConfigError(f"method argument {where} must be at least 0, got {value}")
    if name == "layers":
        ids = [x.strip() for x in str(value).split(",") if x.strip()]
        if not ids or not all(x.isdigit() for x in ids):
            raise ConfigError(f"method argument {where} must list layer numbers like 5,6,7, got {value!r}")


def layer_args(forget_args: dict) -> list[int]:
    """The layer numbers a method's arguments name (RMU's ``layer`` and ``layers``), to check against
    the model's depth before it loads."""
    found = [int(forget_args["layer"])] if "layer" in forget_args else []
    found += [int(x) for x in str(forget_args.get("layers", "")).split(",") if x.strip()]
    return found


def resolve_args(forget: Term, reg: Term | None, given: dict[str, Any] | None) -> tuple[dict, dict]:
    """(forget term's arguments, regulariser's arguments): the declared defaults with ``given`` applied.

    ``given`` maps ``NAME`` or ``TERM.NAME`` to a value; an unknown name is refused with the list
    of the method's arguments, and a bare name both terms declare must be qualified.
    """
    terms = [forget] + ([reg] if reg else [])
    values = [dict(t.args) for t in terms]  # by role: LLMU's forget term and regulariser share its name
    method = forget.name + (f"+{reg.name}" if reg else "")
    for key, value in (given or {}).items():
        prefix, _, arg = str(key).rpartition(".")
        if prefix:
            owners = [i for i, t in enumerate(terms) if t.name.upper() == prefix.upper()]
            if not owners:
                raise ConfigError(
                    f"method argument '{key}': {method} has no term {prefix} (its arguments: {_arguments_text(terms)})"
                )
            owners = [i for i in owners if arg in terms[i].args] or owners
        else:
            owners = [i for i, t in enumerate(terms) if arg in t.args]
            if len(owners) > 1:
                raise ConfigError(
                    f"method argument '{arg}' belongs to {' and '.join(terms[i].name for i in owners)}: "
                    f"write {' or '.join(f'{terms[i].name}.{arg}' for i in owners)}"
                )
        if not owners or arg not in terms[owners[0]].args:
            raise ConfigError(f"unknown method argument '{key}' for {method} (its arguments: {_arguments_text(terms)})")
        term = terms[owners[0]]
        values[owners[0]][arg] = _convert(value, term.args[arg], f"{term.name}.{arg}")
        _check_range(arg, values[owners[0]][arg], f"{term.name}.{arg}")
    return values[0], (values[1] if reg else {})


SCENARIOS = ("fictitious", "real_world", "continual")


def _default_coeff(term: Term | None, scenario: str | None) -> float:
    return 1.0 if term is None else term.scenario_coeff.get(scenario, term.coeff)


def build_objective(
    method: str,
    method_args: dict[str, Any] | None = None,
    forget_coeff: float | None = None,
    reg_coeff: float | None = None,
    scenario: str | None = None,
) -> Objective:
    """The objective of ``method``; arguments and weights left out take the terms' defaults (for
    ``scenario``: the official ME+GD weight is 0.1 on TOFU, 0.5 in the real world, 1.0 continual)."""
    forget, reg = parse_method(method)
    forget_args, reg_args = resolve_args(forget, reg, method_args)
    return Objective(
        forget,
        reg,
        _default_coeff(forget, scenario) if forget_coeff is None else float(forget_coeff),
        _default_coeff(reg, scenario) if reg_coeff is None else float(reg_coeff),
        forget_args,
        reg_args,
    )


def resolve(cfg, scenario: str | None = None):
    """``(objective, cfg)``: the run's objective, and a copy of ``cfg`` with every default the
    method decides written in (weights, question mask, qualified method arguments), as
    ``config.yaml`` records it. ``cfg`` itself is not changed."""
    objective = build_objective(cfg.method, cfg.method_args, cfg.forget_coeff, cfg.reg_coeff, scenario)
    resolved = dataclasses.replace(
        cfg,
        forget_coeff=objective.forget_coeff,
        reg_coeff=objective.reg_coeff,
        mask=objective.forget.mask_question if cfg.mask is None else cfg.mask,
        method_args=objective.method_args,
    )
    return objective, resolved


def describe() -> list[dict]:
    """Every forget term and regulariser: name, kind, description, needs, arguments, weight, source
    (``unlearn methods`` and docs/methods.md's table are made from it)."""
    rows = []
    for kind, terms in (("forget term", FORGET_TERMS), ("regulariser", REGULARIZERS)):
        for t in terms.values():
            weight = f"{t.coeff:g}" + "".join(f", {k} {v:g}" for k, v in t.scenario_coeff.items())
            rows.append(
                {
                    "name": t.name,
                    "kind": kind,
                    "description": t.doc,
                    "needs": ", ".join(t.needs) or "–",
                    "arguments": ", ".join(f"{k}={v}" for k, v in t.args.items()) or "–",
                    "weight": weight,
                    "source": t.source,
                }
            )
    return rows


def methods_table() -> str:
    """docs/methods.md's methods table, in Markdown."""
    lines = [
        "| term | kind | what it does | needs | arguments (defaults) | default weight | source |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| `{r['name']}` | {r['kind']} | {r['description']} | {r['needs']} | {r['arguments']} | "
        f"{r['weight']} | {r['source']} |"
        for r in describe()
    ]
    return "\n".join(lines)


FINETUNE = Objective(Term("NLL", lambda v: v.mean_nll("qa"), ("qa",), doc="fine-tuning", label="nll"), None)


def print_methods(wide: bool = False) -> None:
    """``unlearn methods``: the table of :func:`describe` at the terminal's width (four columns under
    140 characters, e.g. in a pipe), every column with ``wide``."""
    console = Console(width=180) if wide else Console()
    columns = ["name", "kind", "description", "needs", "arguments", "weight", "source"]
    if not wide and console.width < 140:
        columns = ["name", "description", "arguments", "weight"]
    table = Table(title="Forget terms and regularisers: --method FORGET[+REG], --method-arg [TERM.]NAME=VALUE")
    for column in columns:
        table.add_column(column, overflow="fold")
    for r in describe():
        table.add_row(*(r[c] for c in columns))
    console.print(table)
    print(
        "The weight is the term's coefficient in forget_coeff * forget + reg_coeff * reg (per scenario where "
        "it differs). LLMU's regulariser is part of it."
    )
