"""The TOFU standard (``--benchmark tofu``): open-unlearning's TOFU evaluation, value for value.

The closer-look protocol (:mod:`unlearn.evaluation.six_metrics`) is the paper's; most papers and the
open-unlearning leaderboards report this one instead. Its definitions are open-unlearning's
(``src/evals/metrics/``, ``configs/eval/tofu*.yaml``), reproduced here:

* **data**: the hub configs of ``locuslab/TOFU`` (or a local snapshot folder with one JSON-lines
  ``<config>.json`` per config): the forget set is ``<split>_perturbed`` (every row), the retain
  set ``retain_perturbed`` (all 400 rows), ``real_authors_perturbed``, ``world_facts_perturbed``,
  and ``holdoutXX`` for membership inference;
* **encoding**: the family's template (:class:`unlearn.prompts.TofuTemplate`), sequences cut at
  512 tokens with an EOS appended; the attention mask is ``input_ids != pad`` as open-unlearning's
  collator makes it (a pad id inside a prompt is masked too);
* **Probability** (``*_Q_A_Prob``): ``exp(-avg_loss)``, the mean label NLL (EOS included);
  ``*_Q_A_PARA_Prob`` / ``*_Q_A_PERT_Prob`` the same for the paraphrased / each perturbed answer;
* **Truth Ratio**: ``tr = exp(-mean_k avg_loss_pert) / (exp(-avg_loss_correct) + 1e-10)`` (the
  correct answer is the paraphrase on the forget and retain sets, the answer itself on real
  authors and world facts); forget: ``mean(min(tr, 1/(tr + 1e-10)))``; others:
  ``mean(max(0, 1 - tr))``;
* **normalised Probability** (real authors, world facts): ``p / (p + Σ_k p_k + 1e-10)``;
* **ROUGE** (``*_Q_A_ROUGE``): ROUGE-L recall (stemmer on) of the greedy answer (200 new tokens,
  stopping at the model's EOS) against the answer as its tokens decode;
* **Model Utility**: ``scipy.stats.hmean`` of the 9 values Probability, ROUGE, Truth Ratio on retain
  (plain Probability), real authors and world facts (normalised Probability);
* **Forget Quality**: ``ks_2samp`` p-value of the forget-set truth ratios against a retain model's
  (``--retain-logs``: its ``TOFU_EVAL.json``);
* **privleak**: Min-K% (k = 0.4) AUC of forget against holdout, relative to the retain model's
  AUC (0.5 without retain logs, as open-unlearning);
* **exact_memorization**, **extraction_strength**: on the forget answers (:mod:`unlearn.evaluation.mia`).

Each answer is scored in ONE pass over all sets (the metrics that share a sequence share its
forward), and generation runs once over every question, sorted by length; an answer does not
depend on its batch. Results: ``summary.json`` (the keys above), ``TOFU_EVAL.json`` (open-unlearning's
per-metric logs, readable by either toolkit as retain logs) and ``TOFU_SUMMARY.json``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from unlearn import distributed, models
from unlearn.data import HUB_RETAIN, UnlearningData, hub_records, read_records
from unlearn.distributed import state
from unlearn.errors import ConfigError, DataError
from unlearn.evaluation.generation import generation_batch
from unlearn.evaluation.intervals import as_json
from unlearn.evaluation.log_intervals import tofu_intervals
from unlearn.evaluation.open_unlearning import (  # noqa: F401 (the TOFU standard's pieces, with the protocol)
    MAX_LENGTH,
    TOFU_EVAL,
    TOFU_SUMMARY,
    UTILITY,
    RetainLogs,
    Scored,
    TofuResult,
    evaluate_tofu,
    generate_answers,
    hmean,
    min_k_entry,
    normalised_prob_entry,
    pairs_of,
    prob_entry,
    read_retain_logs,
    rouge_entry,
    score_entry,
    score_pairs,
    truth_ratio_entry,
    truth_ratio_values,
)
from unlearn.evaluation.sets import EvalSet, check_rows
from unlearn.io import atomic_write_json, json_safe
from unlearn.prompts import detect_prompt_format, tofu_template
from unlearn.protocols.base import Protocol
from unlearn.rundir import INTERVALS, MODEL, SUMMARY

log = logging.getLogger("unlearn")

HUB = "locuslab/TOFU"
HOLDOUT = {"forget01": "holdout01", "forget05": "holdout05", "forget10": "holdout10"}
SUMMARY_METRICS = (
    "forget_truth_ratio",
    "forget_quality",
    "forget_Q_A_Prob",
    "forget_Q_A_ROUGE",
    "model_utility",
    "privleak",
    "extraction_strength",
)
"""The metrics of open-unlearning's default TOFU evaluation (its ``TOFU_SUMMARY.json``)."""
SETS = {"forget": "forget", "retain": "retain", "ra": "real_authors_perturbed", "wf": "world_facts_perturbed"}


