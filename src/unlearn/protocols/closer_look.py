"""The closer-look protocol (``--benchmark closer-look``, the default): the paper's evaluation.

Its scenarios are the data layouts of :mod:`unlearn.data`: the fictitious authors (a TOFU folder,
one task of a split, continual over its tasks) and the real-world famous people (a folder with
``forget.json`` + ``neighbor.json``), or your own JSON-lines files. It evaluates the six metrics
(:mod:`unlearn.evaluation.six_metrics`) on the sets read here from ``*_perturbed.json`` files:
TOFU's Retain, Real Authors, Real World, Forget [and Forget Paraphrased], each cut to its first 300
rows as officially; the real-world layout's Retain (the neighbours) and Forget. Forget Quality compares
the forget truth ratios with a retain model's (``--retain-model``: a saved evaluation or the model).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from unlearn import distributed, models
from unlearn.config import EVAL_BATCH_SIZE
from unlearn.data import SPLITS, is_text_rows, read_records, read_rows, select_task
from unlearn.distributed import state
from unlearn.errors import ConfigError, DataError
from unlearn.evaluation import metrics as M
from unlearn.evaluation.intervals import read_intervals
from unlearn.evaluation.judges import Judges, load_judges  # noqa: F401 (Judges: part of its API)
from unlearn.evaluation.mia import mia_aucs
from unlearn.evaluation.scoring import token_stats
from unlearn.evaluation.sets import EvalSet, forget_set, match_questions, read_set
from unlearn.evaluation.six_metrics import evaluate, print_table, set_nlls, write_evaluation
from unlearn.evaluation.verdicts import print_before_after, refusal_share, verdict
from unlearn.io import atomic_write_json, json_safe
from unlearn.prompts import detect_prompt_format
from unlearn.protocols.base import Protocol
from unlearn.rundir import MODEL, RunDir, eval_file

log = logging.getLogger("unlearn")

TOFU_EVAL_ROWS = 300  # the official ds_size: every TOFU set is cut to its first 300 rows (forget10's task too)


# --------------------------------------------------------------------------- sets


def _select(rows: list[dict], task_id: int | None, path: Path) -> list[dict]:
    return rows if task_id is None else select_task(rows, task_id, path)


def _paraphrased(forget: EvalSet) -> list[EvalSet]:
    """The same forget items asked with ``paraphrased_question``, when every row has one."""
    if not all(isinstance(r.get("paraphrased_question"), str) for r in forget.rows):
        return []
    return [
        EvalSet(
            "Forget Paraphrased",
            forget.rows,
            "forget",
            forget.answer_key,
            forget.layout,
            question_key="paraphrased_question",
        )
    ]


def tofu_sets(data_dir: str | Path, split: str = "forget01", task_id: int | None = 1) -> list[EvalSet]:
    """Retain, Real Authors, Real World, Forget (the task) [, Forget Paraphrased], each its first 300 rows."""
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}' (valid: {', '.join(SPLITS)})")
    d = Path(data_dir)
    forget_path = d / f"{split}_perturbed.json"
    n = TOFU_EVAL_ROWS
    forget = EvalSet("Forget", _select(read_set(forget_path, "forget"), task_id, forget_path)[:n], "forget")
    sets = [
        EvalSet("Retain", read_set(d / "retain_perturbed.json", "retain")[:n], "retain"),
        EvalSet("Real Authors", read_set(d / "real_authors_perturbed.json", "general")[:n], "general"),
        EvalSet("Real World", read_set(d / "world_facts_perturbed.json", "general")[:n], "general"),
        forget,
    ]
    return sets + _paraphrased(forget)


def real_world_sets(data_dir: str | Path, task_id: int | None = None) -> list[EvalSet]:
    """Retain = the neighbours, Forget = the famous people (one task or all); golden answers."""
    d = Path(data_dir)
    key = "golden_answer"
    forget_path = d / "forget_perturbed.json"
    forget = _select(read_set(forget_path, "forget", key), task_id, forget_path)
    return [
        EvalSet("Retain", read_set(d / "neighbor_perturbed.json", "retain", key), "retain", key, "real_world"),
        EvalSet("Forget", forget, "forget", key, "real_world"),
    ]


def file_sets(forget: str | Path, retain: str | Path | None = None) -> list[EvalSet]:
    """Forget (and Retain) sets from your own JSON-lines files: ROUGE, Probability, Token Entropy,
    Cosine and Entailment for any rows; Truth Ratio (and Forget Quality) when every row of a file
    also carries ``paraphrased_answer`` and ``perturbed_answer``."""
    if forget is not None and is_text_rows(read_rows(forget)):
        log.info("raw-text forget set: no question/answer metrics (try --benchmark muse, wmdp or --downstream)")
        return []
    sets = []
    for name, kind, path in (("Retain", "retain", retain), ("Forget", "forget", forget)):
        if path is None:
            continue
        rows = read_records(path)
        has = [
            isinstance(r.get("paraphrased_answer"), str) and isinstance(r.get("perturbed_answer"), list) for r in rows
        ]
        truth = all(has)
        if truth:
            rows = read_set(Path(path), kind)  # every field checked, as for the official files
        elif any(has):
            first = rows[has.index(False)]["_source"]
            raise DataError(
                f"{first}: some rows carry paraphrased_answer and perturbed_answer and this one does "
                "not; give them for every row (for Truth Ratio) or for none"
            )
        sets.append(EvalSet(name, rows, kind, layout="files", truth=truth))
    return sets


def load_eval_sets(data_dir: str | Path, split: str = "forget01", task_id: int | None = None) -> list[EvalSet]:
    """The sets of a TOFU or real-world evaluation folder (``*_perturbed.json`` files); ``task_id``
    None is TOFU's task 1, and every person of the real-world layout (as in training)."""
    d = Path(data_dir)
    if not d.is_dir():
        hint = "; the evaluation reads local *_perturbed.json files" if str(data_dir) == "locuslab/TOFU" else ""
        raise DataError(f"{d}: evaluation data folder not found{hint}")
    if (d / "forget_perturbed.json").exists():
        return real_world_sets(d, task_id)
    if (d / "retain_perturbed.json").exists() or any((d / f"{s}_perturbed.json").exists() for s in SPLITS):
        return tofu_sets(d, split, 1 if task_id is None else task_id)  # TOFU's standard task, as in training
    raise DataError(
        f"{d}: no evaluation files (TOFU: forgetXX_perturbed.json, retain_perturbed.json, real_authors_perturbed"
        ".json, world_facts_perturbed.json; real world: forget_perturbed.json, neighbor_perturbed.json)"
    )


