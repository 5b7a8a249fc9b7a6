"""Tests for unlearn.evaluation.metrics: hand-derived numbers (worked out in the comments) and ranges."""

import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from unlearn.evaluation import metrics as m

E_INV = math.exp(-1.0)


# --------------------------------------------------------------------------- truth ratio


def test_truth_ratios_is_exp_of_mean_perturbed_minus_paraphrase():
    # mean_k([1, 3]) - 1 = 1 -> e;  mean_k([2, 2]) - 2 = 0 -> 1
    r = m.truth_ratios([1.0, 2.0], [[1.0, 3.0], [2.0, 2.0]])
    np.testing.assert_allclose(r, [math.e, 1.0])


def test_truth_ratio_items_r_above_one():
    # para 1, pert mean 2 -> r = e.
    # forget: 1 - min(e, 1/e) = 1 - e^-1;  others: max(0, 1 - 1/e) = 1 - e^-1
    para, pert = [1.0], [[2.0, 2.0]]
    np.testing.assert_allclose(m.truth_ratio_items(para, pert, forget=True), [1 - E_INV])
    np.testing.assert_allclose(m.truth_ratio_items(para, pert, forget=False), [1 - E_INV])


def test_truth_ratio_items_r_below_one():
    # para 2, pert mean 1 -> r = 1/e.
    # forget: 1 - min(1/e, e) = 1 - e^-1;  others: max(0, 1 - e) = 0
    para, pert = [2.0], [[1.0, 1.0]]
    np.testing.assert_allclose(m.truth_ratio_items(para, pert, forget=True), [1 - E_INV])
    np.testing.assert_allclose(m.truth_ratio_items(para, pert, forget=False), [0.0])


def test_truth_ratio_items_r_equal_one():
    # pert mean (0.5 + 1.5) / 2 = 1 = para -> r = 1 -> both scores 0
    for forget in (True, False):
        np.testing.assert_allclose(m.truth_ratio_items([1.0], [[0.5, 1.5]], forget), [0.0])


def test_truth_ratio_aggregate_is_paper_formula():
    # items r = e and r = 1/e.
    # forget: 1 - mean(min(r, 1/r)) = 1 - e^-1;  others: mean(1 - e^-1, 0) = (1 - e^-1) / 2
    para, pert = [1.0, 2.0], [[2.0, 2.0], [1.0, 1.0]]
    r = m.truth_ratios(para, pert)
    assert m.truth_ratio(para, pert, forget=True) == pytest.approx(1 - np.mean(np.minimum(r, 1 / r)))
    assert m.truth_ratio(para, pert, forget=True) == pytest.approx(1 - E_INV)
    assert m.truth_ratio(para, pert, forget=False) == pytest.approx((1 - E_INV) / 2)


def test_truth_ratio_items_extreme_gap_does_not_overflow():
    # d = 1000 would overflow exp(); the scores are computed from d directly.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(m.truth_ratio_items([0.0], [[1000.0]], True), [1.0])
        np.testing.assert_allclose(m.truth_ratio_items([1000.0], [[0.0]], False), [0.0])


@pytest.mark.parametrize(
    ("para", "pert"),
    [
        ([1.0, 2.0], [[1.0], [2.0], [3.0]]),  # row count mismatch
        ([1.0], [1.0]),  # pert must be 2-D
        ([[1.0]], [[1.0]]),  # para must be 1-D
        ([1.0], np.zeros((1, 0))),  # K = 0
    ],
)
def test_truth_ratio_rejects_bad_shapes(para, pert):
    with pytest.raises(ValueError):
        m.truth_ratio_items(para, pert, forget=True)


def test_truth_ratio_of_no_items_raises():
    with pytest.raises(ValueError):
        m.truth_ratio(np.zeros(0), np.zeros((0, 3)), forget=True)


# --------------------------------------------------------------------------- probability


def test_probability():
    # exp(-0) = 1, exp(-ln 2) = 0.5 -> mean 0.75
    np.testing.assert_allclose(m.probability_items([0.0, math.log(2)]), [1.0, 0.5])
    assert m.probability([0.0, math.log(2)]) == pytest.approx(0.75)


def test_normalized_probability_equal_nlls():
    # all four p equal -> p / 4p = 1/4
    items = m.normalized_probability_items([1.3, 0.2], [[1.3] * 3, [0.2] * 3])
    np.testing.assert_allclose(items, [0.25, 0.25])
    assert m.normalized_probability([1.3], [[1.3] * 3]) == pytest.approx(0.25)


def test_normalized_probability_hand_value():
    # p(a) = e^0 = 1, p(pert) = e^-ln2 = 0.5 each, K = 2 -> 1 / (1 + 0.5 + 0.5) = 0.5
    # p(a) = e^-ln4 = 0.25, p(pert) = 1 -> 0.25 / 1.25 = 0.2
    items = m.normalized_probability_items([0.0, math.log(4)], [[math.log(2)] * 2, [0.0, math.inf]])
    np.testing.assert_allclose(items, [0.5, 0.2])


