"""MUSE (``--benchmark muse``): unlearning raw text, with the benchmark's own metrics.

Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation for Language Models" (arXiv
2407.06460); the definitions are those of its code (``swj0419/muse_bench``: ``eval.py``,
``metrics/{verbmem,knowmem,privleak,logger}.py``), reproduced:

* **data**: the hub sets ``muse-bench/MUSE-News`` / ``MUSE-Books`` (configs ``raw``, ``verbmem``,
  ``knowmem``, ``privleak``, ``scal``, ``sust``) or a local snapshot folder holding one JSON-lines file
  per config and split (``raw/forget.json``, ``raw/retain1.json``, ``raw/holdout.json``,
  ``verbmem/forget.json``, ``knowmem/forget_qa.json``, ``knowmem/forget_qa_icl.json``,
  ``knowmem/retain_qa.json``, ``knowmem/retain_qa_icl.json``, optionally ``privleak/*.json``,
  ``scal/forget_N.json``, ``sust/forget_N.json``);
* **training**: the split's forget corpus (``--split forget``, ``scal/forget_N``, ``sust/forget_N``)
  against ``raw/retain1``, as text chunked to ``--max-length`` tokens
  (:func:`unlearn.encoding.chunk_texts`);
* **VerbMem** (``forget_verbmem_ROUGE``): the greedy continuation (128 new tokens) of each
  ``verbmem/forget`` prompt (BOS added) against the first 128 tokens of its ``gt`` (BOS counted),
  ROUGE-L F1 without stemming;
* **KnowMem** (``forget_knowmem_ROUGE``, ``retain_knowmem_ROUGE``): the answer (32 new tokens, cut at
  ``"\\n\\n"``, ``"\\nQuestion"``, ``"Question:"``) to ``Question: …\\nAnswer: `` after the ICL
  examples ``Question: q\\nAnswer: a\\n\\n``, ROUGE-L F1 without stemming;
* **PrivLeak** (``privleak``): Min-40% (the mean of the ``int(0.4·n)`` lowest log-probabilities of a
  text's tokens after BOS) AUC of the forget texts against the holdout texts, relative to the retain
  model's: ``(AUC − AUC_retain) / AUC_retain × 100`` in MUSE's orientation (the holdout labelled
  member); ``mia_min_k`` keeps open-unlearning's orientation (``1 − MUSE's``). Without a retain model's
  AUC the reference is 0.5, as open-unlearning. ``mia_min_k_plus_plus``: the Min-K%++ AUC of the same
  texts, for reference.

ROUGE values are in [0, 1] (MUSE prints them ×100). Results: ``summary.json`` and
``MUSE_EVAL.json`` (open-unlearning's per-metric layout).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from unlearn import distributed
from unlearn.config import EVAL_BATCH_SIZE
from unlearn.data import UnlearningData, hub_records, read_records
from unlearn.encoding import Encoded
from unlearn.errors import DataError
from unlearn.evaluation import mia
from unlearn.evaluation.metrics import rouge_scorer
from unlearn.evaluation.open_unlearning import generation_stop
from unlearn.evaluation.scoring import generate, generation_batch, score_sequences
from unlearn.io import atomic_write_json, json_safe
from unlearn.protocols.base import Protocol
from unlearn.protocols.closer_look import PROTOCOL as CLOSER_LOOK
from unlearn.protocols.closer_look import refuse_closer_look_flags
from unlearn.rundir import SUMMARY

log = logging.getLogger("unlearn")

HUB_SETS = ("muse-bench/MUSE-News", "muse-bench/MUSE-Books")
SPLITS = ("forget",) + tuple(f"{g}/forget_{i}" for g in ("scal", "sust") for i in range(1, 5))
RETAIN_SPLIT = "retain1"  # MUSE's and open-unlearning's training retain corpus
VERBMEM_NEW_TOKENS = 128
KNOWMEM_NEW_TOKENS = 32
KNOWMEM_STOP = ("\n\n", "\nQuestion", "Question:")
MIN_K = mia.DEFAULT_K  # Min-40%
MAX_LENGTH = 2048  # texts scored for PrivLeak are cut here (MUSE scores them whole)
MUSE_EVAL = "MUSE_EVAL.json"


def muse_split(split: str) -> str:
    """``--split`` under MUSE: ``forget`` (the default; TOFU's default ``forget01`` reads as it),
    ``scal/forget_N`` or ``sust/forget_N`` (N = 1..4)."""
    split = "forget" if split == "forget01" else split
    if split not in SPLITS:
        raise DataError(f"unknown MUSE split '{split}' (valid: {', '.join(SPLITS)})")
    return split


class MuseSource:
    """A MUSE corpus: a hub id (``muse-bench/MUSE-News``) or a snapshot folder (``config/split.json``)."""

    def __init__(self, data: str | Path):
        self.data = str(data)
        self.folder = Path(self.data) if Path(self.data).is_dir() else None
        if self.folder is None and self.data not in HUB_SETS:
            raise DataError(
                f"{self.data}: MUSE reads {' or '.join(HUB_SETS)} (hub) or a snapshot folder of their "
                "configs (raw/forget.json, knowmem/forget_qa.json, ...); not found"
            )

    def has(self, config: str, split: str) -> bool:
        return self.folder is None or (self.folder / config / f"{split}.json").is_file()

    def rows(self, config: str, split: str, required=("text",)) -> list[dict]:
        if self.folder is not None:
            path = self.folder / config / f"{split}.json"
            if not path.is_file():
                raise DataError(
                    f"{path}: missing; a MUSE snapshot folder holds one JSON-lines file per config and "
                    "split (raw/forget.json, verbmem/forget.json, knowmem/forget_qa.json, ...)"
                )
            return read_records(path, required=required)
        return hub_records(self.data, config, split, required, label=f"{self.data}/{config}/{split}")


def training_rows(data: str, split: str) -> tuple[list[dict], list[dict]]:
    """``(forget, retain)`` text rows: the split's forget corpus and ``raw/retain1``."""
    config, _, name = muse_split(split).rpartition("/")
    src = MuseSource(data)
    return src.rows(config or "raw", name), src.rows("raw", RETAIN_SPLIT)


@dataclass
class MuseSets:
    verbmem: list[dict] | None
    forget_qa: list[dict] | None
    forget_icl: list[dict]
    retain_qa: list[dict] | None
    retain_icl: list[dict]
    privleak_forget: list[dict] | None
    privleak_holdout: list[dict] | None
    source: str
    missing: dict


def load_muse_sets(data: str | Path) -> MuseSets:
    """The evaluation sets, checked; a criterion whose files are absent is left out with its reason."""
    src = MuseSource(data)
    missing = {}

    def get(config, split, required):
        if src.has(config, split):
            return src.rows(config, split, required)
        missing[f"{config}/{split}"] = f"no {config}/{split}.json in {data}"
        return None

    verbmem = get("verbmem", "forget", ("prompt", "gt"))
    qa = ("question", "answer")
    forget_qa, retain_qa = get("knowmem", "forget_qa", qa), get("knowmem", "retain_qa", qa)
    forget_icl = (get("knowmem", "forget_qa_icl", qa) or []) if forget_qa else []
    retain_icl = (get("knowmem", "retain_qa_icl", qa) or []) if retain_qa else []
    if src.has("privleak", "forget") and src.has("privleak", "holdout"):
        pf, ph = src.rows("privleak", "forget"), src.rows("privleak", "holdout")
    else:
        pf, ph = get("raw", "forget", ("text",)), get("raw", "holdout", ("text",))
    if not any((verbmem, forget_qa, retain_qa, pf and ph)):
        raise DataError(f"{data}: no MUSE evaluation files (verbmem/forget.json, knowmem/*_qa.json, raw/holdout.json)")
    return MuseSets(
        verbmem,
        forget_qa,
        forget_icl,
        retain_qa,
        retain_icl,
        pf if ph else None,
        ph if pf else None,
        str(data),
        missing,
    )


# --------------------------------------------------------------------------- metrics


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
    out = generate(
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
    _, stats = score_sequences(model, tokenizer, seqs, batch_size, stats_for=range(len(seqs)), texts=texts, desc=desc)
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


def read_retain_auc(path: str | Path) -> float:
    """A retain model's Min-40% AUC: its ``MUSE_EVAL.json`` (ours or open-unlearning's), or the folder holding it."""
    p = Path(path)
    if p.is_dir():
        p = p / MUSE_EVAL
    if not p.is_file():
        raise DataError(f"{path}: --retain-logs needs a retain model's MUSE_EVAL.json (or the folder holding it)")
    try:
        logs = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{p}: not a JSON file ({e})") from None
    value = (logs.get("mia_min_k") or {}).get("agg_value") if isinstance(logs, dict) else None
    if not isinstance(value, (int, float)):
        raise DataError(f"{p}: missing field 'mia_min_k.agg_value'")
    return float(value)


@dataclass
class MuseResult:
    logs: dict
    summary: dict


def evaluate_muse(
    model,
    tokenizer,
    sets: MuseSets,
    batch_size: int = EVAL_BATCH_SIZE,
    retain_auc: float | None = None,
    gen_batch_size: int | None = None,
) -> MuseResult:
    logs: dict = {}
    rows = generation_batch(batch_size, gen_batch_size)
    if sets.verbmem:
        logs["forget_verbmem_ROUGE"] = verbmem(model, tokenizer, sets.verbmem, rows)
    if sets.forget_qa:
        logs["forget_knowmem_ROUGE"] = knowmem(
            model, tokenizer, sets.forget_qa, sets.forget_icl, rows, "MUSE: knowmem forget"
        )
    if sets.retain_qa:
        logs["retain_knowmem_ROUGE"] = knowmem(
            model, tokenizer, sets.retain_qa, sets.retain_icl, rows, "MUSE: knowmem retain"
        )
    unavailable = dict(sets.missing)
    if sets.privleak_forget and sets.privleak_holdout:
        logs["mia_min_k"] = min_k_entry(model, tokenizer, sets.privleak_forget, sets.privleak_holdout, batch_size)
        if retain_auc is None:
            unavailable["privleak_reference"] = "no retain model's AUC (--retain-logs): PrivLeak against 0.5"
        logs["privleak"] = {
            "agg_value": mia.privleak(logs["mia_min_k"]["agg_value"], 0.5 if retain_auc is None else retain_auc)
        }
    summary = {"benchmark": "muse"}
    for key in ("forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "retain_knowmem_ROUGE", "privleak", "mia_min_k"):
        if key in logs:
            summary[key] = logs[key]["agg_value"]
    if "mia_min_k" in logs:  # Min-K%++ on the same texts, for reference (PrivLeak uses Min-40%, as MUSE)
        summary["mia_min_k_plus_plus"] = logs["mia_min_k"]["auc_min_k_plus_plus"]
    if unavailable:
        summary["unavailable"] = unavailable
    return MuseResult(logs, summary)


def write_muse(result: MuseResult, out_dir: str | Path) -> Path:

    out = Path(out_dir)
    atomic_write_json(out / MUSE_EVAL, json_safe(dict(sorted(result.logs.items()))))
    atomic_write_json(out / SUMMARY, json_safe(result.summary))
    return out


def print_muse(summary: dict) -> None:
    table = Table(title="MUSE")
    for column in ("criterion", "metric", "value"):
        table.add_column(column, justify="right" if column == "value" else "left")
    rows = (
        ("no verbatim memorisation", "forget_verbmem_ROUGE"),
        ("no knowledge memorisation", "forget_knowmem_ROUGE"),
        ("utility preserved", "retain_knowmem_ROUGE"),
        ("no privacy leakage (0 = retain model)", "privleak"),
    )
    for criterion, key in rows:
        if key in summary:
            table.add_row(criterion, key, f"{summary[key]:.4f}")
    console = Console()
    console.print(table)
    for key, reason in summary.get("unavailable", {}).items():
        console.print(f"{key}: {reason}")


# --------------------------------------------------------------------------- the protocol

SUSTAINABILITY = "sust/forget_{}"  # MUSE's successive unlearning requests: task N forgets sust/forget_N


class Muse(Protocol):
    name = "muse"
    description = (
        "MUSE on a raw-text corpus (muse-bench/MUSE-News or -Books, or a snapshot folder): VerbMem, KnowMem, PrivLeak"
    )
    max_length = MAX_LENGTH
    reads_retain_logs = True
    before_after = False
    table = (
        "MUSE, one column per criterion (VerbMem and KnowMem on the forget set: lower is better; KnowMem on "
        "the retain set: higher; PrivLeak: near 0)",
        ("forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "retain_knowmem_ROUGE", "privleak"),
    )

    def layout(self, cfg) -> str:
        return "files" if cfg.forget is not None else "muse" if cfg.data else "none"

    def defaults(self, cfg) -> dict:
        changes = {"max_length": MAX_LENGTH} if cfg.max_length is None else {}
        if self.layout(cfg) == "muse":
            changes["split"] = muse_split(cfg.split)
        return changes

    def training_data(self, cfg, unlearned=()) -> UnlearningData:
        if cfg.forget is not None:
            return super().training_data(cfg, unlearned)
        return self._split_data(cfg.data, cfg.split)

    def _split_data(self, data, split: str) -> UnlearningData:
        forget, retain = training_rows(data, split)
        return UnlearningData(forget, retain, "muse", str(data), {"split": split, "benchmark": self.name})

    def continual_tasks(self, cfg) -> list[int]:
        """Sustainability: the four successive forget sets."""
        src = MuseSource(cfg.data)
        return [n for n in range(1, 5) if src.has("sust", f"forget_{n}")]

    def task_data(self, cfg, order: list[int], task: int) -> UnlearningData:
        data = self._split_data(cfg.data, SUSTAINABILITY.format(task))
        data.info["task_id"] = task
        return data

    def check(self, cfg):
        load_muse_sets(cfg.data)
        if cfg.retain_logs:
            read_retain_auc(cfg.retain_logs)
        return None

    def plan(self, cfg, plan, judges=None, sets=None) -> None:
        refuse_closer_look_flags(cfg, self.name, " (and --retain-logs MUSE_EVAL.json)")
        if cfg.forget is not None or not cfg.data:
            raise DataError(
                "--benchmark muse evaluates a MUSE corpus: give --data muse-bench/MUSE-News (or -Books) "
                "or a snapshot folder of it"
            )
        plan.own = load_muse_sets(cfg.data)
        if cfg.retain_logs:
            plan.reference = read_retain_auc(cfg.retain_logs)

    def evaluate(self, plan, model, tokenizer, fmt, out, shard, done):
        if not distributed.is_main_process():
            return None
        result = evaluate_muse(model, tokenizer, plan.own, plan.batch_size, plan.reference, plan.gen_batch_size)
        write_muse(result, out.path)
        print_muse(result.summary)
        return result.summary

    def eval_texts(self, plan) -> list[str]:
        m = plan.own
        return [
            r.get("prompt", r.get("question", r.get("text", ""))) + " " + r.get("gt", r.get("answer", ""))
            for rows in (m.verbmem, m.forget_qa, m.retain_qa, m.privleak_forget)
            for r in rows or []
        ]

    def audit_sets(self, cfg):
        return CLOSER_LOOK.audit_sets(cfg)


PROTOCOL = Muse()
