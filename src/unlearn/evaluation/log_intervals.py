"""95% intervals of the TOFU standard's and MUSE's summaries, from their per-item logs.

Both protocols keep open-unlearning's result layout: each metric an entry ``{"agg_value": ...,
"value_by_index": {"0": {...}, ...}}``. The interval of each summary value is the percentile bootstrap
of :func:`unlearn.evaluation.intervals.bootstrap`: the items of each set resampled (one draw per set,
shared by every metric of that set), and each value recomputed through its own definition on the
resample: a mean of per-item values; the truth-ratio scores; Model Utility, the harmonic mean of its
nine values; Forget Quality, the KS test of the resampled forget truth ratios against the retain
model's (paired by item when both are on the same items); the Min-K% AUC of the resampled forget and
holdout texts, and PrivLeak from it (the retain model's AUC held fixed).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import ks_2samp

from unlearn.evaluation import mia
from unlearn.evaluation.intervals import Interval, bootstrap
from unlearn.evaluation.open_unlearning import EPS, UTILITY, RetainLogs, hmean


def per_item(entry: dict, field: str) -> np.ndarray:
    """The per-item ``field`` of an entry, in index order (a list of values averaged; None as NaN)."""
    rows = sorted(entry.get("value_by_index", {}).items(), key=lambda kv: int(kv[0]))
    out = []
    for _, v in rows:
        x = v.get(field)
        if isinstance(x, list):
            x = float(np.mean(x)) if x else None
        out.append(np.nan if x is None else float(x))
    return np.asarray(out, dtype=np.float64)


def _mean(x: np.ndarray) -> float | None:
    """The mean of the values that are not NaN (None when there are none)."""
    whole = x.mean() if x.size else np.nan  # NaN when any value is; then the NaNs are left out
    if not np.isnan(whole):
        return float(whole)
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else None


def _tr_forget(x: np.ndarray) -> float | None:
    return _mean(np.minimum(x, 1 / (x + EPS)))


def _tr_kept(x: np.ndarray) -> float | None:
    return _mean(np.maximum(0, 1 - x))


def tofu_intervals(logs: dict, retain_logs: RetainLogs | None = None) -> dict[str, Interval]:
    """Intervals of every value of the TOFU standard's summary (``logs``: its ``TOFU_EVAL.json``;
    ``retain_logs``: the retain model's numbers it was evaluated against, if any)."""
    retain_ratios = retain_logs.truth_ratios if retain_logs is not None else None
    reference = 0.5 if retain_logs is None or retain_logs.mia_min_k is None else retain_logs.mia_min_k
    columns: dict[str, tuple[str, np.ndarray, object]] = {}
    for name in ("forget", "retain", "ra", "wf"):
        for suffix, field in (
            ("Q_A_Prob", "prob"),
            ("Q_A_PERT_Prob", "prob"),
            ("Q_A_PARA_Prob", "prob"),
            ("Q_A_ROUGE", "rougeL_recall"),
            ("Q_A_Prob_normalised", "prob"),
        ):
            if f"{name}_{suffix}" in logs:
                columns[f"{name}_{suffix}"] = (name, per_item(logs[f"{name}_{suffix}"], field), _mean)
    for key, name, agg in (
        ("forget_truth_ratio", "forget", _tr_forget),
        ("retain_Truth_Ratio", "retain", _tr_kept),
        ("ra_Truth_Ratio", "ra", _tr_kept),
        ("wf_Truth_Ratio", "wf", _tr_kept),
    ):
        if key in logs:
            columns[key] = (name, per_item(logs[key], "score"), agg)
    for key in ("exact_memorization", "extraction_strength"):
        if key in logs:
            columns[key] = ("forget", per_item(logs[key], "score"), _mean)
    sizes = {name: len(values) for name, values, _ in columns.values()}
    forget_tr = columns["forget_truth_ratio"][1] if "forget_truth_ratio" in columns else None
    retain = None if retain_ratios is None else np.asarray(retain_ratios, dtype=np.float64)
    paired = retain is not None and forget_tr is not None and len(retain) == len(forget_tr)
    if retain is not None and not paired:
        sizes["retain model"] = len(retain)
    mia_entry = logs.get("mia_min_k")
    if mia_entry and "forget" in mia_entry:
        members, others = -per_item(mia_entry["forget"], "score"), -per_item(mia_entry["holdout"], "score")
        sizes["holdout"] = len(others)

    def statistic(idx) -> dict:
        out = {key: agg(values[idx[name]]) for key, (name, values, agg) in columns.items()}
        if all(out.get(k) is not None for k in UTILITY):  # open-unlearning's harmonic mean, as the summary's
            out["model_utility"] = hmean([out[k] for k in UTILITY])
        if retain is not None and forget_tr is not None and logs.get("forget_quality", {}).get("agg_value") is not None:
            other = retain[idx["forget"]] if paired else retain[idx["retain model"]]
            out["forget_quality"] = float(ks_2samp(forget_tr[idx["forget"]], other).pvalue)
        if mia_entry and "forget" in mia_entry:
            out["mia_min_k"] = mia.auc(members[idx["forget"]], others[idx["holdout"]])
            if "privleak" in logs:
                out["privleak"] = mia.privleak(out["mia_min_k"], reference)
        return out

    return bootstrap(sizes, statistic)


def muse_intervals(logs: dict, retain_auc: float | None = None) -> dict[str, Interval]:
    """Intervals of MUSE's summary: the three ROUGE means over their items, the Min-40% AUC over the
    forget and holdout texts, PrivLeak from it (the retain model's AUC fixed) and Min-K%++'s AUC."""
    columns = {
        key: per_item(logs[key], "rougeL_f1")
        for key in ("forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "retain_knowmem_ROUGE")
        if key in logs
    }
    sizes = {key: len(v) for key, v in columns.items()}
    entry = logs.get("mia_min_k")
    if entry:
        f, h = entry["forget"], entry["holdout"]
        scores = {k: (-per_item(f, k), -per_item(h, k)) for k in ("score", "min_k_plus_plus")}
        sizes.update(mia_forget=len(scores["score"][0]), mia_holdout=len(scores["score"][1]))

    def auc(k, idx):  # as MUSE's: a NaN score (a text too short for Min-K%) compared as it is
        return mia.auc(scores[k][0][idx["mia_forget"]], scores[k][1][idx["mia_holdout"]])

    def statistic(idx) -> dict:
        out = {key: _mean(values[idx[key]]) for key, values in columns.items()}
        if entry:
            out["mia_min_k"] = auc("score", idx)
            out["mia_min_k_plus_plus"] = auc("min_k_plus_plus", idx)
            if "privleak" in logs:
                out["privleak"] = mia.privleak(out["mia_min_k"], 0.5 if retain_auc is None else retain_auc)
        return out

    return bootstrap(sizes, statistic)