def test_normalized_probability_is_stable_for_large_nll():
    # exp(-1000) underflows to 0, a naive ratio would be 0/0; the answer is 1/3
    np.testing.assert_allclose(m.normalized_probability_items([1000.0], [[1000.0, 1000.0]]), [1 / 3])


# --------------------------------------------------------------------------- token entropy


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ([], 0.0),
        (["a"], 0.0),  # one token: defined as 0
        (["a", "b"], 1.0),  # H = 1 bit, log2(2) = 1
        (["a", "a"], 0.0),  # H = 0
        (["a", "a", "b", "b"], 0.5),  # H = 1 bit, log2(4) = 2
        (["a", "b", "c", "d"], 1.0),  # H = 2 bits, log2(4) = 2
        # H = 3/4 log2(4/3) + 1/4 log2(4) = 0.311278 + 0.5 = 0.811278; / 2
        (["a", "a", "a", "b"], 0.4056390622295664),
    ],
)
def test_token_entropy(tokens, expected):
    assert m.token_entropy(tokens) == pytest.approx(expected)


# --------------------------------------------------------------------------- ROUGE-L recall


def test_rouge_l_recall_hand_values():
    assert m.rouge_l_recall("the cat sat down", "the cat sat down") == pytest.approx(1.0)
    # LCS "the cat" = 2 of the reference's 4 words
    assert m.rouge_l_recall("the cat", "the cat sat down") == pytest.approx(0.5)
    # recall, not precision: extra predicted words cost nothing
    assert m.rouge_l_recall("well the cat sat down today", "the cat sat down") == pytest.approx(1.0)
    assert m.rouge_l_recall("", "the cat") == 0.0


def test_rouge_l_recall_uses_stemmer():
    # "running" stems to "run": 3 of 3 words match (2 of 3 without stemming)
    assert m.rouge_l_recall("he is run", "he is running") == pytest.approx(1.0)


def test_rouge_l_recall_items_and_cached_scorer():
    items = m.rouge_l_recall_items(["the cat", "a dog"], ["the cat sat down", "a dog"])
    np.testing.assert_allclose(items, [0.5, 1.0])
    assert m.rouge_scorer() is m.rouge_scorer()  # one scorer per setting (the one factory)
    assert m.rouge_scorer(("rougeL",), stemmer=False) is not m.rouge_scorer()
    with pytest.raises(ValueError):
        m.rouge_l_recall_items(["a"], ["a", "b"])


def test_stemming_scorer_equals_rouge_score_default(shared_data):
    """The scorer that remembers stems gives rouge_score's own stemming scorer's values, on the
    release's answers and on words the Porter stemmer changes (stems looked up a second time)."""
    from rouge_score.rouge_scorer import RougeScorer

    texts = [
        json.loads(x)["answer"] for x in (shared_data / "tofu" / "retain_perturbed.json").read_text().splitlines()[:60]
    ]
    texts += ["Running runners ran; the generously-generous RUNS!", "a an the of is", "", "1990s caf\u00e9 naïve"]
    plain, ours = RougeScorer(["rouge1", "rougeL"], use_stemmer=True), m.rouge_scorer(("rouge1", "rougeL"))
    assert isinstance(ours._tokenizer, m.StemmingTokenizer)
    for _ in range(2):  # the second pass reads remembered stems
        for a, b in zip(texts, texts[1:] + texts[:1], strict=True):
            assert ours.score(a, b) == plain.score(a, b) and ours.score(a, a + " " + b) == plain.score(a, a + " " + b)
    assert ours._tokenizer.stem.cache_info().hits > 0


# --------------------------------------------------------------------------- cosine, entailment


def test_cosine_items():
    gen = [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [3.0, 4.0]]
    ref = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 0.0], [1.0, 2.0], [6.0, 8.0]]
    # same, orthogonal, opposite (-1 clipped to 0), 45 degrees, zero vector, same direction
    np.testing.assert_allclose(m.cosine_items(gen, ref), [1.0, 0.0, 0.0, 1 / math.sqrt(2), 0.0, 1.0])


def test_cosine_items_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        m.cosine_items(np.ones((2, 3)), np.ones((2, 4)))


