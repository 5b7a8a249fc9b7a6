"""Membership inference and memorisation on the forget set: does it still look like training data?

Every score is computed per item from the model's token log-probabilities on the answer and is
oriented so that higher means "more likely a member" (seen in training). The AUC of forget items
(members before unlearning) against holdout items (never seen) is 0.5 when the two cannot be told
apart; it equals open-unlearning's ``mia_*`` AUC (which scores like a loss and labels the holdout
1), ties counting half. The definitions follow open-unlearning's ``src/evals/metrics/mia``:

* LOSS: ``-avg_loss``, the mean token NLL of the answer, EOS included (Yeom et al. 2018);
* ZLib: ``-avg_loss / len(zlib(answer))`` (Carlini et al. 2021);
* Min-K%: the mean of the ``max(1, floor(k * n))`` lowest ``log p(y_t)`` (Shi et al. 2024), over
  the answer's tokens but the last (open-unlearning drops the EOS prediction there);
* Min-K%++: the same over ``(log p(y_t) − μ_t) / σ_t``, with ``μ_t`` and ``σ_t²`` (at least 1e-6)
  the mean and variance of ``log p`` under the model's own next-token distribution (Zhang et al.
  2024, arXiv 2404.02936);
* Reference: ``ref_avg_loss − avg_loss``, a reference model's loss minus the model's (Carlini et al.
  2022); only with a reference model;
* GradNorm: ``-mean over parameter tensors of ||∇ avg_loss||₂``, the answer's loss over its tokens
  but the last (Wang et al. 2024, arXiv 2402.17012).

PrivLeak (MUSE, Shi et al. 2024) compares the AUC with a retain model's, as open-unlearning
computes it: ``((1 − AUC) − (1 − AUC_retain)) / (1 − AUC_retain) × 100`` (MUSE reports the AUC as
``1 − ours``); 0 is the retain model's privacy, large negative values an under-unlearned model.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from unlearn.config import MIN_K

SCORES = ("LOSS", "ZLib", "Min-K%", "Min-K%++")
"""The scores every evaluation with a holdout set reports (one pass over the token statistics)."""
ATTACKS = SCORES + ("Reference", "GradNorm")
"""Every attack of the audit: Reference needs a reference model, GradNorm a backward pass per item."""
DEFAULT_K = MIN_K
VARIANCE_FLOOR = 1e-6  # open-unlearning's clamp of σ² in Min-K%++


@dataclass
class TokenStats:
    """One item's answer tokens: ``log p(y_t)``, ``μ_t`` and ``σ_t`` of ``log p`` under ``p_t``, and
    whether the model's most likely token was ``y_t`` (``hit``). The last token is the EOS when the
    answer was not cut at the length limit."""

    logp: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    text: str
    hit: np.ndarray | None = None

    @property
    def avg_loss(self) -> float:
        return float(-self.logp.astype(np.float64).mean()) if len(self.logp) else 0.0


def _lowest_mean(values: np.ndarray, k: float) -> float:
    if not len(values):
        return 0.0  # open-unlearning scores an item without tokens 0
    n = max(1, int(len(values) * k))
    return float(np.sort(values)[:n].mean())


def scores(item: TokenStats, k: float = DEFAULT_K) -> dict[str, float]:
    """The scores of :data:`SCORES` of one item (higher: more likely a member)."""
    logp = item.logp.astype(np.float64)
    inner = slice(0, max(len(logp) - 1, 0))  # every token but the last (the EOS prediction)
    sigma = np.sqrt(np.maximum(np.asarray(item.sigma, dtype=np.float64) ** 2, VARIANCE_FLOOR))
    z = (logp - item.mu) / sigma
    loss = item.avg_loss
    return {
        "LOSS": -loss,
        "ZLib": -loss / len(zlib.compress(item.text.encode("utf-8"))),
        "Min-K%": _lowest_mean(logp[inner], k),
        "Min-K%++": _lowest_mean(z[inner], k),
    }


def auc(members: list[float], nonmembers: list[float]) -> float:
    """Area under the ROC curve of telling members from non-members by the score: the probability
    that a random member scores above a random non-member (ties count half)."""
    m, n = np.asarray(members, dtype=np.float64), np.asarray(nonmembers, dtype=np.float64)
    if not len(m) or not len(n):
        raise ValueError("membership inference needs members and non-members")
    greater = (m[:, None] > n[None, :]).sum() + 0.5 * (m[:, None] == n[None, :]).sum()
    return float(greater / (len(m) * len(n)))


def item_scores(stats: list[TokenStats], k: float = DEFAULT_K) -> dict[str, list[float]]:
    """``{score: per-item values}`` of :data:`SCORES`."""
    each = [scores(x, k) for x in stats]
    return {name: [s[name] for s in each] for name in SCORES}


def mia_aucs(forget: list[TokenStats], holdout: list[TokenStats], k: float = DEFAULT_K) -> dict[str, float]:
    """``{score: AUC}`` of forget items (members) against holdout items (non-members)."""
    f, h = item_scores(forget, k), item_scores(holdout, k)
    return {name: auc(f[name], h[name]) for name in SCORES}


def reference_scores(avg_loss: list[float], ref_avg_loss: list[float]) -> list[float]:
    """Reference attack: the reference model's loss minus the model's (higher: more likely a member)."""
    return [float(r - a) for a, r in zip(avg_loss, ref_avg_loss, strict=False)]


def privleak(auc_model: float, auc_retain: float) -> float:
    """MUSE's PrivLeak in percent, from AUCs oriented as here (see the module docstring)."""
    return ((1 - auc_model) - (1 - auc_retain)) / ((1 - auc_retain) + 1e-10) * 100


def exact_memorization(item: TokenStats) -> float | None:
    """The fraction of the answer's tokens (but the last) that the model's greedy next token
    predicts (open-unlearning's ``exact_memorization``); None for an item without such tokens."""
    hit = item.hit[:-1]
    return float(hit.mean()) if len(hit) else None


def extraction_strength(item: TokenStats) -> float:
    """``1 − k / n``, with ``k`` the first position from which every greedy next token is the
    answer's, over the answer's ``n`` tokens but the last (Carlini et al. 2021 via
    open-unlearning's ``extraction_strength``). As there, an answer whose last token is missed
    scores ``1 / n``, not 0 (its loop stops at ``k = n − 1``), and one without tokens 0."""
    hit = item.hit[:-1]
    n = len(hit)
    if not n:
        return 0.0
    k = next((j for j in range(n) if hit[j:].all()), n - 1)
    return 1 - k / n
