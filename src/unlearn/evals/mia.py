"""Membership inference on the forget set: does it still look like training data?

Each score is computed per item from the model's token log-probabilities on the answer, higher
meaning "more likely a member" (seen in training); the AUC of forget items (members before
unlearning) against holdout items (never seen) is 0.5 when the two cannot be told apart.

* LOSS: the mean token log-likelihood ``mean_t log p(y_t)`` (Yeom et al. 2018);
* ZLib: the summed log-likelihood over the answer's zlib-compressed length (Carlini et al. 2021);
* Min-K%: the mean of the ``k`` fraction lowest token log-probabilities (Shi et al. 2024);
* Min-K%++: the same over ``(log p(y_t) − μ_t) / σ_t``, with ``μ_t`` and ``σ_t`` the mean and spread
  of ``log p`` under the model's own next-token distribution (Zhang et al. 2024, arXiv 2404.02936).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

SCORES = ("LOSS", "ZLib", "Min-K%", "Min-K%++")
DEFAULT_K = 0.4


@dataclass
class TokenStats:
    """One item's answer tokens: log p(y_t), and μ_t, σ_t of log p under p_t."""

    logp: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    text: str


def _lowest_mean(values: np.ndarray, k: float) -> float:
    n = max(1, int(math.ceil(k * len(values))))  # at least one token
    return float(np.sort(values)[:n].mean())


def scores(item: TokenStats, k: float = DEFAULT_K) -> dict[str, float]:
    """Every score of one item (higher: more likely a member)."""
    logp = item.logp.astype(np.float64)
    z = (logp - item.mu) / np.maximum(item.sigma, 1e-12)
    return {"LOSS": float(logp.mean()), "ZLib": float(logp.sum() / len(zlib.compress(item.text.encode("utf-8")))),
            "Min-K%": _lowest_mean(logp, k), "Min-K%++": _lowest_mean(z, k)}


def auc(members: list[float], nonmembers: list[float]) -> float:
    """Area under the ROC curve of telling members from non-members by the score: the probability
    that a random member scores above a random non-member (ties count half)."""
    m, n = np.asarray(members, dtype=np.float64), np.asarray(nonmembers, dtype=np.float64)
    if not len(m) or not len(n):
        raise ValueError("membership inference needs members and non-members")
    greater = (m[:, None] > n[None, :]).sum() + 0.5 * (m[:, None] == n[None, :]).sum()
    return float(greater / (len(m) * len(n)))


def mia_aucs(forget: list[TokenStats], holdout: list[TokenStats], k: float = DEFAULT_K) -> dict[str, float]:
    """``{score: AUC}`` of forget items (members) against holdout items (non-members)."""
    f = [scores(x, k) for x in forget]
    h = [scores(x, k) for x in holdout]
    return {name: auc([s[name] for s in f], [s[name] for s in h]) for name in SCORES}
