"""open-unlearning's TOFU evaluation pieces, value for value (its ``src/evals/metrics/`` and
``src/data/``): its greedy generation and ROUGE references, its one-pass answer scoring, and its
metric entries (``agg_value`` and ``value_by_index``) over answer NLLs and token statistics. The
TOFU standard protocol (:mod:`unlearn.protocols.tofu`) says which sets they run on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats
from scipy.stats import ks_2samp

from unlearn.config import EVAL_BATCH_SIZE
from unlearn.data import read_records
from unlearn.distributed import sharded_map
from unlearn.errors import DataError
from unlearn.evaluation import generation, mia, scoring
from unlearn.evaluation.generation import generate
from unlearn.evaluation.metrics import rouge_scorer
from unlearn.evaluation.scoring import score_sequences
from unlearn.rundir import SUMMARY, eval_file

EPS = 1e-10  # open-unlearning's epsilon in its ratios
MAX_LENGTH = 512  # its TOFU datasets cut sequences here
MAX_NEW_TOKENS = 200  # its generation config
TOFU_EVAL = "TOFU_EVAL.json"  # its per-metric logs
TOFU_SUMMARY = "TOFU_SUMMARY.json"  # its summary
UTILITY = (
    "retain_Q_A_Prob",
    "retain_Q_A_ROUGE",
    "retain_Truth_Ratio",
    "ra_Q_A_Prob_normalised",
    "ra_Q_A_ROUGE",
    "ra_Truth_Ratio",
    "wf_Q_A_Prob_normalised",
    "wf_Q_A_ROUGE",
    "wf_Truth_Ratio",
)


def prob_entry(losses: list) -> dict:
    """open-unlearning's ``probability`` result: per item ``prob``/``avg_loss`` (lists for several answers)."""
    arr = np.asarray(losses, dtype=np.float64)
    probs = np.exp(-arr)
    if arr.ndim == 1:
        by = {
            str(i): {"prob": float(p), "avg_loss": float(a)} for i, (p, a) in enumerate(zip(probs, arr, strict=False))
        }
        agg = float(np.mean(probs))
    else:
        by = {
            str(i): {"prob": [float(x) for x in p], "avg_loss": [float(x) for x in a]}
            for i, (p, a) in enumerate(zip(probs, arr, strict=False))
        }
        agg = float(np.mean(probs.mean(axis=1)))
    return {"agg_value": agg, "value_by_index": by}


def truth_ratio_values(correct_loss, wrong_losses) -> np.ndarray:
    """Per-item ``wrong / correct`` with open-unlearning's epsilon: the perturbed answers' mean NLL
    taken first (``aggregate_to_1D``), then ``exp(-·)``."""
    correct = np.exp(-np.asarray(correct_loss, dtype=np.float64))
    wrong = np.exp(-np.asarray(wrong_losses, dtype=np.float64).mean(axis=1))
    return wrong / (correct + EPS)


def truth_ratio_entry(correct_loss, wrong_losses, forget: bool) -> dict:
    tr = truth_ratio_values(correct_loss, wrong_losses)
    agg = float(np.mean(np.minimum(tr, 1 / (tr + EPS)))) if forget else float(np.mean(np.maximum(0, 1 - tr)))
    return {"agg_value": agg, "value_by_index": {str(i): {"score": float(v)} for i, v in enumerate(tr)}}


def normalised_prob_entry(correct_loss, wrong_losses) -> dict:
    correct = np.exp(-np.asarray(correct_loss, dtype=np.float64))
    wrong = np.exp(-np.asarray(wrong_losses, dtype=np.float64)).sum(axis=1)
    probs = correct / (correct + wrong + EPS)
    return {
        "agg_value": float(np.mean(probs)),
        "value_by_index": {str(i): {"prob": float(p)} for i, p in enumerate(probs)},
    }