# --------------------------------------------------------------------------- data


class TofuSource:
    """The configs of ``locuslab/TOFU``: from the hub, or from a local snapshot folder holding one
    JSON-lines file per config (``forget01.json``, ``forget01_perturbed.json``, ``holdout01.json``,
    ``retain99.json``, ``retain_perturbed.json``, ...)."""

    def __init__(self, data: str | Path):
        self.data = str(data)
        self.folder = Path(self.data) if Path(self.data).is_dir() else None
        if self.folder is None and self.data != HUB:
            raise DataError(
                f"{self.data}: the TOFU benchmark reads {HUB} (hub) or a snapshot folder of its configs "
                "(<config>.json files); not found"
            )

    def has(self, config: str) -> bool:
        return self.folder is None or (self.folder / f"{config}.json").is_file()

    def rows(self, config: str, required=("question", "answer")) -> list[dict]:
        if self.folder is not None:
            path = self.folder / f"{config}.json"
            if not path.is_file():
                raise DataError(
                    f"{path}: missing; a TOFU snapshot folder holds one JSON-lines file per config of "
                    f"{HUB} (named <config>.json)"
                )
            return read_records(path, required=required)
        return hub_records(HUB, config, required=required, label=f"{HUB}/{config}")


def check_split(split: str) -> None:
    if split not in HOLDOUT:
        raise DataError(f"unknown split '{split}' (valid: {', '.join(HOLDOUT)})")


def training_rows(data: str, split: str) -> tuple[list[dict], list[dict]]:
    """``(forget, retain)`` training rows of the TOFU standard: ``<split>`` and ``retain(100-XX)``."""
    check_split(split)
    src = TofuSource(data)
    return src.rows(split), src.rows(HUB_RETAIN[split])


@dataclass
class TofuSets:
    forget: list[dict]
    retain: list[dict]
    ra: list[dict]
    wf: list[dict]
    holdout: list[dict] | None  # None: privleak unavailable (no holdoutXX config)
    split: str
    source: str

    def of(self, name: str) -> list[dict]:
        return getattr(self, name)

    @property
    def holdout_config(self) -> str:
        return HOLDOUT[self.split]


def load_tofu_sets(data: str | Path, split: str = "forget01") -> TofuSets:
    """The evaluation sets, every field the metrics need checked (file:line: field ...)."""
    check_split(split)
    src = TofuSource(data)
    holdout = src.rows(HOLDOUT[split]) if src.has(HOLDOUT[split]) else None
    if holdout is None:
        log.warning("%s: no %s config; privleak (forget against holdout) is left out", data, HOLDOUT[split])
    return TofuSets(
        check_rows(src.rows(f"{split}_perturbed"), "forget"),
        check_rows(src.rows("retain_perturbed"), "retain"),
        check_rows(src.rows("real_authors_perturbed"), "general"),
        check_rows(src.rows("world_facts_perturbed"), "general"),
        holdout,
        split,
        str(data),
    )


# --------------------------------------------------------------------------- evaluation


def retain_logs_from_model(model, tokenizer, template, sets, batch_size: int, source: str) -> RetainLogs:
    """A retain model's forget truth ratios and Min-K% AUC, computed (no generation)."""
    pairs = pairs_of(sets, ("forget", "holdout"))
    scored = Scored(pairs, score_pairs(model, tokenizer, template, pairs, batch_size))
    auc = None
    if sets.holdout:
        auc = min_k_entry(scored.stats("forget", len(sets.forget)), scored.stats("holdout", len(sets.holdout)))[
            "agg_value"
        ]
    ratios = truth_ratio_values(scored.losses("forget", "para"), scored.losses("forget", "pert"))
    return RetainLogs([float(x) for x in ratios], auc, source)


