"""The evaluation of docs/methods.md §4: which metrics, which summary keys, which output files.

The sets come from :mod:`unlearn.evaluation.sets`. ``evaluate`` generates the
answers of every set in one length-sorted pass, runs one NLL pass per set over the answers,
paraphrases and perturbed answers together, calls each judge at most once per set (each distinct
text embedded, each distinct pair judged, once per evaluation; no NLI for items under the ROUGE
floor, which count as not entailed), and turns the results into per-item records and the summary
with the official keys.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from unlearn.config import EVAL_BATCH_SIZE
from unlearn.distributed import sharded_map
from unlearn.evaluation import metrics as M
from unlearn.evaluation.generation import generate, generation_batch
from unlearn.evaluation.intervals import (
    RESAMPLES,
    SEED,
    Interval,
    KsResolution,
    as_json,
    ks_resolution,
    percentile_intervals,
)
from unlearn.evaluation.judges import DistinctEmbedder, DistinctNLI, Unavailable, cosine_similarity_batch
from unlearn.evaluation.scoring import answer_nlls
from unlearn.evaluation.sets import EvalSet
from unlearn.io import atomic_write_json, atomic_write_jsonl, json_safe
from unlearn.rundir import INTERVALS, SUMMARY, eval_file

log = logging.getLogger("unlearn")

METRICS = ("ROUGE", "Probability", "Truth Ratio", "Token Entropy", "Cosine Similarity", "Entailment Score")
ITEM_KEYS = dict(
    zip(
        METRICS,
        ("rouge", "probability", "truth_ratio", "token_entropy", "cosine_similarity", "entailment"),
        strict=False,
    )
)
FORGET_EFFICACY_METRICS = ("ROUGE", "Probability", "Truth Ratio", "Cosine Similarity", "Entailment Score")


# --------------------------------------------------------------------------- evaluation


@dataclass
class Evaluation:
    summary: dict
    items: dict[str, list[dict]] = field(default_factory=dict)  # set name -> per-item records
    intervals: dict[str, Interval] = field(default_factory=dict)  # 95% bootstrap intervals of the summary
    resolution: KsResolution | None = None  # what Forget Quality's KS test can tell on these items

    def truth_ratios(self, set_name: str = "Forget") -> list[float]:
        return [r["truth_ratio_r"] for r in self.items[set_name]]


def set_nlls(model, tokenizer, fmt, s: EvalSet, batch_size: int, with_answers: bool = True):
    """(answer, paraphrase, perturbed (N, K)) NLLs of a set from ONE sorted pass over all pairs."""
    q, n = s.questions, len(s.rows)
    if not s.truth:  # answers only: no Truth Ratio for this set
        a = answer_nlls(model, tokenizer, fmt, q, s.answers, batch_size, desc=f"{s.name}: answer NLLs")
        return a, a, np.zeros((n, 0))
    pert = s.perturbed
    k = len(pert[0])
    para = s.paraphrases
    answers = s.answers if with_answers or para is None else []
    texts = answers + (para or []) + [p for row in pert for p in row]
    questions = q[: len(answers)] + (q if para else []) + [x for x in q for _ in range(k)]
    nll = answer_nlls(model, tokenizer, fmt, questions, texts, batch_size, desc=f"{s.name}: answer NLLs")
    a = nll[: len(answers)]
    p = nll[len(answers) : len(answers) + n] if para else a
    return a, p, nll[len(nll) - n * k :].reshape(n, k)


def _needs_judge(rouge) -> list[int]:
    """The items the NLI judge is asked about: those at or above the ROUGE floor (the others
    count as not entailed whatever it says)."""
    return [i for i, r in enumerate(rouge) if r >= M.ENTAILMENT_MIN_ROUGE]


def _distinct_judges(embedder, nli):
    """The judges of one evaluation: each distinct text embedded, each distinct pair judged, once."""
    if not isinstance(embedder, DistinctEmbedder):
        embedder = DistinctEmbedder(embedder)
    if not isinstance(nli, (Unavailable, DistinctNLI)):
        nli = DistinctNLI(nli)
    return embedder, nli


def _generate_sets(model, tokenizer, fmt, sets: list[EvalSet], batch_size: int, shard: bool) -> list[list[str]]:
    """Greedy answers to every set's questions, from ONE length-sorted pass over all of them:
    batches are full even when a set is small. An answer does not depend on its batch (see
    :func:`unlearn.evaluation.scoring.generate`). ``shard``: each process answers its share."""
    questions = [q for s in sets for q in s.questions]

    def answer(qs):
        return generate(model, tokenizer, fmt, qs, batch_size=batch_size, desc="generating")

    gens = sharded_map(answer, questions) if shard else answer(questions)
    out, start = [], 0
    for s in sets:
        out.append(gens[start : start + len(s.rows)])
        start += len(s.rows)
    return out


def _evaluate_set(model, tokenizer, fmt, s: EvalSet, gens: list[str], embedder, nli, batch_size: int) -> list[dict]:
    a_nll, p_nll, k_nll = set_nlls(model, tokenizer, fmt, s, batch_size)
    answers, refs, cos_refs = s.answers, s.references, s.cosine_references
    forget = s.kind == "forget"
    values = {"ROUGE": M.rouge_l_recall_items(gens, answers)}
    values["Probability"] = (
        M.normalized_probability_items(a_nll, k_nll) if s.kind == "general" else M.probability_items(a_nll)
    )
    values["Truth Ratio"] = M.truth_ratio_items(p_nll, k_nll, forget) if s.truth else None
    values["Token Entropy"] = np.array([M.token_entropy(tokenizer.tokenize(g)) for g in gens])
    values["Cosine Similarity"] = cosine_similarity_batch(embedder, gens, cos_refs)
    labels = None
    if isinstance(nli, Unavailable):
        values["Entailment Score"] = None
    else:
        # Forgetting: does the generation still state the answer? Utility: does the generation
        # say what the answer says? Real world: the generation is the premise everywhere.
        gen_first = forget or s.layout == "real_world"
        premises, hypotheses = (gens, refs) if gen_first else (refs, gens)
        # An item under the ROUGE floor counts as not entailed whatever the judge says: only the
        # others are judged, and their label is recorded (``nli_label`` stays null for the rest).
        judged = _needs_judge(values["ROUGE"])
        labels = [None] * len(gens)
        if judged:
            for i, label in zip(
                judged, nli.predict([premises[i] for i in judged], [hypotheses[i] for i in judged]), strict=False
            ):
                labels[i] = label
        values["Entailment Score"] = M.entailment_items(["" if x is None else x for x in labels], values["ROUGE"])
    ratios = M.truth_ratios(p_nll, k_nll) if s.truth else [None] * len(s.rows)
    records = []
    for i, row in enumerate(s.rows):
        rec = {"question": row[s.question_key], "generation": gens[i], "ground_truth": answers[i]}
        if refs[i] != answers[i]:
            rec["reference"] = refs[i]
        if cos_refs[i] != refs[i]:
            rec["cosine_reference"] = cos_refs[i]
        for metric, key in ITEM_KEYS.items():
            rec[key] = None if values[metric] is None else float(values[metric][i])
        rec["truth_ratio_r"] = None if ratios[i] is None else float(ratios[i])
        rec["nli_label"] = None if labels is None else labels[i]
        rec["answer_nll"] = float(a_nll[i])
        if s.kind != "general" and s.truth:
            rec["paraphrased_nll"] = float(p_nll[i])
        rec["perturbed_nll"] = [float(x) for x in k_nll[i]]
        records.append(rec)
    return records


def _mean(records: list[dict], key: str) -> float | None:
    vals = [r[key] for r in records]
    return None if any(v is None for v in vals) else float(np.mean(vals))


def evaluate(
    model,
    tokenizer,
    fmt,
    sets: list[EvalSet],
    embedder,
    nli,
    batch_size: int = EVAL_BATCH_SIZE,
    retain_ratios=None,
    shard: bool = False,
    gen_batch_size: int | None = None,
    done: dict[str, list[dict]] | None = None,
) -> Evaluation:
    """Run every set once and compute the six metrics, Model Utility, Forget Efficacy and, with
    ``retain_ratios`` (a retain model's raw truth ratios on the same forget items), Forget Quality.

    ``shard``: with several processes (``accelerate launch``), each evaluates its share of every
    set and the per-item records are gathered, so every process gets the whole evaluation. All
    processes must then call it.

    ``done``: per-item records of some sets already evaluated on this very model with these
    settings (the last evaluation while unlearning, :mod:`unlearn.evaluation.during`): they are taken
    as they are, not computed again (an answer and a score do not depend on what else is batched)."""
    unavailable = nli.reason if isinstance(nli, Unavailable) else None  # (said once, when it was loaded)
    embedder, nli = _distinct_judges(embedder, nli)
    ev = Evaluation(summary={})
    done = done or {}
    todo = [s for s in sets if s.name not in done]
    generated = (
        dict(
            zip(
                (s.name for s in todo),
                _generate_sets(model, tokenizer, fmt, todo, generation_batch(batch_size, gen_batch_size, model), shard),
                strict=False,
            )
        )
        if todo
        else {}
    )
    for s in sets:
        if s.name in done:
            ev.items[s.name] = done[s.name]
        elif shard:
            gens = generated[s.name]
            ev.items[s.name] = sharded_map(
                lambda idx, s=s, gens=gens: _evaluate_set(
                    model,
                    tokenizer,
                    fmt,
                    replace(s, rows=[s.rows[i] for i in idx]),
                    [gens[i] for i in idx],
                    embedder,
                    nli,
                    batch_size,
                ),
                list(range(len(s.rows))),
            )
        else:
            ev.items[s.name] = _evaluate_set(model, tokenizer, fmt, s, generated[s.name], embedder, nli, batch_size)
        for metric, key in ITEM_KEYS.items():
            ev.summary[f"{s.name} {metric}"] = _mean(ev.items[s.name], key)
    forget_ratios = None
    if "Forget" in ev.items and retain_ratios is not None and all(st.truth for st in sets if st.name == "Forget"):
        forget_ratios = ev.truth_ratios("Forget")
        if len(retain_ratios) != len(forget_ratios):
            raise ValueError(f"{len(retain_ratios)} retain-model truth ratios for {len(forget_ratios)} forget items")
    means = {s.name: {m: ev.summary[f"{s.name} {m}"] for m in METRICS} for s in sets}
    ev.summary.update(composites(means, sets, forget_ratios, retain_ratios))
    summary = ev.summary
    missing = {}
    if unavailable:
        missing["Entailment Score"] = unavailable
    no_truth = [st.name for st in sets if not st.truth]
    if no_truth:
        missing["Truth Ratio"] = f"the rows of {', '.join(no_truth)} carry no paraphrased_answer and perturbed_answer"
    if missing:
        summary["unavailable"] = missing
    partial = partial_values(means, sets)
    if partial:
        summary["partial"] = partial
    ev.intervals = summary_intervals(ev, sets, retain_ratios if forget_ratios is not None else None)
    if forget_ratios is not None:
        ev.resolution = ks_resolution(len(forget_ratios), len(retain_ratios))
    return ev


def composites(means: dict[str, dict], sets: list[EvalSet], forget_ratios=None, retain_ratios=None) -> dict:
    """Model Utility (every retain and general set, and Retain alone), Forget Efficacy and, given the
    two models' forget truth ratios, Forget Quality, from each set's metric means."""
    out, names = {}, [s.name for s in sets]
    utility = [s.name for s in sets if s.kind in ("retain", "general")]
    if utility:
        out["Model Utility"] = M.model_utility(means[n][m] for n in utility for m in METRICS)
    if "Retain" in names:
        out["Model Utility Retain"] = M.model_utility(means["Retain"][m] for m in METRICS)
    if "Forget" in names:
        out["Forget Efficacy"] = M.forget_efficacy(means["Forget"][m] for m in FORGET_EFFICACY_METRICS)
        if forget_ratios is not None:
            out["Forget Quality"], out["Forget Quality KS statistic"] = M.forget_quality_from_ratios(
                forget_ratios, retain_ratios
            )
    return out


def summary_intervals(ev: Evaluation, sets: list[EvalSet], retain_ratios=None) -> dict[str, Interval]:
    """95% intervals of every summary value (:mod:`.intervals`): the items of each set resampled
    (one draw per set for all its metrics), and Model Utility, Forget Efficacy and Forget Quality
    recomputed through their definitions on each resample (Forget Quality on the same resampled items
    of both models: the truth ratios are paired by item). Vectorised over the resamples."""
    rng = np.random.default_rng(SEED)
    draws: dict[str, np.ndarray] = {}
    means, picks = {}, {}
    for s in sets:
        rows = ev.items[s.name]
        values = np.array([[np.nan if r.get(k) is None else r[k] for k in ITEM_KEYS.values()] for r in rows], float)
        if not len(rows):
            continue
        picks[s.name] = rng.integers(0, len(rows), (RESAMPLES, len(rows)))
        with warnings.catch_warnings():  # a metric with no value in a resample is NaN there
            warnings.simplefilter("ignore", RuntimeWarning)
            means[s.name] = np.nanmean(values.reshape(len(rows), len(METRICS))[picks[s.name]], axis=1)
        for j, m in enumerate(METRICS):
            draws[f"{s.name} {m}"] = means[s.name][:, j]
    utility = [s.name for s in sets if s.kind in ("retain", "general") and s.name in means]
    if utility and "Model Utility" in ev.summary:
        draws["Model Utility"] = _hmean_rows(np.concatenate([means[n] for n in utility], axis=1))
    if "Retain" in means and "Model Utility Retain" in ev.summary:
        draws["Model Utility Retain"] = _hmean_rows(means["Retain"])
    if "Forget" in means and "Forget Efficacy" in ev.summary:
        cols = [METRICS.index(m) for m in FORGET_EFFICACY_METRICS]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            draws["Forget Efficacy"] = 1.0 - np.nanmean(means["Forget"][:, cols], axis=1)
    if retain_ratios is not None and "Forget Quality" in ev.summary and "Forget" in picks:
        ratios, retain = np.asarray(ev.truth_ratios("Forget"), float), np.asarray(retain_ratios, float)
        tests = [M.forget_quality_from_ratios(ratios[i], retain[i]) for i in picks["Forget"]]
        draws["Forget Quality"] = np.array([t[0] for t in tests])
        draws["Forget Quality KS statistic"] = np.array([t[1] for t in tests])
    return percentile_intervals({k: ev.summary[k] for k in draws if _finite_number(ev.summary.get(k))}, draws)


def _finite_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _hmean_rows(x: np.ndarray) -> np.ndarray:
    """Model Utility (:func:`unlearn.evaluation.metrics.model_utility`) of each row: the harmonic mean
    of its available values, 0 when one is 0 or less, NaN when none is available."""
    available = ~np.isnan(x)
    count = available.sum(axis=1)
    safe = np.where(available & (x > 0), x, 1.0)
    inverse = np.where(available, 1.0 / safe, 0.0).sum(axis=1)
    out = np.where(count > 0, count / np.where(inverse > 0, inverse, 1.0), np.nan)
    return np.where((available & (x <= 0)).any(axis=1), 0.0, out)


def write_evaluation(ev: Evaluation, out_dir: str | Path) -> Path:
    """``summary.json`` and one ``eval_<Set_Name>.jsonl`` per set, each written atomically."""
    out = Path(out_dir)
    for name, records in ev.items.items():
        atomic_write_jsonl(out / eval_file(name), json_safe(records))
    if ev.intervals:
        extra = {"forget_quality_resolution": asdict(ev.resolution)} if ev.resolution else {}
        atomic_write_json(out / INTERVALS, json_safe(as_json(ev.intervals, **extra)))
    atomic_write_json(out / SUMMARY, json_safe(ev.summary))  # last: it marks a complete result
    return out


def partial_values(means: dict[str, dict], sets: list[EvalSet]) -> dict[str, str]:
    """``{"Model Utility": "15 of 18 values"}``: the composites computed without some of their parts."""
    parts = {"Forget Efficacy": [("Forget", m) for m in FORGET_EFFICACY_METRICS]}
    utility = [s.name for s in sets if s.kind in ("retain", "general")]
    if utility:
        parts["Model Utility"] = [(n, m) for n in utility for m in METRICS]
    if "Retain" in means:
        parts["Model Utility Retain"] = [("Retain", m) for m in METRICS]
    out = {}
    for key, wanted in parts.items():
        have = sum(means.get(n, {}).get(m) is not None for n, m in wanted)
        if wanted[0][0] in means and have < len(wanted):
            out[key] = f"{have} of {len(wanted)} values"
    return out


def print_table(summary: dict, intervals: dict | None = None, resolution: KsResolution | None = None) -> None:
    """The summary with each value's 95% interval (``value ± half-width``); a composite computed
    without some of its parts is starred and says how many it had."""
    intervals = intervals or {}
    sets = list(dict.fromkeys(k[: -len(m) - 1] for k in summary for m in METRICS if k.endswith(" " + m)))
    table = Table(title="Evaluation (± half the 95% bootstrap interval over the set's items)")
    table.add_column("set", no_wrap=True)
    for header in ("ROUGE", "Prob.", "Truth R.", "Entropy", "Cosine", "Entail."):  # METRICS, abridged
        table.add_column(header, justify="right", no_wrap=True)

    def cell(key: str, digits: int = 3) -> str:
        value = summary.get(key)
        if value is None:
            return "n/a"
        iv = intervals.get(key)
        return iv.text(digits) if iv is not None else f"{value:.{digits}f}"

    for s in sets:
        table.add_row(s, *(cell(f"{s} {m}").replace(" ± 0.", "±.") for m in METRICS))
    console = Console(width=max(Console().width, 110))  # six value±interval columns
    console.print(table)
    partial = summary.get("partial", {})
    for key in ("Model Utility", "Model Utility Retain", "Forget Efficacy", "Forget Quality"):
        if key in summary:
            iv = intervals.get(key)
            span = f" [{iv.lo:.4f}, {iv.hi:.4f}]" if iv is not None else ""
            star, note = ("*", f" ({partial[key]}: see below)") if key in partial else ("", "")
            line = f"{key}{star}: {summary[key]:.4f}{span}{note}"
            if key == "Forget Quality" and resolution is not None:
                line += f" ({resolution.text()}{'; too few items to tell much' if resolution.coarse else ''})"
            console.print(line)
    for key in (k for k in summary if k.startswith("MIA AUC")):
        console.print(f"{key} (forget vs holdout; 0.5: indistinguishable): {summary[key]:.4f}")
    for metric, reason in summary.get("unavailable", {}).items():
        console.print(f"{metric} unavailable: {reason}")