def hmean(values: list[float]) -> float:
    """``scipy.stats.hmean`` (open-unlearning's ``hm_aggregate``): 0 when a value is 0. Its formula,
    ``1 / mean(1 / values)``, in numpy for non-negative values (the same float: scipy's checks
    cost a millisecond a call, a second of a TOFU evaluation's 1,000 bootstrap resamples)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0 or (a < 0).any() or np.isnan(a).any():
        return float(stats.hmean(values))  # scipy's own empty, negative and NaN cases
    with np.errstate(divide="ignore"):
        return float(1.0 / np.mean(1.0 / a))


def min_k_entry(forget_stats: list, holdout_stats: list, k: float = mia.DEFAULT_K) -> dict:
    """open-unlearning's ``mia_min_k`` result: per-item scores (the negated mean of the lowest
    ``max(1, int(k·n))`` token log-probabilities, the EOS left out) and the AUC with the holdout
    labelled 1 (0.5: indistinguishable; above: forget items look like training data)."""

    def side(stats):
        scores = [-mia.scores(s, k)["Min-K%"] for s in stats]
        return {
            "agg_value": float(np.mean(scores)),
            "value_by_index": {str(i): {"score": float(v)} for i, v in enumerate(scores)},
        }

    f, h = side(forget_stats), side(holdout_stats)
    members = [-v["score"] for v in f["value_by_index"].values()]
    others = [-v["score"] for v in h["value_by_index"].values()]
    auc = mia.auc(members, others)
    return {"forget": f, "holdout": h, "auc": auc, "agg_value": auc}


def score_entry(values: list[float | None]) -> dict:
    kept = [v for v in values if v is not None]
    return {
        "agg_value": float(np.mean(kept)) if kept else None,
        "value_by_index": {str(i): {"score": v} for i, v in enumerate(values)},
    }


def generation_stop(model) -> list[int]:
    """The model's generation-config EOS ids: where ``model.generate`` stops in open-unlearning."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    return [] if eos is None else list(eos) if isinstance(eos, (list, tuple)) else [eos]


def _cut(text: str, stopwords: list[str]) -> str:
    for word in stopwords:
        if word and word in text:
            text = text.split(word)[0]
    return text.strip()


def _clean(tokenizer, text: str) -> str:
    """open-unlearning decodes with ``clean_up_tokenization_spaces=True`` (under transformers 4.45 it
    applies to every tokenizer; transformers 5 ignores it for BPE ones): the same clean-up, applied here."""
    return tokenizer.clean_up_tokenization(text)


def _decode(tokenizer, ids) -> str:
    return _clean(tokenizer, tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))


def ground_truths(tokenizer, template, rows: list[dict]) -> list[tuple[str, str]]:
    """Per row ``(reference, decoded prompt)``: the reference ROUGE compares with is the whole encoded
    conversation decoded, with the decoded prompt taken out (open-unlearning's ``eval_text_similarity``)."""
    encoded = template.encode_pairs(tokenizer, [(r["question"], r["answer"]) for r in rows], MAX_LENGTH)
    out = []
    for r, full in zip(rows, encoded, strict=True):
        prompt = _decode(tokenizer, template.encode_prompt_ids(tokenizer, r["question"], MAX_LENGTH))
        out.append((_decode(tokenizer, full.input_ids).replace(prompt, "").strip(), prompt))
    return out


@dataclass
class Pair:
    set: str  # forget | retain | ra | wf | holdout
    item: int
    kind: str  # answer | para | pert
    question: str
    text: str


def pairs_of(sets, parts=("forget", "retain", "ra", "wf", "holdout")) -> list[Pair]:
    out = []
    for name in parts:
        rows = sets.holdout if name == "holdout" else sets.of(name)
        for i, r in enumerate(rows or []):
            out.append(Pair(name, i, "answer", r["question"], r["answer"]))
            if name in ("forget", "retain"):
                out.append(Pair(name, i, "para", r["question"], r["paraphrased_answer"]))
            if name != "holdout":
                out += [Pair(name, i, "pert", r["question"], p) for p in r["perturbed_answer"]]
    return out


def score_pairs(model, tokenizer, template, pairs: list[Pair], batch_size: int, shard: bool = False) -> list[tuple]:
    """``(avg_loss, TokenStats or None)`` per pair, from one sorted pass (token statistics for the
    forget and holdout answers)."""
    share = scoring.shares_prompts(model)  # a question's answers on its prompt's KV cache (large enough models)

    def score(ps: list[Pair]) -> list[tuple]:
        seqs = template.encode_pairs(tokenizer, [(p.question, p.text) for p in ps], MAX_LENGTH)
        want = [i for i, p in enumerate(ps) if p.kind == "answer" and p.set in ("forget", "holdout")]
        losses, stats = score_sequences(
            model,
            tokenizer,
            seqs,
            batch_size,
            mask_pad=True,
            stats_for=want,
            share_prompts=share,
            texts=[p.text for p in ps],
            desc="TOFU: answer NLLs",
        )
        return [(float(losses[i]), stats.get(i)) for i in range(len(ps))]

    return sharded_map(score, pairs) if shard else score(pairs)