def evaluate_tofu_on(model, tokenizer, template, sets: TofuSets, names, batch_size: int) -> dict:
    """``<name>_Q_A_ROUGE`` and ``<name>_Q_A_Prob`` of the TOFU standard on some of its sets (``names``),
    computed as :func:`evaluate_tofu` computes them: the model before unlearning, for the verdict."""
    questions = [r["question"] for n in names for r in sets.of(n)]
    gens = generate_answers(model, tokenizer, template, questions, generation_batch(batch_size, None, model), False)
    pairs = pairs_of(sets, tuple(names))
    scored = Scored(pairs, score_pairs(model, tokenizer, template, pairs, batch_size))
    logs, start = {}, 0
    for n in names:
        rows = sets.of(n)
        logs[f"{n}_Q_A_Prob"] = prob_entry(scored.losses(n, "answer"))
        logs[f"{n}_Q_A_ROUGE"] = rouge_entry(tokenizer, template, rows, gens[start : start + len(rows)])
        start += len(rows)
    return logs


# --------------------------------------------------------------------------- output


def write_tofu(result: TofuResult, out_dir: str | Path, intervals: dict | None = None) -> Path:
    """``TOFU_EVAL.json`` and ``TOFU_SUMMARY.json`` (open-unlearning's files), ``intervals.json`` (each
    summary value's 95% interval), then ``summary.json``."""

    out = Path(out_dir)
    atomic_write_json(out / TOFU_EVAL, json_safe(dict(sorted(result.logs.items()))))
    ou_summary = {
        k: result.logs[k]["agg_value"]
        for k in SUMMARY_METRICS
        if k in result.logs and result.logs[k].get("agg_value") is not None
    }
    atomic_write_json(out / TOFU_SUMMARY, json_safe(dict(sorted(ou_summary.items()))))
    if intervals:
        atomic_write_json(out / INTERVALS, json_safe(as_json(intervals)))
    atomic_write_json(out / SUMMARY, json_safe(result.summary))  # last: it marks a complete result
    return out


def print_tofu(summary: dict, intervals: dict | None = None) -> None:
    table = Table(title=f"TOFU standard ({summary.get('split', '')}; 95% bootstrap interval over the items)")
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right")
    table.add_column("95% interval", justify="right")
    for key, value in summary.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            iv = (intervals or {}).get(key)
            table.add_row(key, f"{value:.4g}", f"[{iv.lo:.4g}, {iv.hi:.4g}]" if iv else "")
    console = Console()
    console.print(table)
    for key, reason in summary.get("unavailable", {}).items():
        console.print(f"{key}: {reason}")


# --------------------------------------------------------------------------- the protocol


def _retain_logs_from_model(cfg, sets: TofuSets) -> RetainLogs:
    """A retain model's forget truth ratios and Min-K% AUC under the TOFU standard, computed now."""
    path = Path(cfg.retain_model)
    if (path / MODEL).is_dir() and not (path / "config.json").exists():
        path = path / MODEL
    source = str(path) if path.exists() else cfg.retain_model
    model, tokenizer = models.load_model(
        source, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code, attn_implementation=cfg.attn_implementation
    )
    model.to(state().device)
    fmt = tofu_template(detect_prompt_format(tokenizer, source, cfg.prompt_format))
    logs = retain_logs_from_model(model, tokenizer, fmt, sets, cfg.eval_batch_size, str(cfg.retain_model))
    del model
    return logs


