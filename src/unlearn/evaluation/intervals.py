"""Uncertainty of set-level numbers: bootstrap intervals over a set's items, and what a KS test can say.

A metric averaged over a set's items is an estimate; its 95% interval here is the percentile
bootstrap over those items (:func:`bootstrap`): the items of every set are resampled with
replacement :data:`RESAMPLES` times (independently per set, one shared draw for all the metrics of
a set, since they describe the same items), the whole summary is recomputed from each resample,
and the interval is the 2.5th and 97.5th percentiles of each value. Numbers built from several
sets (Model Utility, a harmonic mean; Forget Efficacy, one minus a mean; Forget Quality, a KS
test's p-value) get their interval the same way, through their definitions. The draw is seeded
(:data:`SEED`): the same evaluation gives the same intervals.

A KS test on ``n`` against ``m`` items can only take a few values (:func:`ks_resolution`): its
p-value cannot go below a floor set by ``n`` and ``m`` alone, so Forget Quality on a few items
cannot tell much, whatever the model did.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy import stats

RESAMPLES = 1000
LEVEL = 0.95
SEED = 0
SMALL_KS = 30  # below this many items a Forget Quality is flagged as coarse


@dataclass(frozen=True)
class Interval:
    value: float
    lo: float
    hi: float

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def covers(self, x: float) -> bool:
        return self.lo <= x <= self.hi

    def text(self, digits: int = 3) -> str:
        """``value ± half-width`` (a symmetric reading of the percentile interval ``[lo, hi]``)."""
        return f"{self.value:.{digits}f} ± {self.half_width:.{digits}f}"


def bootstrap(
    sizes: Mapping[str, int],
    statistic: Callable[[Mapping[str, np.ndarray]], Mapping[str, float | None]],
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
) -> dict[str, Interval]:
    """Percentile-bootstrap intervals of every value ``statistic`` returns.

    ``sizes``: the number of items of each group (set); ``statistic(indices)``: the summary computed
    on the items ``indices[group]`` (an integer array per group; the identity gives the point
    values). A value that is None or not finite on the whole data has no interval; resamples on
    which it is not finite are left out of its percentiles.
    """
    if resamples < 1 or not 0 < level < 1:
        raise ValueError(f"resamples must be >= 1 and level in (0, 1), got {resamples}, {level}")
    point = statistic({g: np.arange(n) for g, n in sizes.items()})
    keys = [k for k, v in point.items() if v is not None and math.isfinite(v)]
    rng = np.random.default_rng(seed)
    draws = {k: np.empty(resamples) for k in keys}
    for b in range(resamples):
        idx = {g: rng.integers(0, n, n) if n else np.arange(0) for g, n in sizes.items()}
        values = statistic(idx)
        for k in keys:
            v = values.get(k)
            draws[k][b] = np.nan if v is None else v
    return percentile_intervals({k: point[k] for k in keys}, draws, level)


def percentile_intervals(point: Mapping[str, float], draws: Mapping[str, np.ndarray], level: float = LEVEL):
    """``{key: Interval}``: each point value with the percentiles of its resampled values (the
    non-finite ones left out; a key without any finite draw has no interval)."""
    tail = (1 - level) / 2 * 100
    out = {}
    for k, value in point.items():
        d = np.asarray(draws[k], float)
        finite = d[np.isfinite(d)]
        if finite.size == 0:
            continue
        lo, hi = np.percentile(finite, [tail, 100 - tail])
        out[k] = Interval(float(value), float(min(lo, value)), float(max(hi, value)))
    return out


def mean_of(values: np.ndarray, idx: np.ndarray) -> float | None:
    """The mean of the available (not NaN) values among ``values[idx]``, or None when none is."""
    chosen = values[idx]
    chosen = chosen[~np.isnan(chosen)]
    return float(chosen.mean()) if chosen.size else None


@dataclass(frozen=True)
class KsResolution:
    """What a two-sample KS test on ``n`` and ``m`` items can report."""

    n: int
    m: int
    smallest_p: float  # the p-value of two fully separated samples
    distinct_values: int  # how many p-values the test can return at all

    @property
    def coarse(self) -> bool:
        return min(self.n, self.m) < SMALL_KS

    def text(self) -> str:
        return (
            f"KS test on {self.n} vs {self.m} items: {self.distinct_values} possible values, "
            f"smallest p {self.smallest_p:.2g}"
        )


def ks_resolution(n: int, m: int) -> KsResolution:
    """What ``scipy.stats.ks_2samp`` can return on ``n`` against ``m`` distinct values: the smallest
    p-value (two fully separated samples) and the number of distinct p-values.

    With ``n == m`` (a retain model on the same items) the statistic takes each value ``k/n``, got by
    shifting one sample by ``k``; otherwise every interleaving is tried when there are at most
    20,000 of them, and beyond that the count is that of ``min(n, m)`` equal samples (a lower bound)."""
    if n < 1 or m < 1:
        raise ValueError(f"a KS test needs items on both sides, got {n} and {m}")
    if n == m:
        pvalues = {_p(np.arange(n), np.arange(k, n + k)) for k in range(1, n + 1)}
    elif math.comb(n + m, n) <= 20_000:
        pvalues = set()
        for ones in itertools.combinations(range(n + m), n):
            chosen = set(ones)
            pvalues.add(_p(np.array(ones), np.array([i for i in range(n + m) if i not in chosen])))
    else:
        k = min(n, m)
        pvalues = {_p(np.arange(k), np.arange(j, k + j)) for j in range(1, k + 1)}
    smallest = _p(np.arange(n), np.arange(n, n + m))
    return KsResolution(n, m, smallest, len(pvalues))


def _p(a: np.ndarray, b: np.ndarray) -> float:
    with warnings.catch_warnings():  # large samples: scipy says it falls back to the asymptotic p (as ks_2samp does)
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(f"{float(stats.ks_2samp(a, b).pvalue):.10g}")


def read_intervals(path) -> dict[str, Interval]:
    """The intervals of an evaluation folder's ``intervals.json`` ({} when it has none)."""
    file = Path(path) / "intervals.json"
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))["intervals"]
        return {k: Interval(float(v["value"]), float(v["lo"]), float(v["hi"])) for k, v in raw.items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def as_json(intervals: Mapping[str, Interval], **extra) -> dict:
    """``intervals.json``: each value with its interval, and how they were computed."""
    return {
        "method": "percentile bootstrap over items",
        "resamples": RESAMPLES,
        "level": LEVEL,
        "seed": SEED,
        **extra,
        "intervals": {k: asdict(v) for k, v in intervals.items()},
    }


def print_table(title: str, first: str, rows, summary: dict, intervals: dict | None = None) -> None:
    """A protocol's summary at the terminal: one row per ``(what it says, key)`` of ``rows`` whose value
    is a finite number, with its 95% interval, then the reasons of what is unavailable."""
    table = Table(title=title)
    for column in (first, "metric", "value", "95% interval"):
        table.add_column(column, justify="left" if column in (first, "metric") else "right")
    for what, key in rows:
        v = summary.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            iv = (intervals or {}).get(key)
            table.add_row(what, key, f"{v:.4f}", f"[{iv.lo:.4f}, {iv.hi:.4f}]" if iv else "")
    console = Console()
    console.print(table)
    for key, reason in summary.get("unavailable", {}).items():
        console.print(f"{key}: {reason}")
