"""The evaluation as the commands use it: ``unlearn eval``, and the evaluation plan of a run.

:func:`plan_evaluation` checks, before any training, everything a run needs afterwards: the
evaluation sets (read and validated), the judges (the sentence embedder loaded; the NLI judge
loaded, or unavailable for a stated reason), the retain model's truth ratios for Forget Quality
(computed now, from a saved evaluation or the retain model), and the downstream tasks. The run
then calls :meth:`EvalPlan.evaluate` on the trained model. Judges are objects passed in, loaded
once by whoever runs several evaluations (continual runs, sweeps, the demo).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from unlearn.config import DEFAULT_NLI, EVAL_BATCH_SIZE
from unlearn.data import read_records
from unlearn.errors import ConfigError, DataError, ModelError
from unlearn.rundir import MODEL, RunDir, eval_file
from unlearn.evaluation import metrics as M
from unlearn.evaluation.judges import Unavailable
from unlearn.evaluation.sets import EvalSet, forget_set, load_eval_sets
from unlearn.evaluation.six_metrics import evaluate, print_table, set_nlls, write_evaluation

log = logging.getLogger("unlearn")


@dataclass
class Judges:
    """The sentence embedder and the NLI judge (or why it is unavailable), loaded once."""

    embedder: object
    nli: object


def load_judges(cfg) -> Judges:
    """Load the embedder (an error when it cannot be) and the NLI judge.

    The default NLI judge is a hub model: offline it is reported unavailable, with the reason,
    and the Entailment Score is left out. Any other ``--nli`` that cannot be loaded is an error
    (``--nli none`` disables the judge).
    """
    from unlearn.evaluation.judges import load_embedder, load_nli

    embedder = load_embedder(cfg.embedder)
    nli = load_nli(cfg.nli)
    if isinstance(nli, Unavailable) and cfg.nli not in (None, DEFAULT_NLI) and "disabled" not in nli.reason:
        raise ModelError(f"--nli: {nli.reason} (pass --nli none to evaluate without it)")
    return Judges(embedder, nli)


def retain_ratios_from(source: str | Path, forget: EvalSet, *, dtype: str = "auto",
                       trust_remote_code: bool = False, attn_implementation: str | None = None,
                       prompt_format: str | None = None, batch_size: int | None = None) -> list[float]:
    """A retain model's raw truth ratios on ``forget``, for Forget Quality.

    ``source``: a folder with a saved evaluation (``eval_Forget.jsonl``, same questions in the same
    order) or a retain model (folder or hub id), which is run on the forget NLLs only.
    """
    path = Path(source)
    saved = path / eval_file("Forget")
    if saved.is_file():
        rows = read_records(saved, required=("question",))
        if len(rows) != len(forget.rows):
            raise DataError(f"{saved}: {len(rows)} items, but the Forget set has {len(forget.rows)}; "
                            "evaluate the retain model on the same split and task")
        for r, q in zip(rows, forget.questions):
            if r["question"] != q:
                raise DataError(f"{r['_source']}: field 'question' differs from the Forget set ({q!r})")
            if not isinstance(r.get("truth_ratio_r"), (int, float)):
                raise DataError(f"{r['_source']}: missing field 'truth_ratio_r'")
        return [float(r["truth_ratio_r"]) for r in rows]
    if (path / MODEL).is_dir() and not (path / "config.json").exists():
        path = path / MODEL  # the output folder of a fine-tuning run
    from unlearn.models import load_model
    from unlearn.prompts import detect_prompt_format

    model, tokenizer = load_model(str(path) if path.exists() else str(source), dtype=dtype,
                                  trust_remote_code=trust_remote_code, attn_implementation=attn_implementation)
    model.to(_device())
    fmt = detect_prompt_format(tokenizer, str(source), prompt_format)
    _, para, pert = set_nlls(model, tokenizer, fmt, forget, batch_size or EVAL_BATCH_SIZE, with_answers=False)
    del model
    return [float(x) for x in M.truth_ratios(para, pert)]


def _device():
    from unlearn.distributed import state

    return state().device  # this process's GPU under accelerate launch / torchrun


def eval_sets_for(cfg) -> list[EvalSet] | None:
    """The eval sets of a run (validated now), or None when the run has no evaluation data. Your own
    ``--forget``/``--retain`` files are evaluated themselves unless ``--eval-data`` names a folder."""
    data = cfg.eval_data
    if data is None and cfg.forget is not None:
        from unlearn.evaluation.sets import file_sets

        return file_sets(cfg.forget, cfg.retain)
    if data is None and cfg.data and Path(cfg.data).is_dir():
        data = cfg.data
    if data is None:
        log.info("no evaluation data for this run (give --eval-data DIR with the *_perturbed.json "
                 "files); skipping the evaluation")
        return None
    try:
        return load_eval_sets(data, cfg.split, cfg.task_id)
    except DataError as e:
        raise DataError(f"{e} (pass --eval-data DIR or --no-eval)") from None


def check_eval_matches(sets: list[EvalSet] | None, data) -> None:
    """The Forget set evaluated must be the forget set trained on: the same questions, in order
    (TOFU: its first 300, the official ds_size). A perturbed file with some of the task's rows, or
    another task's, is refused before anything loads; with your own --forget files it is said."""
    from unlearn.evaluation.sets import TOFU_EVAL_ROWS

    forget = next((s for s in sets or [] if s.name == "Forget"), None)
    if forget is None:
        return
    trained = [r["question"] for r in data.forget]
    expected = trained[:TOFU_EVAL_ROWS] if data.layout in ("tofu", "hub") else trained
    got = forget.questions
    if got == expected:
        return
    diff = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
    where = forget.rows[diff]["_source"] if diff < len(forget.rows) else forget.rows[-1]["_source"]
    message = (f"{where}: the Forget set evaluated ({len(got)} rows) is not the forget set trained on "
               f"({len(expected)} rows from {data.source}); first difference at row {diff + 1}")
    if data.layout == "files":
        log.warning("%s: the Forget metrics describe those rows, not the ones unlearned", message)
        return
    raise DataError(f"{message} (check the *_perturbed.json files, --split and --task-id)")


