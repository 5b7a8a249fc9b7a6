"""Membership-inference scores and AUC against hand-derived numbers; the AUC on a memorising model."""

import math
import zlib

import numpy as np
import pytest

from unlearn.evals.mia import TokenStats, auc, mia_aucs, scores


def test_auc_counts_pairs_and_half_ties():
    assert auc([3.0, 2.0], [1.0]) == 1.0
    assert auc([1.0], [2.0, 3.0]) == 0.0
    assert auc([1.0, 3.0], [1.0, 2.0]) == pytest.approx((0.5 + 0 + 1 + 1) / 4)
    with pytest.raises(ValueError):
        auc([], [1.0])


def test_scores_by_hand():
    item = TokenStats(np.array([-1.0, -2.0, -3.0, -4.0]), np.array([-1.0, -1.0, -1.0, -1.0]),
                      np.array([2.0, 2.0, 2.0, 2.0]), "abcabc")
    s = scores(item, k=0.5)
    assert s["LOSS"] == pytest.approx(-2.5)
    assert s["Min-K%"] == pytest.approx(-3.5)  # the two lowest: -3, -4
    assert s["Min-K%++"] == pytest.approx(((-3 + 1) / 2 + (-4 + 1) / 2) / 2)
    assert s["ZLib"] == pytest.approx(-10.0 / len(zlib.compress(b"abcabc")))
    assert scores(item, k=0.1)["Min-K%"] == -4.0  # at least one token


def test_members_score_above_nonmembers():
    members = [TokenStats(np.array([-0.1, -0.2]), np.zeros(2), np.ones(2), "a") for _ in range(3)]
    others = [TokenStats(np.array([-3.0, -4.0]), np.zeros(2), np.ones(2), "a") for _ in range(2)]
    assert mia_aucs(members, others) == {"LOSS": 1.0, "ZLib": 1.0, "Min-K%": 1.0, "Min-K%++": 1.0}
    assert not math.isnan(mia_aucs(others, members)["LOSS"])
