"""Intervals on set-level numbers (unlearn.evaluation.intervals) and their place in an evaluation."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy import stats

from unlearn.evaluation.intervals import Interval, bootstrap, ks_resolution, mean_of


def _mean_interval(values, **kw) -> Interval:
    values = np.asarray(values, float)
    return bootstrap({"s": len(values)}, lambda idx: {"mean": mean_of(values, idx["s"])}, **kw)["mean"]


def test_a_constant_metric_has_a_zero_width_interval():
    iv = _mean_interval([0.25] * 40)
    assert (iv.value, iv.lo, iv.hi, iv.half_width) == (0.25, 0.25, 0.25, 0.0)


def test_a_mean_interval_covers_the_truth_at_about_the_stated_rate():
    """A seeded simulation: 200 samples of 60 draws from N(0.3, 0.1²); the percentile bootstrap's
    95% interval of the mean should cover 0.3 in about 95% of them (it runs a little narrow on
    small samples: between 88% and 99%)."""
    rng = np.random.default_rng(123)
    covered = [_mean_interval(rng.normal(0.3, 0.1, 60), resamples=400, seed=i).covers(0.3) for i in range(200)]
    assert 0.88 <= np.mean(covered) <= 0.99


def test_the_interval_is_the_percentiles_of_the_resampled_means():
    """Hand check on four items: the bootstrap means are means of four draws from {0, 0, 0, 1},
    so they lie on multiples of 0.25 and the interval's ends are such multiples."""
    iv = _mean_interval([0, 0, 0, 1], resamples=2000)
    assert iv.value == 0.25
    assert iv.lo == 0.0 and iv.hi in (0.75, 1.0)
    assert (iv.lo * 4) % 1 == 0 and (iv.hi * 4) % 1 == 0


def test_the_same_seed_gives_the_same_interval_and_another_seed_may_not():
    values = np.linspace(0, 1, 25) ** 2
    assert _mean_interval(values, seed=3) == _mean_interval(values, seed=3)
    assert _mean_interval(values, seed=3) != _mean_interval(values, seed=4)


def test_composites_use_one_draw_per_set_and_skip_missing_values():
    a = np.array([0.2, 0.4, np.nan, 0.6])
    b = np.array([0.5, 0.5, 0.5])

    def statistic(idx):
        ma, mb = mean_of(a, idx["a"]), mean_of(b, idx["b"])
        return {"a": ma, "b": mb, "hmean": None if ma is None else float(stats.hmean([ma, mb]))}

    out = bootstrap({"a": 4, "b": 3}, statistic)
    assert out["a"].value == pytest.approx(0.4) and out["b"] == Interval(0.5, 0.5, 0.5)
    assert out["hmean"].value == pytest.approx(stats.hmean([0.4, 0.5]))
    assert out["hmean"].lo < out["hmean"].value < out["hmean"].hi
    with pytest.raises(ValueError):
        bootstrap({"a": 4}, statistic, resamples=0)


@pytest.mark.parametrize("n,m", [(1, 1), (2, 2), (3, 3), (4, 4), (7, 7), (3, 5), (6, 4)])
def test_ks_resolution_against_scipy(n, m):
    """Every way of interleaving n and m distinct items: the p-values scipy's ks_2samp returns are
    exactly as many as ks_resolution says, and the smallest is its floor."""
    pvalues = set()
    for ones in itertools.combinations(range(n + m), n):
        a = list(ones)
        b = [i for i in range(n + m) if i not in ones]
        pvalues.add(round(float(stats.ks_2samp(a, b).pvalue), 12))
    res = ks_resolution(n, m)
    assert res.distinct_values == len(pvalues)
    assert res.smallest_p == pytest.approx(min(pvalues))
    assert res.coarse


def test_forty_items_can_give_at_most_40_forget_qualities():
    res = ks_resolution(40, 40)
    assert res.smallest_p < 1e-20 and res.distinct_values <= 40  # k/40 for k = 1..40 (some round to p = 1)
    assert f"{res.distinct_values} possible values" in res.text() and not res.coarse


def test_an_evaluation_writes_intervals_beside_the_summary(tmp_path, capsys):
    """``intervals.json`` beside an unchanged ``summary.json``: every summary value with its interval,
    Forget Quality's resolution, and the composites marked when a part is missing."""
    from unlearn.__main__ import main
    from unlearn.synthetic import write_synthetic

    data = write_synthetic(tmp_path / "data", n_authors=20, qa_per_author=4, seed=0)
    out = tmp_path / "ev"
    args = ["eval", "--model", "tiny", "--data", str(data), "--nli", "none", "--out", str(out)]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    saved = json.loads((out / "intervals.json").read_text())
    assert saved["resamples"] == 1000 and saved["level"] == 0.95
    numbers = {k for k, v in summary.items() if isinstance(v, float)}
    assert numbers <= set(saved["intervals"])
    for key, iv in saved["intervals"].items():
        assert iv["value"] == pytest.approx(summary[key]) and iv["lo"] <= iv["value"] <= iv["hi"]
    assert summary["partial"]["Model Utility"] == "15 of 18 values"  # no Entailment Score
    assert summary["partial"]["Forget Efficacy"] == "4 of 5 values"
    printed = capsys.readouterr().out
    assert "Model Utility*:" in printed and "15 of 18 values" in printed and "±" in printed


def test_the_vectorised_model_utility_is_model_utility_row_by_row():
    from unlearn.evaluation import metrics as M
    from unlearn.evaluation.six_metrics import _hmean_rows

    rng = np.random.default_rng(5)
    x = rng.random((50, 18))
    x[rng.random((50, 18)) < 0.2] = np.nan  # some values unavailable
    x[3, 4] = 0.0  # a zero makes the harmonic mean 0
    got = _hmean_rows(x)
    for row, value in zip(x, got, strict=True):
        assert value == pytest.approx(M.model_utility(list(row)))
    assert np.isnan(_hmean_rows(np.full((1, 3), np.nan))[0])


def test_log_mean_leaves_out_nans_by_hand():
    from unlearn.evaluation.log_intervals import _mean

    assert _mean(np.array([1.0, 2.0, 6.0])) == 3.0
    assert _mean(np.array([1.0, np.nan, 3.0])) == 2.0
    assert _mean(np.array([np.nan, np.nan])) is None and _mean(np.array([])) is None