def eval_sets_for(cfg) -> list[EvalSet] | None:
    """The eval sets of a run (validated now), or None when the run has no evaluation data. Your own
    ``--forget``/``--retain`` files are evaluated themselves unless ``--eval-data`` names a folder."""
    data = cfg.eval_data
    if data is None and cfg.forget is not None:
        return file_sets(cfg.forget, cfg.retain)
    if data is None and cfg.data and Path(cfg.data).is_dir():
        data = cfg.data
    if data is None:
        log.info(
            "no evaluation data for this run (give --eval-data DIR with the *_perturbed.json "
            "files); skipping the evaluation"
        )
        return None
    try:
        return load_eval_sets(data, cfg.split, cfg.task_id)
    except DataError as e:
        raise DataError(f"{e} (pass --eval-data DIR or --no-eval)") from None


def check_eval_matches(sets: list[EvalSet] | None, data) -> None:
    """The Forget set evaluated must be the one trained on: the same questions (TOFU: its first 300),
    matched by question; other rows are refused before anything loads (your own files: a warning)."""
    forget = next((s for s in sets or [] if s.name == "Forget"), None)
    if forget is None or data is None:
        return
    trained = [r["question"] for r in data.forget]
    expected = trained[:TOFU_EVAL_ROWS] if data.layout in ("tofu", "hub") else trained
    diff = match_questions(forget, expected)
    if diff is None:
        return
    where = forget.rows[min(diff, len(forget.rows) - 1)]["_source"]
    message = (
        f"{where}: the Forget set evaluated ({len(forget.rows)} rows) is not the forget set trained on "
        f"({len(expected)} rows from {data.source}); first difference at row {diff + 1}"
    )
    if data.layout == "files":
        log.warning("%s: the Forget metrics describe those rows, not the ones unlearned", message)
        return
    raise DataError(f"{message} (check the *_perturbed.json files, --split and --task-id)")


