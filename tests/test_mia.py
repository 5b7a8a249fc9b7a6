"""Membership-inference scores and AUC against hand-derived numbers; the AUC on a memorising model."""

import math
import zlib

import numpy as np
import pytest

from unlearn.evaluation.mia import TokenStats, auc, mia_aucs, scores


def test_auc_counts_pairs_and_half_ties():
    assert auc([3.0, 2.0], [1.0]) == 1.0
    assert auc([1.0], [2.0, 3.0]) == 0.0
    assert auc([1.0, 3.0], [1.0, 2.0]) == pytest.approx((0.5 + 0 + 1 + 1) / 4)
    with pytest.raises(ValueError):
        auc([], [1.0])


def test_scores_by_hand():
    # Five answer tokens, the last the EOS: LOSS and ZLib use all five, Min-K% and Min-K%++ the first four.
    item = TokenStats(np.array([-1.0, -2.0, -3.0, -4.0, -0.5]), np.full(5, -1.0), np.full(5, 2.0), "abcabc")
    s = scores(item, k=0.5)
    assert s["LOSS"] == pytest.approx(-10.5 / 5)
    assert s["ZLib"] == pytest.approx(-2.1 / len(zlib.compress(b"abcabc")))  # the mean loss, not the sum
    assert s["Min-K%"] == pytest.approx(-3.5)  # floor(0.5 * 4) = 2 lowest of the four: -3, -4
    assert s["Min-K%++"] == pytest.approx(((-3 + 1) / 2 + (-4 + 1) / 2) / 2)
    assert scores(item, k=0.1)["Min-K%"] == -4.0  # at least one token
    assert scores(item, k=0.4)["Min-K%"] == -4.0  # floor(1.6) = 1, as open-unlearning (not ceil)
    flat = TokenStats(np.array([-2.0, -1.0]), np.array([-1.0, -1.0]), np.zeros(2), "x")
    assert scores(flat, k=1.0)["Min-K%++"] == pytest.approx(-1.0 / 1e-3)  # sigma^2 floored at 1e-6
    empty = TokenStats(np.array([-1.0]), np.array([-1.0]), np.ones(1), "x")
    assert scores(empty)["Min-K%"] == 0.0  # no token but the EOS: open-unlearning scores it 0


def test_auc_equals_open_unlearnings_orientation():
    """open-unlearning scores like a loss and labels the holdout 1: the same AUC as ours."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    members = list(rng.normal(1, 1, 30)) + [0.5]
    others = list(rng.normal(0, 1, 25)) + [0.5, 0.5]  # ties count half in both
    theirs = roc_auc_score([0] * len(members) + [1] * len(others), [-x for x in members + others])
    assert auc(members, others) == pytest.approx(theirs, abs=1e-12)


def test_privleak_reference_and_memorization_by_hand():
    from unlearn.evaluation.mia import exact_memorization, extraction_strength, privleak, reference_scores

    assert privleak(0.9, 0.5) == pytest.approx(((1 - 0.9) - (1 - 0.5)) / (1 - 0.5) * 100)  # -80: under-unlearned
    assert privleak(0.5, 0.5) == pytest.approx(0.0)
    assert privleak(1.0, 0.5) == pytest.approx(-100.0)
    assert reference_scores([1.0, 2.0], [3.0, 1.5]) == [2.0, -0.5]

    def stats(hits):
        n = len(hits)
        return TokenStats(np.zeros(n), np.zeros(n), np.ones(n), "x", np.array(hits, dtype=bool))

    assert exact_memorization(stats([1, 0, 1, 1, 0])) == pytest.approx(0.75)  # the last (EOS) left out
    assert exact_memorization(stats([1])) is None
    assert extraction_strength(stats([1, 1, 1, 0])) == pytest.approx(1.0)  # every suffix from 0
    assert extraction_strength(stats([0, 1, 1, 0])) == pytest.approx(1 - 1 / 3)  # from position 1
    assert extraction_strength(stats([1, 1, 0, 1])) == pytest.approx(1 / 3)  # last missed: 1/n, as open-unlearning
    assert extraction_strength(stats([1])) == 0.0


def test_members_score_above_nonmembers():
    members = [TokenStats(np.array([-0.1, -0.2, -0.1]), np.zeros(3), np.ones(3), "a") for _ in range(3)]
    others = [TokenStats(np.array([-3.0, -4.0, -0.1]), np.zeros(3), np.ones(3), "a") for _ in range(2)]
    assert mia_aucs(members, others) == {"LOSS": 1.0, "ZLib": 1.0, "Min-K%": 1.0, "Min-K%++": 1.0}
    assert not math.isnan(mia_aucs(others, members)["LOSS"])
