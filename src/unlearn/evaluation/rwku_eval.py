"""RWKU's evaluation of a model: every probe answered and scored as RWKU's code does
(:mod:`unlearn.evaluation.rwku_metrics`), the means it reports, their bootstrap intervals, the table
and the files. The RWKU protocol (:mod:`unlearn.protocols.rwku`) reads the sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unlearn.config import EVAL_BATCH_SIZE
from unlearn.evaluation import rwku_metrics as R
from unlearn.evaluation.intervals import as_json, bootstrap, mean_of, print_table
from unlearn.evaluation.muse_metrics import text_stats
from unlearn.io import atomic_write_json, json_safe
from unlearn.rundir import INTERVALS, SUMMARY

RWKU_EVAL = "RWKU_EVAL.json"


def _probes(model, tokenizer, rows: list[dict], level: int, in_context: bool, batch: int, desc: str) -> list[dict]:
    prompts = [R.probe_prompt(tokenizer, r, level, in_context) for r in rows]
    stops = R.stop_ids(tokenizer, R.PROBE_STOPS)
    outs = R.generate(model, tokenizer, prompts, R.PROBE_NEW_TOKENS, stops, batch, desc)
    items = []
    for r, o in zip(rows, outs, strict=True):
        answer = o.strip() or "NOANSWER"
        items.append(
            {
                "query": r["query"],
                "answer": r["answer"],
                "prediction": answer,
                "rouge_l_recall": R.rouge_l_recall(answer, r["answer"]),
                "type": r.get("type"),
            }
        )
    return items


def _mmlu(model, tokenizer, rows, in_context, batch):
    candidates = [tokenizer.encode(" " + c, add_special_tokens=False)[-1] for c in R.CHOICES]
    prompts = [R.mmlu_prompt(tokenizer, r, in_context) for r in rows]
    found = R.next_token_choice(model, tokenizer, prompts, candidates, batch, "RWKU: MMLU")
    return [
        {"question": r["question"], "answer": r["answer"], "prediction": p, "correct": float(p == r["answer"])}
        for r, p in zip(rows, found, strict=True)
    ]


def _bbh(model, tokenizer, rows, in_context, batch):
    prompts = [R.bbh_prompt(tokenizer, r, in_context) for r in rows]
    outs = R.generate(model, tokenizer, prompts, R.LONG_NEW_TOKENS, R.stop_ids(tokenizer, ()), batch, "RWKU: BBH")
    items = []
    for r, o in zip(rows, outs, strict=True):
        pred = R.bbh_answer(o)
        items.append(
            {
                "question": r["question"],
                "answer": r["answer"],
                "raw_output": o,
                "prediction": pred,
                "em": R.exact_match(pred, r["answer"]),
            }
        )
    return items


def _truthfulqa(model, tokenizer, rows, in_context, batch):
    prompts = [R.truthfulqa_prompt(tokenizer, r, in_context) for r in rows]
    pairs, where = [], []
    for i, (r, p) in enumerate(zip(rows, prompts, strict=True)):
        for key in ("mc1_targets", "mc2_targets"):
            for c in r[key]["choices"]:
                where.append((i, key))
                pairs.append((p, c))
    logp = R.completion_logprobs(model, tokenizer, pairs, batch, "RWKU: TruthfulQA")
    scored: dict = {}
    for (i, key), (_, c), lp in zip(where, pairs, logp, strict=True):
        scored.setdefault((i, key), {})[c] = lp
    items = []
    for i, r in enumerate(rows):
        s1 = scored[(i, "mc1_targets")]
        t1 = r["mc1_targets"]
        true1 = [s1[c] for c, lab in zip(t1["choices"], t1["labels"], strict=True) if lab == 1]
        false1 = [s1[c] for c, lab in zip(t1["choices"], t1["labels"], strict=True) if lab != 1]
        s2, t2 = scored[(i, "mc2_targets")], r["mc2_targets"]
        p_true = np.exp([s2[c] for c, lab in zip(t2["choices"], t2["labels"], strict=True) if lab == 1])
        p_false = np.exp([s2[c] for c, lab in zip(t2["choices"], t2["labels"], strict=True) if lab != 1])
        total = p_true.sum() + p_false.sum()
        mc2 = float(p_true.sum() / total) if total > 0 else float("nan")
        items.append({"question": r["question"], "MC1": float(true1[0] > max(false1)), "MC2": mc2})
    return items


def _triviaqa(model, tokenizer, rows, in_context, batch):
    prompts = [R.triviaqa_prompt(tokenizer, r, in_context) for r in rows]
    stops = R.stop_ids(tokenizer, R.CHAT_STOPS)
    outs = R.generate(model, tokenizer, prompts, R.PROBE_NEW_TOKENS, stops, batch, "RWKU: TriviaQA")
    return [
        {
            "question": r["question"],
            "answers": r["answers"],
            "prediction": o,
            "em": R.exact_match(o, r["answers"]),
            "f1": R.f1(o, r["answers"]),
        }
        for r, o in zip(rows, outs, strict=True)
    ]


def _fluency(model, tokenizer, rows, in_context, batch):
    prompts = [R.fluency_prompt(tokenizer, r, in_context) for r in rows]
    stops = R.stop_ids(tokenizer, R.CHAT_STOPS)
    outs = R.generate(model, tokenizer, prompts, R.LONG_NEW_TOKENS, stops, batch, "RWKU: fluency")
    return [
        {"instruction": r["instruction"], "prediction": o, "entropy": R.ngram_entropy(o)}
        for r, o in zip(rows, outs, strict=True)
    ]


def _mia(model, tokenizer, rows, in_context, batch, side):
    texts = [R.icu(r, r["text"], in_context) for r in rows]
    stats = text_stats(model, tokenizer, texts, batch, f"RWKU: MIA {side}")
    return [{"text": t, **R.mia_scores(st, t)} for t, st in zip(texts, stats, strict=True)]


UTILITY_RUN = {"mmlu": _mmlu, "bbh": _bbh, "truthfulqa": _truthfulqa, "triviaqa": _triviaqa, "fluency": _fluency}
# summary key -> (log group, item field); the summary is the mean of the field over the group's items
VALUES = {
    **{f"forget_level{lv}": (f"forget_level{lv}", "rouge_l_recall") for lv in (1, 2, 3)},
    **{f"neighbor_level{lv}": (f"neighbor_level{lv}", "rouge_l_recall") for lv in (1, 2)},
    **{f"mia_{s}_{k}": (f"mia_{s}", k) for s in ("forget", "retain") for k in ("loss", "zlib", "mink++_0.2")},
    "utility_mmlu": ("mmlu", "correct"),
    "utility_bbh": ("bbh", "em"),
    "utility_truthfulqa_mc1": ("truthfulqa", "MC1"),
    "utility_truthfulqa_mc2": ("truthfulqa", "MC2"),
    "utility_triviaqa_em": ("triviaqa", "em"),
    "utility_triviaqa_f1": ("triviaqa", "f1"),
    "utility_fluency": ("fluency", "entropy"),
}
ALL = {
    "forget_all": ("forget_level1", "forget_level2", "forget_level3"),
    "neighbor_all": ("neighbor_level1", "neighbor_level2"),
}


def summarise(logs: dict, idx: dict | None = None) -> dict:
    """The summary values from the per-item logs (on the items ``idx[group]``, for the bootstrap):
    each value the mean of its items' field (NaNs left out: RWKU's MIA skips NaN losses), and the
    ``_all`` values the mean over every probe of their levels (the paper's "All", which its tables
    show between the levels' values, weighted by their probe counts)."""

    def values(group: str, name: str) -> np.ndarray:
        v = np.array([np.nan if it[name] is None else it[name] for it in logs[group]], dtype=np.float64)
        return v[idx[group]] if idx else v

    out: dict = {}
    for key, (group, name) in VALUES.items():
        if logs.get(group):
            chosen = values(group, name)
            out[key] = mean_of(chosen, np.arange(len(chosen)))
    for key, parts in ALL.items():
        if all(logs.get(p) for p in parts):
            pooled = np.concatenate([values(p, "rouge_l_recall") for p in parts])
            out[key] = mean_of(pooled, np.arange(len(pooled)))
    return out


def evaluate_rwku(model, tokenizer, sets, batch_size: int = EVAL_BATCH_SIZE) -> tuple[dict, dict]:
    """``(logs, summary)``: every probe's answer and score, and the means RWKU reports."""
    ic = sets.in_context
    logs: dict = {}
    for level, rows in sets.forget.items():
        logs[f"forget_level{level}"] = _probes(model, tokenizer, rows, level, ic, batch_size, f"RWKU: forget {level}")
    for level, rows in sets.neighbor.items():
        logs[f"neighbor_level{level}"] = _probes(
            model, tokenizer, rows, level, ic, batch_size, f"RWKU: neighbor {level}"
        )
    for side, rows in sets.mia.items():
        logs[f"mia_{side}"] = _mia(model, tokenizer, rows, ic, batch_size, side) if rows else []
    for name, rows in sets.utility.items():
        logs[name] = UTILITY_RUN[name](model, tokenizer, rows, ic, batch_size) if rows else []
    summary = {"benchmark": "rwku", "targets": sets.targets.label, **summarise(logs)}
    if ic:
        summary["in_context_unlearning"] = True
    unavailable = {g: "no items of these targets" for g, items in logs.items() if not items}
    if logs.get("fluency") and not R.has_punkt():
        unavailable["utility_fluency"] = (
            "computed without nltk's punkt sentence model (RWKU downloads it): words are split by the "
            "Treebank tokenizer over the whole answer"
        )
    if unavailable:
        summary["unavailable"] = unavailable
    return logs, summary


def rwku_intervals(logs: dict) -> dict:
    sizes = {g: len(items) for g, items in logs.items() if items}
    return bootstrap(sizes, lambda idx: summarise(logs, idx))


ROWS = (
    ("forgotten: fill-in-the-blank (ROUGE-L recall)", "forget_level1"),
    ("forgotten: question answering", "forget_level2"),
    ("forgotten: adversarial probes", "forget_level3"),
    ("forgotten: all levels", "forget_all"),
    ("kept: neighbours, fill-in-the-blank", "neighbor_level1"),
    ("kept: neighbours, questions", "neighbor_level2"),
    ("MIA on forget texts (LOSS, log-lik.)", "mia_forget_loss"),
    ("MIA on retain texts (LOSS, log-lik.)", "mia_retain_loss"),
    ("utility: MMLU accuracy", "utility_mmlu"),
    ("utility: BBH exact match", "utility_bbh"),
    ("utility: TruthfulQA MC1", "utility_truthfulqa_mc1"),
    ("utility: TriviaQA F1", "utility_triviaqa_f1"),
    ("utility: fluency (n-gram entropy)", "utility_fluency"),
)


def print_rwku(summary: dict, intervals: dict | None = None) -> None:
    title = f"RWKU, targets {summary.get('targets')} (95% bootstrap interval over the items)"
    if summary.get("in_context_unlearning"):
        title += " - in-context unlearning: no weights changed"
    print_table(title, "what it says", ROWS, summary, intervals)


def write_rwku(logs: dict, summary: dict, intervals: dict, out_dir) -> None:
    out = Path(out_dir)
    atomic_write_json(out / RWKU_EVAL, json_safe(logs))
    if intervals:
        atomic_write_json(out / INTERVALS, json_safe(as_json(intervals)))
    atomic_write_json(out / SUMMARY, json_safe(summary))  # last: it marks a complete result
