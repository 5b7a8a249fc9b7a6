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

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from unlearn import distributed
from unlearn.config import EVAL_BATCH_SIZE
from unlearn.data import HubSnapshot, UnlearningData
from unlearn.errors import DataError
from unlearn.evaluation import mia
from unlearn.evaluation.generation import generation_batch
from unlearn.evaluation.intervals import as_json, print_table
from unlearn.evaluation.log_intervals import muse_intervals
from unlearn.evaluation.muse_metrics import (  # noqa: F401 (its metrics, with the protocol)
    MAX_LENGTH,
    knowmem,
    knowmem_prompt,
    min_k_entry,
    min_k_plus_plus_score,
    min_k_score,
    rouge_l,
    verbmem,
)
from unlearn.io import atomic_write_json, json_safe
from unlearn.protocols.base import Protocol
from unlearn.protocols.closer_look import PROTOCOL as CLOSER_LOOK
from unlearn.protocols.closer_look import refuse_closer_look_flags
from unlearn.rundir import INTERVALS, SUMMARY

log = logging.getLogger("unlearn")

HUB_SETS = ("muse-bench/MUSE-News", "muse-bench/MUSE-Books")
SPLITS = ("forget",) + tuple(f"{g}/forget_{i}" for g in ("scal", "sust") for i in range(1, 5))
RETAIN_SPLIT = "retain1"  # MUSE's and open-unlearning's training retain corpus
MUSE_EVAL = "MUSE_EVAL.json"


def muse_split(split: str) -> str:
    """``--split`` under MUSE: ``forget`` (the default; TOFU's default ``forget01`` reads as it),
    ``scal/forget_N`` or ``sust/forget_N`` (N = 1..4)."""
    split = "forget" if split == "forget01" else split
    if split not in SPLITS:
        raise DataError(f"unknown MUSE split '{split}' (valid: {', '.join(SPLITS)})")
    return split


class MuseSource(HubSnapshot):
    """A MUSE corpus: a hub id (``muse-bench/MUSE-News``) or a snapshot folder (``config/split.json``)."""

    hub_ids = HUB_SETS
    name = "MUSE"
    example = "raw/forget.json, verbmem/forget.json, knowmem/forget_qa.json"


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
    rows = generation_batch(batch_size, gen_batch_size, model)
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


def write_muse(result: MuseResult, out_dir: str | Path, intervals: dict | None = None) -> Path:

    out = Path(out_dir)
    atomic_write_json(out / MUSE_EVAL, json_safe(dict(sorted(result.logs.items()))))
    if intervals:
        atomic_write_json(out / INTERVALS, json_safe(as_json(intervals)))
    atomic_write_json(out / SUMMARY, json_safe(result.summary))
    return out


def print_muse(summary: dict, intervals: dict | None = None) -> None:
    rows = (
        ("no verbatim memorisation", "forget_verbmem_ROUGE"),
        ("no knowledge memorisation", "forget_knowmem_ROUGE"),
        ("utility preserved", "retain_knowmem_ROUGE"),
        ("no privacy leakage (0 = retain model)", "privleak"),
    )
    print_table("MUSE (95% bootstrap interval over the items)", "criterion", rows, summary, intervals)


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
        intervals = muse_intervals(result.logs, plan.reference)
        write_muse(result, out.path, intervals)
        print_muse(result.summary, intervals)
        return result.summary

    def evaluate_before(self, plan, model, tokenizer, fmt, out_dir):
        """The model before unlearning on MUSE's memorisation and knowledge sets (not PrivLeak's), for the verdict."""

        def compute():
            sets = dataclasses.replace(plan.own, privleak_forget=None, privleak_holdout=None)
            result = evaluate_muse(model, tokenizer, sets, plan.batch_size, None, plan.gen_batch_size)
            summary = {k: v for k, v in result.summary.items() if k != "unavailable"}
            return summary, muse_intervals(result.logs), {MUSE_EVAL: result.logs}

        return self.before_with(out_dir, compute)

    def conclude(self, plan, out, before, steps, steps_hint, refusals):
        forget, keep = ("forget_verbmem_ROUGE", "forget_knowmem_ROUGE"), ("retain_knowmem_ROUGE",)
        return self.conclude_on(out, before, forget, keep, steps, steps_hint)

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
