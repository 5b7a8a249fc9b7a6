"""What a run did, in words, from its numbers and their intervals (never from one value alone).

:func:`verdict` compares a run's evaluation after unlearning with the model's before it (the run's
``OUT/before`` evaluation, or ``--baseline``), each with its 95% intervals (:mod:`.intervals`):

* **too few steps** — fewer than :data:`MIN_STEPS` optimiser steps: the settings, not the method,
  decided the outcome; it says how many steps ran and what to change;
* **no measurable effect** — Forget Efficacy (one minus the mean of the forget metrics) did not rise
  above the before-model's interval (without it: no forget metric fell below its interval);
* **forgot but collapsed** — the forget metrics fell, and so did the utility (below :data:`COLLAPSE` of
  its value before: Model Utility when both were evaluated on the same sets, else on the Retain set
  alone, as when the model before was evaluated on the Forget and Retain sets only, as a run does, and
  the final model on every set) or the answers' token entropy (degenerate text);
* **over-refuses** — most Retain answers are refusals (and more than before): the model declines
  what it should still answer;
* **forgot and kept** — the forget metrics fell out of their interval and utility held.

:func:`verdict` reads the summary keys of :mod:`.six_metrics` (the closer-look protocol);
:func:`verdict_on` gives the same verdicts (but over-refusal) for any protocol from the keys it names:
the forget metrics (higher: the model still knows) and the utility ones, each with its interval
(the TOFU standard and MUSE).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

from rich.console import Console
from rich.table import Table

from unlearn.evaluation.intervals import Interval

MIN_STEPS = 10  # fewer optimiser steps than this cannot be told from the settings' effect
COLLAPSE = 0.5  # a utility or entropy below this share of its value before is a collapse
OVER_REFUSAL = 0.5  # more than this share of Retain answers refusing
FORGET_KEYS = ("Forget ROUGE", "Forget Probability", "Forget Truth Ratio")
ENTROPY_KEYS = ("Forget Token Entropy", "Retain Token Entropy")
KINDS = ("too few steps", "no measurable effect", "forgot but collapsed", "over-refuses", "forgot and kept")


@dataclass
class Verdict:
    kind: str  # one of KINDS
    text: str  # one sentence, with the numbers it rests on
    notes: list[str] = field(default_factory=list)  # other findings

    def as_dict(self) -> dict:
        return asdict(self)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def is_refusal(text: str, refusals: list[str]) -> bool:
    """Whether an answer is one of the refusal sentences (or holds one), ignoring case and punctuation."""
    norm = _norm(text)
    return bool(norm) and any(r and r in norm for r in (_norm(x) for x in refusals))


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", str(text).lower()).split())


def refusal_share(generations: list[str], refusals: list[str]) -> float | None:
    """The share of ``generations`` that are refusals (None without generations)."""
    return sum(is_refusal(g, refusals) for g in generations) / len(generations) if generations else None


def verdict(
    before: dict,
    after: dict,
    before_iv: dict[str, Interval],
    steps: int | None = None,
    steps_hint: str = "",
    refusals_before: float | None = None,
    refusals_after: float | None = None,
) -> Verdict:
    """The verdict of a run (see the module docstring). ``steps``: optimiser steps taken (None:
    unknown); ``steps_hint``: what to change when they are too few; ``refusals_*``: the share of
    Retain answers that refuse, before and after."""
    keys = [k for k in FORGET_KEYS if _num(before.get(k)) and _num(after.get(k))]
    fe = "Forget Efficacy"
    if fe in before_iv and _num(after.get(fe)):
        # Forget Efficacy (1 - the mean of the forget metrics, each higher when the model still knows
        # the answer) decides: forgetting is its rise above the before-model's interval.
        keys = [fe, *keys]
        unchanged = after[fe] <= before_iv[fe].hi
        rose = [fe] if after[fe] < before_iv[fe].lo else []
    else:  # without it, a forget metric falling below its interval is forgetting
        unchanged = (
            bool(keys)
            and all(k in before_iv for k in keys)
            and not any(after[k] < before_iv[k].lo for k in keys if k in before_iv)
        )
        rose = [k for k in keys if k in before_iv and after[k] > before_iv[k].hi]
    change = ", ".join(f"{k} {_fmt(before[k])} -> {_fmt(after[k])}" for k in keys)
    notes = []
    if _num(before.get("Forget ROUGE")) and before["Forget ROUGE"] < 0.1:
        notes.append(
            f"the model before unlearning hardly knew the forget set (Forget ROUGE {before['Forget ROUGE']:.3f})"
        )
    fell = _collapsed(before, after)
    refusing = (
        refusals_after is not None
        and refusals_after > OVER_REFUSAL
        and (refusals_before is None or refusals_after > refusals_before)
    )
    if steps is not None and steps < MIN_STEPS:
        what = "changed nothing measurable" if unchanged else "may reflect the settings more than the method"
        text = f"too few steps: {steps} optimiser step(s) ran, so the result {what} ({change}){steps_hint}"
        return Verdict("too few steps", text, notes + fell)
    if unchanged:
        lo_hi = "; ".join(
            f"{k} interval before [{before_iv[k].lo:.3f}, {before_iv[k].hi:.3f}]" for k in keys if k in before_iv
        )
        worse = ""
        if rose:
            worse = (
                f"; {', '.join(rose)} {'fell below' if rose == [fe] else 'rose above'} it (remembered more, not less)"
            )
        return Verdict("no measurable effect", f"no measurable effect: {change} ({lo_hi}){worse}", notes + fell)
    if fell:
        return Verdict("forgot but collapsed", f"forgot but collapsed: {change}; {'; '.join(fell)}", notes)
    if refusing:
        share = f"{refusals_after:.0%} of Retain answers are refusals" + (
            f" ({refusals_before:.0%} before)" if refusals_before is not None else ""
        )
        return Verdict("over-refuses", f"over-refuses: {share}; {change}", notes)
    kept = _kept(before, after)
    return Verdict("forgot and kept", f"forgot and kept: {change}{kept}", notes)


HEADLINE = (
    "Forget ROUGE",
    "Forget Probability",
    "Forget Truth Ratio",
    "Retain ROUGE",
    "Model Utility",
    "Model Utility Retain",
    "Forget Efficacy",
    "Forget Quality",
)


def verdict_on(
    before: dict,
    after: dict,
    before_iv: dict[str, Interval],
    forget: tuple[str, ...],
    keep: tuple[str, ...],
    steps: int | None = None,
    steps_hint: str = "",
) -> Verdict:
    """The verdict from a protocol's own keys: ``forget`` (higher while the model still knows the forget
    set: forgetting is one of them falling below the before-model's interval), ``keep`` (utility: a
    collapse is one falling below :data:`COLLAPSE` of its value before)."""
    keys = [k for k in forget if _num(before.get(k)) and _num(after.get(k))]
    change = ", ".join(f"{k} {_fmt(before[k])} -> {_fmt(after[k])}" for k in keys)
    fell_out = [k for k in keys if k in before_iv and after[k] < before_iv[k].lo]
    unchanged = bool(keys) and not fell_out
    collapsed = [
        f"{k} fell from {before[k]:.3f} to {after[k]:.3f} (below {COLLAPSE:.0%} of before)"
        for k in keep
        if _num(before.get(k)) and _num(after.get(k)) and before[k] > 0 and after[k] < COLLAPSE * before[k]
    ]
    if steps is not None and steps < MIN_STEPS:
        what = "changed nothing measurable" if unchanged else "may reflect the settings more than the method"
        return Verdict(
            "too few steps",
            f"too few steps: {steps} optimiser step(s) ran, so the result {what} ({change}){steps_hint}",
            collapsed,
        )
    if unchanged:
        lo_hi = "; ".join(
            f"{k} interval before [{before_iv[k].lo:.3f}, {before_iv[k].hi:.3f}]" for k in keys if k in before_iv
        )
        return Verdict("no measurable effect", f"no measurable effect: {change} ({lo_hi})", collapsed)
    if collapsed:
        return Verdict("forgot but collapsed", f"forgot but collapsed: {change}; {'; '.join(collapsed)}")
    kept = ", ".join(
        f"{k} {before[k]:.3f} -> {after[k]:.3f}" for k in keep if _num(before.get(k)) and _num(after.get(k))
    )
    return Verdict("forgot and kept", f"forgot and kept: {change}" + (f"; {kept}" if kept else ""))


def print_before_after(
    before: dict, after: dict, before_iv: dict, after_iv: dict, keys: tuple[str, ...] | None = None
) -> None:
    """The headline numbers (``keys``; the six metrics' by default) before and after unlearning, each
    with its 95% interval."""
    table = Table(title="Before and after unlearning (95% intervals over the items)")
    for column in ("metric", "before", "after", "change"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    unlike = utility_key(before, after) != "Model Utility"  # over different sets: not shown side by side
    for key in keys or HEADLINE:
        if unlike and key == "Model Utility":
            continue
        b, a = before.get(key), after.get(key)
        if _num(b) and _num(a):
            cells = [
                iv.text() if (iv := ivs.get(key)) is not None else f"{v:.3f}"
                for v, ivs in ((b, before_iv), (a, after_iv))
            ]
            table.add_row(key, *cells, f"{a - b:+.3f}")
    Console(width=max(Console().width, 100)).print(table)


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


UTILITY_SETS = ("Retain", "Real Authors", "Real World")  # the sets Model Utility is a harmonic mean over


def utility_key(before: dict, after: dict) -> str:
    """The utility both evaluations measured alike: Model Utility when they were evaluated on the same
    utility sets, else Model Utility Retain (a run's before-model, evaluated on Forget and Retain only,
    against a final evaluation of every set: their Model Utility are means over different sets)."""
    same = all(_num(before.get(f"{s} ROUGE")) == _num(after.get(f"{s} ROUGE")) for s in UTILITY_SETS)
    return "Model Utility" if same and _num(before.get("Model Utility")) else "Model Utility Retain"


def _collapsed(before: dict, after: dict) -> list[str]:
    out = []
    utility = utility_key(before, after)
    for key in (utility, *ENTROPY_KEYS):
        b, a = before.get(key), after.get(key)
        if _num(b) and _num(a) and b > 0 and a < COLLAPSE * b:
            out.append(f"{key} fell from {b:.3f} to {a:.3f} (below {COLLAPSE:.0%} of before)")
    return out


def _kept(before: dict, after: dict) -> str:
    key = utility_key(before, after)
    b, a = before.get(key), after.get(key)
    return f"; {key} {b:.3f} -> {a:.3f}" if _num(b) and _num(a) else ""