def _retain_ratios(cfg, sets: list[EvalSet]) -> list[float] | None:
    if not cfg.retain_model:
        return None
    if not forget_set(sets).truth:
        raise DataError("Forget Quality (--retain-model) needs paraphrased_answer and perturbed_answer in every "
                        "forget row")
    return retain_ratios_from(cfg.retain_model, forget_set(sets), dtype=cfg.dtype,
                              trust_remote_code=cfg.trust_remote_code,
                              attn_implementation=cfg.attn_implementation,
                              prompt_format=cfg.prompt_format, batch_size=cfg.eval_batch_size)


@dataclass
class EvalPlan:
    """What a run evaluates after training, checked and loaded before it trains."""

    sets: list[EvalSet] | None = None
    judges: Judges | None = None
    retain_ratios: list[float] | None = None
    downstream: list[str] | None = None
    batch_size: int = EVAL_BATCH_SIZE
    gen_batch_size: int | None = None  # prompts decoded together (default: unlearn.evaluation.scoring.generation_batch)
    downstream_limit: int | None = None
    downstream_include: str | None = None
    holdout: list[dict] | None = None  # rows never trained on, for membership inference
    baseline: str | None = None  # an evaluation of the model before unlearning: before/after table and report
    tofu: object | None = None  # --benchmark tofu: its sets (protocols.tofu.TofuSets), instead of ``sets``
    retain_logs: object | None = None  # --benchmark tofu: the retain model's logs (protocols.tofu.RetainLogs)
    muse: object | None = None  # --benchmark muse: its sets (protocols.muse.MuseSets)
    retain_auc: float | None = None  # --benchmark muse: the retain model's Min-40% AUC
    wmdp: bool = False  # --benchmark wmdp: the downstream tasks are the evaluation

    def evaluate(self, model, tokenizer, fmt, out: RunDir, shard: bool = False,
                 done: dict | None = None) -> dict | None:
        """The six metrics on every set (every process its share with ``shard``; the main one
        writes; ``done``: per-item records of sets already scored on this model, taken as they
        are), then the downstream tasks (main process). Returns the summary, or None."""
        from unlearn.distributed import is_main_process

        summary = None
        if self.tofu is not None:
            summary = self.evaluate_tofu(model, tokenizer, fmt, out, shard)
        if self.muse is not None and is_main_process():
            from unlearn.protocols.muse import evaluate_muse, print_muse, write_muse

            result = evaluate_muse(model, tokenizer, self.muse, self.batch_size, self.retain_auc, self.gen_batch_size)
            write_muse(result, out.path)
            print_muse(result.summary)
            summary = result.summary
        if self.wmdp and is_main_process():
            from unlearn.io import atomic_write_json

            atomic_write_json(out.summary, {"benchmark": "wmdp"})  # the tasks' accuracies are added to it
        if self.sets:
            ev = evaluate(model, tokenizer, fmt, self.sets, self.judges.embedder, self.judges.nli, self.batch_size,
                          self.retain_ratios, shard=shard, gen_batch_size=self.gen_batch_size, done=done)
            if self.holdout:
                ev.summary.update(self.membership(model, tokenizer, fmt))
            summary = ev.summary
            if is_main_process():  # one writer when several processes evaluated together
                write_evaluation(ev, out.path)
                print_table(ev.summary)
                log.info("wrote the evaluation to %s", out.summary)
                if self.baseline:
                    self.before_after(ev.summary, out)
        if self.downstream and is_main_process():
            from unlearn.evaluation.downstream import downstream_after_unlearning

            downstream_after_unlearning(model, tokenizer, out, self.downstream, self.batch_size,
                                        self.downstream_limit, self.downstream_include)
            summary = out.read_summary() or summary
        return summary


    def evaluate_tofu(self, model, tokenizer, fmt, out: RunDir, shard: bool) -> dict:
        """The TOFU standard (:mod:`unlearn.protocols.tofu`); the main process writes its files."""
        from unlearn.distributed import is_main_process
        from unlearn.prompts import tofu_template
        from unlearn.protocols.tofu import evaluate_tofu, print_tofu, write_tofu

        result = evaluate_tofu(model, tokenizer, tofu_template(fmt), self.tofu, self.batch_size, self.retain_logs,
                               shard=shard, gen_batch_size=self.gen_batch_size)
        if is_main_process():
            write_tofu(result, out.path)
            print_tofu(result.summary)
            log.info("wrote the TOFU evaluation to %s (open-unlearning's TOFU_EVAL.json beside it)", out.summary)
            if self.baseline:
                self.before_after(result.summary, out)
        return result.summary

    def before_after(self, summary: dict, out: RunDir) -> None:
        """The before/after table against the baseline's summary, and a short report in OUT/report."""
        from rich.console import Console
        from rich.table import Table

        from unlearn.report import write_report

        before = RunDir(self.baseline).read_summary() or {}
        keys = [k for k, v in summary.items() if isinstance(v, (int, float)) and isinstance(before.get(k), (int, float))]
        table = Table(title="Before and after unlearning")
        for column in ("metric", "before", "after", "change"):
            table.add_column(column, justify="left" if column == "metric" else "right")
        for k in keys:
            table.add_row(k, f"{before[k]:.4f}", f"{summary[k]:.4f}", f"{summary[k] - before[k]:+.4f}")
        Console(width=110).print(table)
        report = write_report([out.path], out.path / "report", baseline=self.baseline, title="Unlearning report")
        print(f"report: {report / 'report.md'}")

    def membership(self, model, tokenizer, fmt) -> dict[str, float]:
        """``MIA AUC <score>``: the forget items against the holdout items (:mod:`unlearn.evaluation.mia`)."""
        from unlearn.evaluation.mia import mia_aucs
        from unlearn.evaluation.scoring import token_stats

        forget = forget_set(self.sets)
        members = token_stats(model, tokenizer, fmt, forget.questions, forget.answers, self.batch_size)
        others = token_stats(model, tokenizer, fmt, [r["question"] for r in self.holdout],
                             [r["answer"] for r in self.holdout], self.batch_size)
        return {f"MIA AUC {name}": value for name, value in mia_aucs(members, others).items()}