# --------------------------------------------------------------------------- judges and Forget Quality


def retain_ratios_from(
    source: str | Path,
    forget: EvalSet,
    *,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    prompt_format: str | None = None,
    batch_size: int | None = None,
) -> list[float]:
    """A retain model's raw truth ratios on ``forget``, for Forget Quality. ``source``: a folder with a
    saved evaluation (``eval_Forget.jsonl``, same questions in the same order) or a retain model
    (folder or hub id), which is run on the forget NLLs only."""
    path = Path(source)
    saved = path / eval_file("Forget")
    if saved.is_file():
        rows = read_records(saved, required=("question",))
        if len(rows) != len(forget.rows):
            raise DataError(
                f"{saved}: {len(rows)} items, but the Forget set has {len(forget.rows)}; "
                "evaluate the retain model on the same split and task"
            )
        for r, q in zip(rows, forget.questions, strict=False):
            if r["question"] != q:
                raise DataError(f"{r['_source']}: field 'question' differs from the Forget set ({q!r})")
            if not isinstance(r.get("truth_ratio_r"), (int, float)):
                raise DataError(f"{r['_source']}: missing field 'truth_ratio_r'")
        return [float(r["truth_ratio_r"]) for r in rows]
    if (path / MODEL).is_dir() and not (path / "config.json").exists():
        path = path / MODEL  # the output folder of a fine-tuning run
    model, tokenizer = models.load_model(
        str(path) if path.exists() else str(source),
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        attn_implementation=attn_implementation,
    )
    model.to(state().device)  # this process's GPU under accelerate launch / torchrun
    fmt = detect_prompt_format(tokenizer, str(source), prompt_format)
    _, para, pert = set_nlls(model, tokenizer, fmt, forget, batch_size or EVAL_BATCH_SIZE, with_answers=False)
    del model
    return [float(x) for x in M.truth_ratios(para, pert)]


def _retain_ratios(cfg, sets: list[EvalSet]) -> list[float] | None:
    if not cfg.retain_model:
        return None
    if not forget_set(sets).truth:
        raise DataError(
            "Forget Quality (--retain-model) needs paraphrased_answer and perturbed_answer in every forget row"
        )
    return retain_ratios_from(
        cfg.retain_model,
        forget_set(sets),
        dtype=cfg.dtype,
        trust_remote_code=cfg.trust_remote_code,
        attn_implementation=cfg.attn_implementation,
        prompt_format=cfg.prompt_format,
        batch_size=cfg.eval_batch_size,
    )


def membership(plan, model, tokenizer, fmt) -> dict[str, float]:
    """``MIA AUC <score>``: the forget items against the holdout items (:mod:`unlearn.evaluation.mia`)."""
    forget = forget_set(plan.sets)
    members = token_stats(model, tokenizer, fmt, forget.questions, forget.answers, plan.batch_size)
    others = token_stats(
        model,
        tokenizer,
        fmt,
        [r["question"] for r in plan.holdout],
        [r["answer"] for r in plan.holdout],
        plan.batch_size,
    )
    return {f"MIA AUC {name}": value for name, value in mia_aucs(members, others).items()}


# --------------------------------------------------------------------------- the protocol


