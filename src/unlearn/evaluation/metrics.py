"""The paper's evaluation metrics as pure functions over numbers and strings (docs/methods.md §4).

Nothing here runs a model. The runner computes, once per eval set, the greedy generations, the
per-item mean token NLL of each answer (``*_nll`` arguments, shape ``(N,)``) and of the perturbed
answers (shape ``(N, K)``), the tokenized generations, the sentence embeddings and the NLI labels;
these functions turn them into numbers.

Each metric has a per-item form (``*_items``, written to the per-item output files) and an
aggregate, which is always the plain mean of the per-item values.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
from nltk.stem.porter import PorterStemmer
from rouge_score import tokenize as rouge_tokenize
from rouge_score.rouge_scorer import RougeScorer
from rouge_score.tokenizers import Tokenizer
from scipy import stats
from scipy.special import logsumexp

__all__ = [
    "truth_ratios",
    "truth_ratio_items",
    "truth_ratio",
    "probability_items",
    "probability",
    "normalized_probability_items",
    "normalized_probability",
    "token_entropy",
    "rouge_l_recall",
    "rouge_l_recall_items",
    "cosine_items",
    "entailment_items",
    "harmonic_mean",
    "model_utility",
    "forget_efficacy",
    "forget_quality",
    "forget_quality_from_ratios",
]

ENTAILMENT_MIN_ROUGE = 0.1
"""Items whose ROUGE-L recall is below this count as not entailed (docs/methods.md §4)."""


# --------------------------------------------------------------------------- helpers


def _answer_and_perturbed(answer_nll, perturbed_nll) -> tuple[np.ndarray, np.ndarray]:
    """Validate an ``(N,)`` / ``(N, K)`` pair of NLL arrays and return them as float arrays."""
    a = np.asarray(answer_nll, dtype=float)
    p = np.asarray(perturbed_nll, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"answer NLLs must have shape (N,), got {a.shape}")
    if p.ndim != 2 or p.shape[1] == 0:
        raise ValueError(f"perturbed NLLs must have shape (N, K) with K >= 1, got {p.shape}")
    if p.shape[0] != a.shape[0]:
        raise ValueError(f"{a.shape[0]} answer NLLs but {p.shape[0]} rows of perturbed NLLs")
    return a, p


def _mean(items: np.ndarray, what: str) -> float:
    if items.size == 0:
        raise ValueError(f"cannot average {what} over zero items")
    return float(np.mean(items))


def _available(values: Iterable[float | None]) -> list[float]:
    """The values that were computed: drops ``None`` and NaN."""
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


# --------------------------------------------------------------------------- truth ratio


def _log_truth_ratios(para_nll, pert_nll) -> np.ndarray:
    para, pert = _answer_and_perturbed(para_nll, pert_nll)
    return pert.mean(axis=1) - para


def truth_ratios(para_nll, pert_nll) -> np.ndarray:
    """Per-item truth ratio ``r_i = exp(mean_k(pert_nll[i, k]) - para_nll[i])``, shape ``(N,)``.

    ``r_i = P(paraphrase)^(1/|a|) / mean-in-log-space P(perturbed)^(1/|a_k|)``: above 1 when the
    model prefers the correct (paraphrased) answer to the perturbed wrong ones. Real Authors and
    World Facts pass the answer's own NLL as ``para_nll``.
    """
    return np.exp(_log_truth_ratios(para_nll, pert_nll))


def truth_ratio_items(para_nll, pert_nll, forget: bool) -> np.ndarray:
    """Per-item Truth Ratio score in ``[0, 1]``.

    Forget set: ``1 - min(r, 1/r)``; other sets: ``max(0, 1 - 1/r)``.

    The mean of these items is the paper's aggregate, because the mean is linear:
    ``mean_i(1 - min(r_i, 1/r_i)) = 1 - mean_i(min(r_i, 1/r_i))`` (forget), and
    ``mean_i(max(0, 1 - 1/r_i))`` is the paper's formula itself (others).

    Computed from ``d = log r``: ``1 - min(r, 1/r) = 1 - exp(-|d|)`` and
    ``max(0, 1 - 1/r) = 1 - exp(-max(d, 0))``, so extreme NLL gaps cannot overflow.
    """
    d = _log_truth_ratios(para_nll, pert_nll)
    if forget:
        return -np.expm1(-np.abs(d))
    return -np.expm1(-np.maximum(d, 0.0))


def truth_ratio(para_nll, pert_nll, forget: bool) -> float:
    """Aggregate Truth Ratio: the mean of :func:`truth_ratio_items`."""
    return _mean(truth_ratio_items(para_nll, pert_nll, forget), "truth ratio")


# --------------------------------------------------------------------------- probability


def probability_items(nll) -> np.ndarray:
    """Per-item answer probability ``exp(-mean_token_nll)`` (Retain / Forget sets)."""
    return np.exp(-np.asarray(nll, dtype=float))


def probability(nll) -> float:
    """Aggregate Probability: the mean of :func:`probability_items`."""
    return _mean(probability_items(nll), "probability")


def normalized_probability_items(true_nll, false_nll) -> np.ndarray:
    """Per-item ``p(a) / (p(a) + sum_k p(perturbed_k))`` with ``p = exp(-mean_token_nll)``.

    Used for Real Authors and World Facts (multiple-choice style). ``true_nll`` has shape ``(N,)``,
    ``false_nll`` shape ``(N, K)``. Evaluated as ``exp(log p(a) - logsumexp(log p(all)))`` so that
    large NLLs do not underflow to 0/0.
    """
    true, false = _answer_and_perturbed(true_nll, false_nll)
    log_p = -np.concatenate([true[:, None], false], axis=1)
    return np.exp(log_p[:, 0] - logsumexp(log_p, axis=1))


def normalized_probability(true_nll, false_nll) -> float:
    """Aggregate normalized Probability: the mean of :func:`normalized_probability_items`."""
    return _mean(normalized_probability_items(true_nll, false_nll), "normalized probability")


# --------------------------------------------------------------------------- generation metrics


def token_entropy(tokens: Sequence[str]) -> float:
    """Normalized unigram entropy of a generation's tokens, in ``[0, 1]``.

    ``H = -sum_t f_t log2 f_t`` over the token frequencies ``f_t = c_t / n``, divided by
    ``log2(n)`` (its maximum, reached when all tokens differ); 0 when ``n <= 1``. Low values flag
    degenerate, repetitive output.

    Uses the identity ``H = log2(n) - sum_t c_t log2(c_t) / n``, which gives exactly 1 for
    all-distinct tokens and exactly 0 for a single repeated token.
    """
    n = len(tokens)
    if n <= 1:
        return 0.0
    s = sum(c * math.log2(c) for c in Counter(tokens).values())
    return 1.0 - s / (n * math.log2(n))


@functools.cache
def rouge_scorer(types: tuple[str, ...] = ("rougeL",), stemmer: bool = True) -> RougeScorer:
    """The one ROUGE scorer factory (``rouge_score``): one scorer per setting and process, since
    constructing it (and nltk's stemmer) is slow. The paper and TOFU stem; MUSE does not. The
    stemming scorer remembers each word's stem (:class:`StemmingTokenizer`: the same tokens)."""
    if stemmer:
        return RougeScorer(list(types), tokenizer=StemmingTokenizer())
    return RougeScorer(list(types), use_stemmer=False)


class StemmingTokenizer(Tokenizer):
    """``rouge_score``'s default tokenizer with the Porter stemmer, each word stemmed once per process
    (stemming is most of the cost of scoring an answer; the tokens are the same)."""

    def __init__(self):
        self.stem = functools.lru_cache(maxsize=1 << 17)(PorterStemmer().stem)

    def tokenize(self, text):
        return rouge_tokenize.tokenize(text, self)  # calls self.stem(word) for words over 3 letters


def rouge_l_recall(prediction: str, reference: str) -> float:
    """ROUGE-L recall of ``prediction`` against ``reference`` (``rouge_score``, Porter stemmer on).

    Recall = LCS(prediction, reference) / len(reference) in words; 0 if the reference has no words.
    """
    return float(rouge_scorer().score(reference, prediction)["rougeL"].recall)


def rouge_l_recall_items(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """:func:`rouge_l_recall` for each ``(prediction, reference)`` pair, shape ``(N,)``."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    return np.array([rouge_l_recall(p, r) for p, r in zip(predictions, references, strict=False)], dtype=float)


def cosine_items(gen_emb, ref_emb) -> np.ndarray:
    """Row-wise cosine similarity of two ``(N, D)`` embedding arrays, clipped to ``[0, 1]``.

    A zero vector (e.g. an empty generation for some embedders) scores 0.
    """
    g = np.asarray(gen_emb, dtype=float)
    r = np.asarray(ref_emb, dtype=float)
    if g.ndim != 2 or g.shape != r.shape:
        raise ValueError(f"embeddings must both have shape (N, D), got {g.shape} and {r.shape}")
    dot = (g * r).sum(axis=1)
    norms = np.linalg.norm(g, axis=1) * np.linalg.norm(r, axis=1)
    cos = np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0)
    return np.clip(cos, 0.0, 1.0)  # the upper clip only removes float rounding above 1


def entailment_items(labels: Sequence[str], rouge) -> np.ndarray:
    """1.0 where the NLI label is ``entailment`` (any case) and ROUGE-L recall >= 0.1, else 0.0.

    The ROUGE floor follows the paper: near-disjoint texts are not counted as entailed even if
    the NLI model says so.
    """
    rouge = np.asarray(rouge, dtype=float)
    if rouge.shape != (len(labels),):
        raise ValueError(f"{len(labels)} labels but ROUGE values of shape {rouge.shape}")
    entailed = np.array([str(label).strip().lower() == "entailment" for label in labels], dtype=bool)
    return (entailed & (rouge >= ENTAILMENT_MIN_ROUGE)).astype(float)


# --------------------------------------------------------------------------- aggregates


def harmonic_mean(values: Iterable[float]) -> float:
    """Harmonic mean ``n / sum(1 / v)``; 0 if any value is <= 0; NaN if any value is NaN.

    Raises ``ValueError`` on an empty input.
    """
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        raise ValueError("harmonic mean of no values")
    if np.isnan(v).any():
        return math.nan
    if (v <= 0).any():
        return 0.0
    return float(v.size / np.sum(1.0 / v))


def model_utility(values: Iterable[float | None]) -> float:
    """Model Utility: harmonic mean of the available (not ``None``, not NaN) metric values.

    TOFU: the 18 values of Retain, Real Authors and World Facts; real world: the 6 Retain values.
    """
    available = _available(values)
    if not available:
        raise ValueError("model utility needs at least one metric value")
    return harmonic_mean(available)


def forget_efficacy(values: Iterable[float | None]) -> float:
    """Forget Efficacy: ``1 - mean`` of the available Forget-set values.

    The values are Forget ROUGE, Probability, Truth Ratio, Cosine Similarity and Entailment Score
    (Token Entropy is excluded by the caller); ``None`` / NaN entries are skipped.
    """
    available = _available(values)
    if not available:
        raise ValueError("forget efficacy needs at least one metric value")
    return 1.0 - float(np.mean(available))


def forget_quality_from_ratios(ratios, retain_ratios) -> tuple[float, float]:
    """TOFU Forget Quality from precomputed truth ratios: ``(p-value, KS statistic)``.

    Two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``) between the unlearned model's
    forget-set truth ratios and those of the retain model (never trained on the forget set).
    A high p-value means the two are indistinguishable, i.e. good forgetting.
    """
    result = stats.ks_2samp(np.asarray(ratios, dtype=float), np.asarray(retain_ratios, dtype=float))
    return float(result.pvalue), float(result.statistic)


def forget_quality(para_nll, pert_nll, retain_para_nll, retain_pert_nll) -> tuple[float, float]:
    """TOFU Forget Quality ``(p-value, KS statistic)`` from the two models' forget-set NLLs.

    ``para_nll`` / ``pert_nll`` come from the unlearned model, ``retain_*`` from the retain model,
    both on the same forget items; see :func:`forget_quality_from_ratios`.
    """
    return forget_quality_from_ratios(truth_ratios(para_nll, pert_nll), truth_ratios(retain_para_nll, retain_pert_nll))