def plan_evaluation(cfg, judges: Judges | None = None, sets: list[EvalSet] | None = None) -> EvalPlan:
    """Everything ``cfg``'s run evaluates after training, checked now (see the module docstring).

    ``judges``: already loaded ones (continual runs and sweeps load them once); ``sets``: already
    validated ones."""
    from unlearn.protocols.tofu import check_benchmark

    check_benchmark(cfg.benchmark)
    _check_retain_logs(cfg)
    plan = EvalPlan(batch_size=cfg.eval_batch_size, gen_batch_size=cfg.gen_batch_size, downstream_limit=cfg.downstream_limit,
                    downstream_include=cfg.downstream_include)
    if cfg.eval and cfg.benchmark == "tofu":
        return _plan_tofu(cfg, plan)
    if cfg.eval and cfg.benchmark in ("muse", "wmdp"):
        return _plan_text(cfg, plan)
    if cfg.eval:
        plan.sets = sets if sets is not None else eval_sets_for(cfg)
    if plan.sets:
        plan.judges = judges or load_judges(cfg)
        plan.retain_ratios = _retain_ratios(cfg, plan.sets)
        if cfg.holdout:
            forget_set(plan.sets)  # (the forget set is what the holdout is compared with)
            plan.holdout = read_records(cfg.holdout)
        _plan_baseline(cfg, plan)
    return _plan_downstream(cfg, plan)