class CloserLook(Protocol):
    name = "closer-look"
    description = (
        "the paper's: its task layout, the six metrics on Retain / Real Authors / Real World / Forget, "
        "Model Utility, Forget Efficacy, Forget Quality"
    )
    six_metrics = True

    def check(self, cfg):
        return eval_sets_for(cfg)

    def command_sets(self, cfg) -> list[EvalSet]:
        """The sets ``unlearn eval`` evaluates: the folder's (``--eval-data``, else ``--data``), else your files."""
        return self._matched(cfg, cfg.eval_data or cfg.data)

    def plan(self, cfg, plan, judges=None, sets=None) -> None:
        plan.sets = sets if sets is not None else eval_sets_for(cfg)
        if not plan.sets:
            return
        plan.judges = judges or load_judges(cfg)
        plan.retain_ratios = _retain_ratios(cfg, plan.sets)
        if cfg.holdout:
            forget_set(plan.sets)  # (the forget set is what the holdout is compared with)
            plan.holdout = read_records(cfg.holdout)
        plan.check_baseline(cfg)

    def evaluate(self, plan, model, tokenizer, fmt, out, shard, done):
        """The six metrics on every set (every process its share with ``shard``; the main one writes;
        ``done``: per-item records of sets already scored on this model, taken as they are)."""
        if not plan.sets:
            return None
        ev = evaluate(
            model,
            tokenizer,
            fmt,
            plan.sets,
            plan.judges.embedder,
            plan.judges.nli,
            plan.batch_size,
            plan.retain_ratios,
            shard=shard,
            gen_batch_size=plan.gen_batch_size,
            done=done,
        )
        if plan.holdout:
            ev.summary.update(membership(plan, model, tokenizer, fmt))
        if distributed.is_main_process():  # one writer when several processes evaluated together
            write_evaluation(ev, out.path)
            print_table(ev.summary, ev.intervals, ev.resolution)
            log.info("wrote the evaluation to %s", out.summary)
        return ev.summary

    def evaluate_before(self, plan, model, tokenizer, fmt, out_dir):
        """The model before unlearning on the Forget and Retain sets (``OUT/before``, read back on resume)."""
        out = RunDir(out_dir)
        saved = out.read_summary()
        sets = [s for s in plan.sets if s.name in ("Forget", "Retain")] or plan.sets
        if saved is None:
            with torch.random.fork_rng():  # the run's own random draws stay as they would be without it
                ev = evaluate(
                    model,
                    tokenizer,
                    fmt,
                    sets,
                    plan.judges.embedder,
                    plan.judges.nli,
                    plan.batch_size,
                    plan.retain_ratios,
                    shard=True,
                    gen_batch_size=plan.gen_batch_size,
                )
            if distributed.is_main_process():
                out.path.mkdir(parents=True, exist_ok=True)
                write_evaluation(ev, out.path)
            return ev.summary, ev.intervals, out.path, ev.items
        return saved, read_intervals(out.path), out.path, {}

    def conclude(self, plan, out, before, steps, steps_hint, refusals):
        summary = out.read_summary()
        if before is None or summary is None:
            return None
        before_summary, before_iv, before_dir = before[:3]

        def share(folder):
            path = Path(folder) / eval_file("Retain")
            rows = read_records(path, required=()) if path.is_file() else []
            return refusal_share([str(r.get("generation", "")) for r in rows], refusals)

        if not plan.baseline:  # (with --baseline its before/after table was printed already)
            print_before_after(before_summary, summary, before_iv, read_intervals(out.path))
        found = verdict(
            before_summary,
            summary,
            before_iv,
            steps,
            steps_hint,
            share(before_dir) if before_dir else None,
            share(out.path),
        )
        atomic_write_json(out.summary, json_safe({**summary, "verdict": found.as_dict()}))
        return found

    def eval_texts(self, plan) -> list[str]:
        return [q + " " + a for s in plan.sets or [] for q, a in zip(s.questions, s.answers, strict=False)]

    def audit_sets(self, cfg):
        folder = cfg.data and Path(cfg.data).is_dir() and not cfg.eval_data
        return (self._matched(cfg, cfg.data) if folder else eval_sets_for(replace(cfg, eval=True))), None

    def _matched(self, cfg, data):  # a folder's sets, its Forget set checked as ``run`` checks it
        if not data:
            return file_sets(cfg.forget, cfg.retain)
        sets = load_eval_sets(data, cfg.split, cfg.task_id)
        try:  # (a folder of perturbed files only has no task rows to check against)
            trained = self.training_data(replace(cfg, data=data, forget=None, retain=None))
        except DataError:
            trained = None
        check_eval_matches(sets, trained)
        return sets

    def reference(self, plan):
        return plan.retain_ratios

    def set_reference(self, plan, value) -> None:
        plan.retain_ratios = value


def refuse_closer_look_flags(cfg, name: str, extra: str = "") -> None:
    """A protocol that reads its own sets refuses the closer-look protocol's evaluation flags."""
    if cfg.holdout or cfg.eval_data or cfg.retain_model:
        raise ConfigError(
            f"--holdout, --eval-data and --retain-model belong to the closer-look protocol; --benchmark "
            f"{name} reads its own sets{extra}"
        )


PROTOCOL = CloserLook()