class TofuStandard(Protocol):
    name = "tofu"
    description = (
        "the TOFU standard as open-unlearning evaluates it: locuslab/TOFU (hub or snapshot folder), "
        "forget_quality, model_utility, privleak ... and TOFU_EVAL.json"
    )
    max_length = MAX_LENGTH
    reads_retain_logs = True
    table = (
        "TOFU standard (open-unlearning's metrics)",
        (
            "forget_quality",
            "model_utility",
            "forget_truth_ratio",
            "forget_Q_A_Prob",
            "forget_Q_A_ROUGE",
            "privleak",
            "extraction_strength",
        ),
    )

    def layout(self, cfg) -> str:
        return "files" if cfg.forget is not None else "hub" if cfg.data else "none"

    def defaults(self, cfg) -> dict:
        return {"max_length": MAX_LENGTH} if cfg.max_length is None else {}

    def training_data(self, cfg, unlearned=()) -> UnlearningData:
        if cfg.forget is not None:
            return super().training_data(cfg, unlearned)
        forget, retain = training_rows(cfg.data, cfg.split)
        return UnlearningData(
            forget,
            retain,
            "hub",
            str(cfg.data),
            {"split": cfg.split, "retain_file": HUB_RETAIN[cfg.split], "benchmark": self.name},
        )

    def continual_tasks(self, cfg) -> list[int]:
        raise ConfigError(
            "continual unlearning runs the closer-look protocol's tasks (task_id in the forget files); "
            "the TOFU standard (--benchmark tofu) has none: unlearn each split with unlearn run"
        )

    def template(self, fmt):
        return tofu_template(fmt)

    def check(self, cfg):
        load_tofu_sets(cfg.data, cfg.split)
        if cfg.retain_logs:
            read_retain_logs(cfg.retain_logs)
        return None

    def plan(self, cfg, plan, judges=None, sets=None) -> None:
        if cfg.forget is not None or not cfg.data:
            raise DataError(
                "--benchmark tofu evaluates the configs of locuslab/TOFU: give --data locuslab/TOFU or a "
                "snapshot folder of them (not --forget/--retain files)"
            )
        for flag, value in (("--holdout", cfg.holdout), ("--eval-data", cfg.eval_data)):
            if value:
                raise ConfigError(
                    f"{flag} belongs to the closer-look protocol; --benchmark tofu reads the holdout and "
                    "evaluation configs from --data"
                )
        if cfg.retain_logs and cfg.retain_model:
            raise ConfigError("give --retain-logs or --retain-model, not both")
        plan.own = load_tofu_sets(cfg.data, cfg.split)
        if cfg.retain_logs:
            plan.reference = read_retain_logs(cfg.retain_logs)
        elif cfg.retain_model:
            plan.reference = _retain_logs_from_model(cfg, plan.own)
        plan.check_baseline(cfg)

    def evaluate(self, plan, model, tokenizer, fmt, out, shard, done):
        result = evaluate_tofu(
            model,
            tokenizer,
            fmt,
            plan.own,
            plan.batch_size,
            plan.reference,
            shard=shard,
            gen_batch_size=plan.gen_batch_size,
        )
        if distributed.is_main_process():
            intervals = tofu_intervals(result.logs, plan.reference)
            write_tofu(result, out.path, intervals)
            print_tofu(result.summary, intervals)
            log.info("wrote the TOFU evaluation to %s (open-unlearning's TOFU_EVAL.json beside it)", out.summary)
        return result.summary

    def evaluate_before(self, plan, model, tokenizer, fmt, out_dir):
        """The model before unlearning on the forget and retain sets: ROUGE and probability (TOFU_EVAL.json
        of those four, intervals.json), for the verdict."""

        def compute():
            logs = evaluate_tofu_on(model, tokenizer, fmt, plan.own, ("forget", "retain"), plan.batch_size)
            summary = {"benchmark": self.name, "split": plan.own.split, **{k: v["agg_value"] for k, v in logs.items()}}
            return summary, tofu_intervals(logs), {TOFU_EVAL: logs}

        return self.before_with(out_dir, compute)

    def conclude(self, plan, out, before, steps, steps_hint, refusals):
        forget, keep = ("forget_Q_A_ROUGE", "forget_Q_A_Prob"), ("retain_Q_A_ROUGE", "retain_Q_A_Prob")
        return self.conclude_on(out, before, forget, keep, steps, steps_hint)

    def eval_texts(self, plan) -> list[str]:
        t = plan.own
        return [r["question"] + " " + r["answer"] for rows in (t.forget, t.retain, t.ra, t.wf) for r in rows]

    def audit_sets(self, cfg):
        """The TOFU standard's sets: ``<split>_perturbed``, ``retain_perturbed``, ``holdoutXX``."""
        t = load_tofu_sets(cfg.data, cfg.split)
        return [EvalSet("Retain", t.retain, "retain"), EvalSet("Forget", t.forget, "forget")], t.holdout


PROTOCOL = TofuStandard()