def _plan_baseline(cfg, plan: EvalPlan) -> None:
    if cfg.baseline:
        if RunDir(cfg.baseline).read_summary() is None:
            raise DataError(f"{cfg.baseline}: --baseline needs an evaluation folder (its summary.json is missing "
                            "or not readable; make one with unlearn eval)")
        plan.baseline = cfg.baseline


def _plan_downstream(cfg, plan: EvalPlan) -> EvalPlan:
    if cfg.downstream:
        from unlearn.evaluation.downstream import downstream_tasks_for

        plan.downstream = downstream_tasks_for(cfg)
    return plan


def _check_retain_logs(cfg) -> None:
    if cfg.retain_logs and cfg.benchmark not in ("tofu", "muse"):
        raise ConfigError("--retain-logs reads a TOFU_EVAL.json for the TOFU standard: add --benchmark tofu "
                          "(the closer-look protocol takes --retain-model)")


def _plan_tofu(cfg, plan: EvalPlan) -> EvalPlan:
    """``--benchmark tofu``: its sets and the retain model's logs, read and checked now."""
    from unlearn.protocols.tofu import check_benchmark, load_tofu_sets, read_retain_logs

    check_benchmark(cfg.benchmark)
    if cfg.forget is not None or not cfg.data:
        raise DataError("--benchmark tofu evaluates the configs of locuslab/TOFU: give --data locuslab/TOFU or a "
                        "snapshot folder of them (not --forget/--retain files)")
    for flag, value in (("--holdout", cfg.holdout), ("--eval-data", cfg.eval_data)):
        if value:
            raise ConfigError(f"{flag} belongs to the closer-look protocol; --benchmark tofu reads the holdout and "
                              "evaluation configs from --data")
    if cfg.retain_logs and cfg.retain_model:
        raise ConfigError("give --retain-logs or --retain-model, not both")
    plan.tofu = load_tofu_sets(cfg.data, cfg.split)
    if cfg.retain_logs:
        plan.retain_logs = read_retain_logs(cfg.retain_logs)
    elif cfg.retain_model:
        plan.retain_logs = _tofu_retain_logs_from_model(cfg, plan.tofu)
    _plan_baseline(cfg, plan)
    return _plan_downstream(cfg, plan)


def _plan_text(cfg, plan: EvalPlan) -> EvalPlan:
    """``--benchmark muse`` (its sets and the retain model's AUC) or ``wmdp`` (lm-eval tasks), checked now."""
    if cfg.holdout or cfg.eval_data or cfg.retain_model:
        raise ConfigError(f"--holdout, --eval-data and --retain-model belong to the closer-look protocol; --benchmark "
                          f"{cfg.benchmark} reads its own sets" + (" (and --retain-logs MUSE_EVAL.json)"
                                                                   if cfg.benchmark == "muse" else ""))
    if cfg.benchmark == "muse":
        from unlearn.protocols.muse import load_muse_sets, read_retain_auc

        if cfg.forget is not None or not cfg.data:
            raise DataError("--benchmark muse evaluates a MUSE corpus: give --data muse-bench/MUSE-News (or -Books) "
                            "or a snapshot folder of it")
        plan.muse = load_muse_sets(cfg.data)
        if cfg.retain_logs:
            plan.retain_auc = read_retain_auc(cfg.retain_logs)
        return _plan_downstream(cfg, plan)
    from unlearn.evaluation.downstream import check_downstream, parse_tasks
    from unlearn.protocols.tofu import WMDP_TASKS

    if cfg.retain_logs:
        raise ConfigError("--retain-logs: --benchmark wmdp compares accuracies, not a retain model's logs")
    plan.wmdp = True
    plan.downstream = parse_tasks(cfg.downstream or WMDP_TASKS)
    check_downstream(plan.downstream, cfg.downstream_include)
    return plan


