"""Two runs compared on the same items: the paired difference, its interval and a p-value.

For each evaluation set the two runs answered, the items are matched by question. A metric's
difference ``B − A`` is the mean of the per-item differences; its 95% interval is the percentile
bootstrap over the matched items (one draw for every metric of the set, as in :mod:`.intervals`),
and its p-value the two-sided paired sign-flip permutation test (:data:`PERMUTATIONS` seeded random
flips of the per-item differences; ``scipy.stats.permutation_test``). Model Utility and Forget
Efficacy are compared through their definitions on the same resampled items (interval only). A
difference whose interval covers 0, or whose p-value is 0.05 or more, is *not distinguishable*.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from unlearn.evaluation.intervals import Interval, bootstrap, mean_of

PERMUTATIONS = 9999
ALPHA = 0.05
SEED = 0


@dataclass(frozen=True)
class Difference:
    key: str  # "Forget ROUGE", "Model Utility"
    a: float
    b: float
    diff: Interval  # B − A, with its 95% interval
    p_value: float | None  # paired permutation test; None for composites
    n: int  # matched items

    @property
    def distinguishable(self) -> bool:
        """The interval excludes 0 and, where there is one, the permutation test agrees (p < 0.05): on a
        few items a percentile interval runs narrow while the exact test cannot reach 0.05."""
        return not self.diff.covers(0.0) and (self.p_value is None or self.p_value < ALPHA)

    def as_dict(self) -> dict:
        return {
            "a": self.a,
            "b": self.b,
            "difference": self.diff.value,
            "lo": self.diff.lo,
            "hi": self.diff.hi,
            "p_value": self.p_value,
            "items": self.n,
            "distinguishable": self.distinguishable,
        }


def _paired_p(d: np.ndarray) -> float:
    if d.size == 0 or np.allclose(d, 0):
        return 1.0
    res = stats.permutation_test(
        (d,),
        np.mean,
        permutation_type="samples",
        n_resamples=PERMUTATIONS,
        alternative="two-sided",
        random_state=SEED,
    )
    return float(res.pvalue)


def compare(
    a_sets: dict[str, dict[str, dict]],
    b_sets: dict[str, dict[str, dict]],
    metrics: dict[str, str],
    composites=None,
    keep=None,
) -> list[Difference]:
    """Paired differences of two runs. ``*_sets``: per set, the per-item records by question;
    ``metrics``: summary metric name -> record key; ``composites(means) -> dict``: the values built
    from the per-set metric means (Model Utility, Forget Efficacy), compared too; ``keep``: only these
    differences returned (every metric still enters the composites)."""
    matched = {s: [q for q in a_sets[s] if q in b_sets.get(s, {})] for s in a_sets}
    matched = {s: qs for s, qs in matched.items() if qs}
    values = {
        side: {
            s: {
                m: np.array([np.nan if (v := recs[s][q].get(k)) is None else float(v) for q in qs])
                for m, k in metrics.items()
            }
            for s, qs in matched.items()
        }
        for side, recs in (("a", a_sets), ("b", b_sets))
    }

    def statistic(idx) -> dict:
        out = {}
        means = {}
        for side in ("a", "b"):
            means[side] = {s: {m: mean_of(v, idx[s]) for m, v in by.items()} for s, by in values[side].items()}
        for s in matched:
            for m in metrics:
                x, y = means["a"][s][m], means["b"][s][m]
                out[f"{s} {m}"] = None if x is None or y is None else y - x
        if composites is not None:
            try:
                ca, cb = composites(means["a"]), composites(means["b"])
            except ValueError:
                return out
            out.update({k: cb[k] - ca[k] for k in ca if k in cb})
        return out

    intervals = bootstrap({s: len(qs) for s, qs in matched.items()}, statistic)
    full = {s: np.arange(len(qs)) for s, qs in matched.items()}
    means = {
        side: {s: {m: mean_of(v, full[s]) for m, v in by.items()} for s, by in values[side].items()}
        for side in ("a", "b")
    }
    totals = {side: composites(means[side]) if composites is not None else {} for side in ("a", "b")}
    out = []
    for key, iv in intervals.items():
        if keep is not None and key not in keep:
            continue
        set_name = next((s for s in matched if key.startswith(s + " ") and key[len(s) + 1 :] in metrics), None)
        if set_name is not None:
            m = key[len(set_name) + 1 :]
            d = values["b"][set_name][m] - values["a"][set_name][m]
            d = d[~np.isnan(d)]
            out.append(Difference(key, means["a"][set_name][m], means["b"][set_name][m], iv, _paired_p(d), d.size))
        elif key in totals["a"] and key in totals["b"]:
            n = min(len(qs) for qs in matched.values())
            out.append(Difference(key, totals["a"][key], totals["b"][key], iv, None, n))
    return out