def test_entailment_items():
    labels = ["entailment", "ENTAILMENT", "neutral", "entailment", "contradiction"]
    rouge = [0.5, 0.1, 0.9, 0.05, 1.0]
    # counted only when entailed AND rouge >= 0.1 (the 0.05 item is below the floor)
    np.testing.assert_allclose(m.entailment_items(labels, rouge), [1.0, 1.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        m.entailment_items(["entailment"], [0.5, 0.5])


# --------------------------------------------------------------------------- aggregates


def test_harmonic_mean():
    # 2 / (1/1 + 1/0.5) = 2 / 3
    assert m.harmonic_mean([1.0, 0.5]) == pytest.approx(2 / 3)
    assert m.harmonic_mean([0.5]) == pytest.approx(0.5)
    assert m.harmonic_mean([1.0, 0.0]) == 0.0
    assert m.harmonic_mean([1.0, -0.1]) == 0.0
    assert math.isnan(m.harmonic_mean([1.0, math.nan]))
    with pytest.raises(ValueError):
        m.harmonic_mean([])


def test_model_utility_skips_missing_values():
    assert m.model_utility([1.0, None, 0.5, math.nan]) == pytest.approx(2 / 3)
    assert m.model_utility([0.3, 0.0, None]) == 0.0
    with pytest.raises(ValueError):
        m.model_utility([None, math.nan])


def test_forget_efficacy():
    # 1 - (0.2 + 0.4) / 2 = 0.7
    assert m.forget_efficacy([0.2, 0.4]) == pytest.approx(0.7)
    assert m.forget_efficacy([0.2, None, 0.4, math.nan]) == pytest.approx(0.7)
    with pytest.raises(ValueError):
        m.forget_efficacy([])


# --------------------------------------------------------------------------- forget quality


def test_forget_quality_identical_distributions():
    rng = np.random.default_rng(0)
    para, pert = rng.uniform(0, 3, 40), rng.uniform(0, 3, (40, 5))
    p_value, ks = m.forget_quality(para, pert, para, pert)
    assert p_value == 1.0
    assert ks == 0.0


def test_forget_quality_disjoint_distributions():
    # unlearned: log r in [-1, 0]; retain: log r in [2, 3] -> KS statistic 1, exact p = 2 / C(80, 40)
    rng = np.random.default_rng(1)
    n = 40
    para = np.full(n, 2.0)
    pert = para[:, None] + rng.uniform(-1, 0, (n, 1))
    retain_pert = para[:, None] + rng.uniform(2, 3, (n, 1))
    p_value, ks = m.forget_quality(para, pert, para, retain_pert)
    assert ks == 1.0
    assert p_value < 1e-6
    assert p_value == pytest.approx(2 / math.comb(80, 40))


def test_forget_quality_matches_scipy_on_ratios():
    rng = np.random.default_rng(2)
    para, pert = rng.uniform(0, 3, 30), rng.uniform(0, 3, (30, 5))
    r_para, r_pert = rng.uniform(0, 3, 30), rng.uniform(0.5, 3.5, (30, 5))
    ours = m.forget_quality(para, pert, r_para, r_pert)
    ratios = np.exp(pert.mean(axis=1) - para)
    retain_ratios = np.exp(r_pert.mean(axis=1) - r_para)
    ref = stats.ks_2samp(ratios, retain_ratios)
    assert ours == pytest.approx((ref.pvalue, ref.statistic))
    assert m.forget_quality_from_ratios(list(ratios), list(retain_ratios)) == ours


# --------------------------------------------------------------------------- properties

NLL = st.floats(0.0, 50.0, allow_nan=False)
SHAPES = st.tuples(st.integers(1, 8), st.integers(1, 5))


@st.composite
def nll_pair(draw):
    n, k = draw(SHAPES)
    return draw(arrays(float, (n,), elements=NLL)), draw(arrays(float, (n, k), elements=NLL))


@given(nll_pair(), st.booleans())
def test_truth_ratio_items_in_unit_interval_and_mean_is_aggregate(pair, forget):
    items = m.truth_ratio_items(*pair, forget=forget)
    assert np.all((items >= 0) & (items <= 1))
    assert m.truth_ratio(*pair, forget=forget) == pytest.approx(items.mean())


@given(nll_pair())
def test_normalized_probability_in_half_open_unit_interval(pair):
    items = m.normalized_probability_items(*pair)
    assert np.all((items > 0) & (items <= 1))


@given(st.lists(st.sampled_from("abcde"), max_size=30))
def test_token_entropy_in_unit_interval(tokens):
    assert 0.0 <= m.token_entropy(tokens) <= 1.0


WORDS = st.lists(st.sampled_from(["the", "cat", "sat", "running", "run", "on", "mat", "a"]), max_size=12)


@settings(max_examples=50)
@given(WORDS, WORDS, st.text(max_size=30))
def test_rouge_l_recall_in_unit_interval(pred, ref, noise):
    assert 0.0 <= m.rouge_l_recall(" ".join(pred), " ".join(ref)) <= 1.0
    assert 0.0 <= m.rouge_l_recall(noise, " ".join(ref)) <= 1.0


@given(arrays(float, (3, 4), elements=st.floats(-1e3, 1e3)), arrays(float, (3, 4), elements=st.floats(-1e3, 1e3)))
def test_cosine_items_in_unit_interval(a, b):
    items = m.cosine_items(a, b)
    assert np.all((items >= 0) & (items <= 1))


@given(st.lists(st.floats(1e-3, 1.0), min_size=1, max_size=18))
def test_harmonic_mean_between_min_and_max(values):
    hm = m.harmonic_mean(values)
    assert min(values) * (1 - 1e-12) <= hm <= max(values) * (1 + 1e-12)