def _tofu_retain_logs_from_model(cfg, sets):
    """A retain model's forget truth ratios and Min-K% AUC under the TOFU standard, computed now."""
    from unlearn.models import load_model
    from unlearn.prompts import prompt_format_for
    from unlearn.protocols.tofu import retain_logs_from_model

    path = Path(cfg.retain_model)
    if (path / MODEL).is_dir() and not (path / "config.json").exists():
        path = path / MODEL
    model, tokenizer = load_model(str(path) if path.exists() else cfg.retain_model, dtype=cfg.dtype,
                                  trust_remote_code=cfg.trust_remote_code, attn_implementation=cfg.attn_implementation)
    model.to(_device())
    fmt = prompt_format_for(tokenizer, cfg, str(path) if path.exists() else cfg.retain_model)
    logs = retain_logs_from_model(model, tokenizer, fmt, sets, cfg.eval_batch_size, str(cfg.retain_model))
    del model
    return logs


def run_eval(cfg) -> dict:
    """``unlearn eval``: evaluate ``cfg.model`` on the sets of ``cfg.eval_data or cfg.data``."""
    from unlearn.distributed import is_main_process

    from unlearn.protocols.tofu import check_benchmark

    check_benchmark(cfg.benchmark)
    _check_retain_logs(cfg)
    data = cfg.eval_data or cfg.data
    if not data and not cfg.forget and cfg.benchmark != "wmdp":
        raise DataError("no evaluation data: give --data DIR (a TOFU or real-world folder) or --forget FILE "
                        "[--retain FILE]")
    if not cfg.out:
        raise DataError("no output folder: give --out DIR")
    with RunDir(cfg.out).locked(is_main_process()):
        return _run_eval(cfg, data)


def _run_eval(cfg, data) -> dict:
    from unlearn.distributed import is_main_process, wait_for_everyone
    from unlearn.models import load_model
    from unlearn.pipeline import inputs_of, validate_model_settings
    from unlearn.prompts import prompt_format_for

    validate_model_settings(cfg)
    texts = None
    if cfg.benchmark in ("tofu", "muse", "wmdp"):
        sets = None
    elif data:
        sets = load_eval_sets(data, cfg.split, cfg.task_id)
    else:
        from unlearn.evaluation.sets import file_sets

        sets = file_sets(cfg.forget, cfg.retain)
    plan = plan_evaluation(dataclasses.replace(cfg, eval=True, downstream=cfg.downstream
                                               if cfg.benchmark in ("wmdp", "muse") else None), sets=sets)
    if plan.muse is not None:
        m = plan.muse
        texts = [r.get("prompt", r.get("question", r.get("text", ""))) + " " + r.get("gt", r.get("answer", ""))
                 for rows in (m.verbmem, m.forget_qa, m.retain_qa, m.privleak_forget) for r in rows or []]
    if plan.tofu is not None:
        t = plan.tofu
        texts = [r["question"] + " " + r["answer"] for rows in (t.forget, t.retain, t.ra, t.wf) for r in rows]
    out = RunDir(cfg.out)
    out.prepare(overwrite=cfg.overwrite, main_process=is_main_process(), inputs=inputs_of(cfg), scope="eval")
    wait_for_everyone()
    if sets is not None:
        texts = [q + " " + a for s in sets for q, a in zip(s.questions, s.answers)]
    model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code,
                                  attn_implementation=cfg.attn_implementation, texts=texts)
    model.to(_device())
    fmt = prompt_format_for(tokenizer, cfg)
    if is_main_process():
        from unlearn.config import save_fields

        save_fields(cfg, out.eval_config, ("model", "data", "eval", "out"))  # an evaluation's own settings
    summary = plan.evaluate(model, tokenizer, fmt, out, shard=True)
    if is_main_process():
        out.discard_previous()
    return summary