class Scored:
    """The scored pairs by set, kind and item: ``losses(set, kind)`` (one list per item for ``pert``),
    ``stats(set, n)`` the token statistics of the set's answers."""

    def __init__(self, pairs: list[Pair], scored: list[tuple]):
        self.loss: dict = {}
        self.token: dict = {}
        for p, (value, st) in zip(pairs, scored, strict=False):
            self.loss.setdefault((p.set, p.kind), {}).setdefault(p.item, []).append(value)
            if st is not None:
                self.token.setdefault(p.set, {})[p.item] = st

    def losses(self, name: str, kind: str) -> list:
        by = self.loss.get((name, kind), {})
        values = [by[i] for i in range(len(by))]
        return values if kind == "pert" else [v[0] for v in values]

    def stats(self, name: str, n: int) -> list:
        return [self.token[name][i] for i in range(n)]


def generate_answers(
    model, tokenizer, template, questions: list[str], batch_size: int, shard: bool = False
) -> list[str]:
    stopwords = [tokenizer.decode([tokenizer.eos_token_id])]

    def answer(qs):
        gens = generate(
            model,
            tokenizer,
            template,
            qs,
            batch_size=batch_size,
            desc="TOFU: generating",
            max_new_tokens=MAX_NEW_TOKENS,
            stop=generation_stop(model),
            mask_pad=True,
            decode={"clean_up_tokenization_spaces": False},
        )
        return [_cut(_clean(tokenizer, g), stopwords) for g in gens]

    return sharded_map(answer, questions) if shard else answer(questions)


def rouge_entry(tokenizer, template, rows: list[dict], gens: list[str]) -> dict:
    scorer = rouge_scorer(("rouge1", "rougeL"), stemmer=True)
    by = {}
    for i, (g, (gt, prompt)) in enumerate(zip(gens, ground_truths(tokenizer, template, rows), strict=False)):
        sc = scorer.score(gt, g)
        by[str(i)] = {
            "rouge1_recall": sc["rouge1"].recall,
            "rougeL_f1": sc["rougeL"].fmeasure,
            "rougeL_recall": sc["rougeL"].recall,
            "input": prompt,
            "ground_truth": gt,
            "generation": g,
        }
    return {"agg_value": float(np.mean([v["rougeL_recall"] for v in by.values()])), "value_by_index": by}


# --------------------------------------------------------------------------- retain logs


@dataclass
class RetainLogs:
    """What Forget Quality and privleak need of a retain model: its forget-set truth ratios
    (open-unlearning's orientation, wrong / correct) and its Min-K% AUC."""

    truth_ratios: list[float]
    mia_min_k: float | None
    source: str


def read_retain_logs(path: str | Path) -> RetainLogs:
    """A retain model's evaluation: an open-unlearning ``TOFU_EVAL.json`` (or the folder holding one,
    as ``unlearn eval --benchmark tofu`` writes it), or a closer-look evaluation folder (its
    ``eval_Forget.jsonl``: ``1 / truth_ratio_r``, and ``MIA AUC Min-K%`` when it was measured)."""
    p = Path(path)
    if p.is_dir() and (p / TOFU_EVAL).is_file():
        p = p / TOFU_EVAL
    if p.is_file():
        try:
            logs = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{p}: not a JSON file ({e})") from None
        entry = logs.get("forget_truth_ratio") if isinstance(logs, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("value_by_index"), dict):
            raise DataError(
                f"{p}: missing field 'forget_truth_ratio' (with 'value_by_index'): not the TOFU_EVAL.json "
                "of a TOFU evaluation"
            )
        ratios = []
        for idx, v in entry["value_by_index"].items():
            score = v.get("score") if isinstance(v, dict) else None
            if not isinstance(score, (int, float)):
                raise DataError(f"{p}: field 'forget_truth_ratio.value_by_index.{idx}.score' must be a number")
            ratios.append(float(score))
        auc = (logs.get("mia_min_k") or {}).get("agg_value")
        return RetainLogs(ratios, float(auc) if isinstance(auc, (int, float)) else None, str(p))
    saved = p / eval_file("Forget")
    if saved.is_file():
        rows = read_records(saved, required=("question",))
        ratios = []
        for r in rows:
            value = r.get("truth_ratio_r")
            if not isinstance(value, (int, float)) or value <= 0:
                raise DataError(f"{r['_source']}: field 'truth_ratio_r' must be a positive number")
            ratios.append(1.0 / float(value))
        summary = json.loads((p / SUMMARY).read_text()) if (p / SUMMARY).is_file() else {}
        auc = summary.get("MIA AUC Min-K%")
        return RetainLogs(ratios, float(auc) if isinstance(auc, (int, float)) else None, str(saved))
    raise DataError(
        f"{path}: --retain-logs needs a TOFU_EVAL.json (open-unlearning's or unlearn's), a folder holding "
        "one, or an unlearn evaluation folder (eval_Forget.jsonl)"
    )


