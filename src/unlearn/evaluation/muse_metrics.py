"""MUSE's metrics, value for value (``swj0419/muse_bench``: ``metrics/{verbmem,knowmem,privleak}.py``):
VerbMem and KnowMem (greedy continuations scored by ROUGE-L F1 without stemming), and PrivLeak's
Min-40% scores and AUC with Min-K%++ beside it. The MUSE protocol (:mod:`unlearn.protocols.muse`)
says which sets they run on."""

from __future__ import annotations

import numpy as np

from unlearn.encoding import Encoded
from unlearn.evaluation import generation, mia, scoring
from unlearn.evaluation.metrics import rouge_scorer
from unlearn.evaluation.open_unlearning import generation_stop

VERBMEM_NEW_TOKENS = 128
KNOWMEM_NEW_TOKENS = 32
KNOWMEM_STOP = ("\n\n", "\nQuestion", "Question:")
MIN_K = mia.DEFAULT_K  # Min-40%
MAX_LENGTH = 2048  # texts scored for PrivLeak are cut here (MUSE scores them whole)


class _Plain:
    """Prompts given as text, encoded with the tokenizer's BOS (MUSE's ``add_special_tokens=True``)."""

    add_special_tokens = True
    answer_prefix = ""

    def prompt(self, text: str) -> str:
        return text


def rouge_l(gt: str, output: str) -> tuple[float, float]:
    """MUSE's ROUGE-L (no stemmer): ``(F1, recall)``."""
    score = rouge_scorer(("rougeL",), stemmer=False).score(gt, output)["rougeL"]
    return score.fmeasure, score.recall


def _generate(model, tokenizer, prompts: list[str], new_tokens: int, batch_size: int, desc: str) -> list[str]:
    out = generation.generate(
        model,
        tokenizer,
        _Plain(),
        prompts,
        batch_size=batch_size,
        desc=desc,
        max_new_tokens=new_tokens,
        stop=generation_stop(model),
        decode={"clean_up_tokenization_spaces": False},
    )
    return [tokenizer.clean_up_tokenization(g) for g in out]


def verbmem(model, tokenizer, rows: list[dict], batch_size: int) -> dict:
    gens = _generate(model, tokenizer, [r["prompt"] for r in rows], VERBMEM_NEW_TOKENS, batch_size, "MUSE: verbmem")
    by = {}
    for i, (r, g) in enumerate(zip(rows, gens, strict=False)):
        gt_ids = tokenizer(r["gt"], add_special_tokens=True)["input_ids"][:VERBMEM_NEW_TOKENS]
        gt = tokenizer.clean_up_tokenization(tokenizer.decode(gt_ids, skip_special_tokens=True))
        f1, recall = rouge_l(gt, g)
        by[str(i)] = {
            "rougeL_f1": f1,
            "rougeL_recall": recall,
            "input": r["prompt"],
            "ground_truth": gt,
            "generation": g,
        }
    return {"agg_value": float(np.mean([v["rougeL_f1"] for v in by.values()])), "value_by_index": by}


def knowmem_prompt(question: str, icl: list[dict]) -> str:
    shots = "".join(f"Question: {r['question']}\nAnswer: {r['answer']}\n\n" for r in icl)
    return shots + f"Question: {question}\nAnswer: "


def knowmem(model, tokenizer, rows: list[dict], icl: list[dict], batch_size: int, desc: str) -> dict:
    prompts = [knowmem_prompt(r["question"], icl) for r in rows]
    gens = _generate(model, tokenizer, prompts, KNOWMEM_NEW_TOKENS, batch_size, desc)
    by = {}
    for i, (r, g) in enumerate(zip(rows, gens, strict=False)):
        for word in KNOWMEM_STOP:
            g = g.split(word)[0]
        f1, recall = rouge_l(r["answer"], g)
        by[str(i)] = {
            "rougeL_f1": f1,
            "rougeL_recall": recall,
            "input": r["question"],
            "ground_truth": r["answer"],
            "generation": g,
        }
    return {"agg_value": float(np.mean([v["rougeL_f1"] for v in by.values()])), "value_by_index": by}


def min_k_score(logp: np.ndarray, k: float = MIN_K) -> float:
    """MUSE's Min-k% Prob: ``-mean`` of the ``int(k·n)`` lowest token log-probabilities (every token
    after BOS; NaN when ``int(k·n)`` is 0, as MUSE)."""
    n = int(len(logp) * k)
    return float(-np.mean(np.sort(logp)[:n])) if n else float("nan")


def text_stats(model, tokenizer, texts: list[str], batch_size: int, desc: str) -> list:
    """Per text, the token statistics (:class:`unlearn.evaluation.mia.TokenStats`) of each token after the
    first (BOS added), the text cut at :data:`MAX_LENGTH`."""
    seqs = []
    for t in texts:
        ids = list(tokenizer(t, add_special_tokens=True)["input_ids"])[:MAX_LENGTH]
        seqs.append(Encoded(ids, [-100] + ids[1:]))
    _, stats = scoring.score_sequences(
        model, tokenizer, seqs, batch_size, stats_for=range(len(seqs)), texts=texts, desc=desc
    )
    return [stats[i] for i in range(len(seqs))]


def min_k_plus_plus_score(st, k: float = MIN_K) -> float:
    """Min-K%++ (Zhang et al. 2024) over the same tokens and ``int(k·n)`` count: ``-mean`` of the lowest
    ``(log p − μ) / σ`` (σ² at least 1e-6, as open-unlearning)."""
    sigma = np.sqrt(np.maximum(np.asarray(st.sigma, dtype=np.float64) ** 2, mia.VARIANCE_FLOOR))
    return min_k_score((st.logp.astype(np.float64) - st.mu) / sigma, k)


def min_k_entry(model, tokenizer, forget: list[dict], holdout: list[dict], batch_size: int) -> dict:
    """Min-40% scores (loss-like) of the forget and holdout texts, and the AUC with the holdout labelled 1
    (open-unlearning's orientation: above 0.5, the forget texts look more like training data)."""

    def side(rows, desc):
        stats = text_stats(model, tokenizer, [r["text"] for r in rows], batch_size, desc)
        scores = [min_k_score(st.logp) for st in stats]
        plus = [min_k_plus_plus_score(st) for st in stats]
        return {
            "agg_value": float(np.nanmean(scores)),
            "value_by_index": {
                str(i): {"score": s, "min_k_plus_plus": p} for i, (s, p) in enumerate(zip(scores, plus, strict=False))
            },
        }

    def auc(f, h, key):
        return mia.auc([-v[key] for v in f["value_by_index"].values()], [-v[key] for v in h["value_by_index"].values()])

    f, h = side(forget, "MUSE: privleak forget"), side(holdout, "MUSE: privleak holdout")
    value = auc(f, h, "score")
    return {
        "forget": f,
        "holdout": h,
        "auc": value,
        "agg_value": value,
        "auc_min_k_plus_plus": auc(f, h, "min_k_plus_plus"),
    }