@dataclass
class TofuResult:
    logs: dict  # open-unlearning's TOFU_EVAL.json
    summary: dict  # summary.json


def evaluate_tofu(
    model,
    tokenizer,
    template,
    sets,
    batch_size: int = EVAL_BATCH_SIZE,
    retain_logs: RetainLogs | None = None,
    shard: bool = False,
    gen_batch_size: int | None = None,
) -> TofuResult:
    """Every metric of the TOFU standard on ``model`` (see the module docstring)."""
    questions = {name: [r["question"] for r in sets.of(name)] for name in ("forget", "retain", "ra", "wf")}
    flat = [q for qs in questions.values() for q in qs]
    gens_flat = generate_answers(
        model, tokenizer, template, flat, generation.generation_batch(batch_size, gen_batch_size, model), shard
    )
    gens, start = {}, 0
    for name, qs in questions.items():
        gens[name], start = gens_flat[start : start + len(qs)], start + len(qs)
    pairs = pairs_of(sets)
    scored = Scored(pairs, score_pairs(model, tokenizer, template, pairs, batch_size, shard))
    losses = scored.losses
    logs: dict = {}
    for name in ("forget", "retain", "ra", "wf"):
        logs[f"{name}_Q_A_Prob"] = prob_entry(losses(name, "answer"))
        logs[f"{name}_Q_A_PERT_Prob"] = prob_entry(losses(name, "pert"))
        logs[f"{name}_Q_A_ROUGE"] = rouge_entry(tokenizer, template, sets.of(name), gens[name])
    for name in ("forget", "retain"):
        logs[f"{name}_Q_A_PARA_Prob"] = prob_entry(losses(name, "para"))
    logs["forget_truth_ratio"] = truth_ratio_entry(losses("forget", "para"), losses("forget", "pert"), True)
    logs["retain_Truth_Ratio"] = truth_ratio_entry(losses("retain", "para"), losses("retain", "pert"), False)
    for name in ("ra", "wf"):
        logs[f"{name}_Truth_Ratio"] = truth_ratio_entry(losses(name, "answer"), losses(name, "pert"), False)
        logs[f"{name}_Q_A_Prob_normalised"] = normalised_prob_entry(losses(name, "answer"), losses(name, "pert"))
    logs["model_utility"] = {"agg_value": hmean([logs[k]["agg_value"] for k in UTILITY])}
    forget_stats = scored.stats("forget", len(sets.forget))
    logs["exact_memorization"] = score_entry([mia.exact_memorization(s) for s in forget_stats])
    logs["extraction_strength"] = score_entry([mia.extraction_strength(s) for s in forget_stats])
    unavailable = {}
    if retain_logs is not None:
        forget_tr = [v["score"] for v in logs["forget_truth_ratio"]["value_by_index"].values()]
        logs["forget_quality"] = {"agg_value": float(ks_2samp(forget_tr, retain_logs.truth_ratios).pvalue)}
    else:
        logs["forget_quality"] = {"agg_value": None}
        unavailable["forget_quality"] = "no retain model's evaluation (give --retain-logs TOFU_EVAL.json)"
    if sets.holdout:
        logs["mia_min_k"] = min_k_entry(forget_stats, scored.stats("holdout", len(sets.holdout)))
        ref = retain_logs.mia_min_k if retain_logs is not None and retain_logs.mia_min_k is not None else 0.5
        if ref == 0.5 and (retain_logs is None or retain_logs.mia_min_k is None):
            unavailable["privleak_reference"] = "no retain model's Min-K% AUC: privleak against 0.5, as open-unlearning"
        logs["privleak"] = {"agg_value": mia.privleak(logs["mia_min_k"]["agg_value"], ref)}
    else:
        unavailable["privleak"] = f"no {sets.holdout_config} config in {sets.source}"
    summary = {"benchmark": "tofu", "split": sets.split}
    for key in (
        "forget_quality",
        "model_utility",
        "forget_truth_ratio",
        "forget_Q_A_Prob",
        "forget_Q_A_ROUGE",
        "forget_Q_A_PARA_Prob",
        "forget_Q_A_PERT_Prob",
        "exact_memorization",
        "extraction_strength",
        "privleak",
        "mia_min_k",
        *UTILITY,
    ):
        if key in logs:
            summary[key] = logs[key]["agg_value"]
    if unavailable:
        summary["unavailable"] = unavailable
    return TofuResult(logs, summary)
