"""The evaluation as commands: ``unlearn eval``, the evaluation after ``unlearn run`` and each
continual task, the sets a config names, the judges (loaded once per process), and the retain
model's truth ratios for Forget Quality."""

from __future__ import annotations

import logging
from pathlib import Path

from ..data import DataError, read_records
from . import metrics as M
from .judges import Unavailable
from .sets import EvalSet, load_eval_sets
from .suites import Evaluation, _nlls, _warned, evaluate, print_table, set_file, write_evaluation

log = logging.getLogger("unlearn")


# --------------------------------------------------------------------------- retain model


def _forget_set(sets: list[EvalSet]) -> EvalSet:
    for s in sets:
        if s.name == "Forget":
            return s
    raise DataError("the evaluation data has no Forget set")


def retain_ratios_from(source: str | Path, forget: EvalSet, *, dtype: str = "auto",
                       trust_remote_code: bool = False, attn_implementation: str | None = None,
                       prompt_format: str | None = None, batch_size: int = 16) -> list[float]:
    """A retain model's raw truth ratios on ``forget``, for Forget Quality.

    ``source``: a folder with a saved evaluation (``eval_Forget.jsonl``, same questions in the same
    order) or a retain model (folder or hub id), which is run on the forget NLLs only.
    """
    path = Path(source)
    saved = path / set_file("Forget")
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
    if (path / "model").is_dir() and not (path / "config.json").exists():
        path = path / "model"  # the output folder of a fine-tuning run
    from ..models import load_model
    from ..prompts import detect_prompt_format

    model, tokenizer = load_model(str(path) if path.exists() else str(source), dtype=dtype,
                                  trust_remote_code=trust_remote_code, attn_implementation=attn_implementation)
    model.to(_device())
    fmt = detect_prompt_format(tokenizer, str(source), prompt_format)
    _, para, pert = _nlls(model, tokenizer, fmt, forget, batch_size, with_answers=False)
    del model
    return [float(x) for x in M.truth_ratios(para, pert)]


# --------------------------------------------------------------------------- commands


def _device():
    from ..distributed import state

    return state().device  # this process's GPU under accelerate launch / torchrun


def eval_sets_for(cfg) -> list[EvalSet] | None:
    """The eval sets of a run (validated now), or None when the run has no evaluation data."""
    data = cfg.eval_data
    if data is None and cfg.forget is None and cfg.data and Path(cfg.data).is_dir():
        data = cfg.data
    if data is None:
        log.info("no evaluation data for this run (give --eval-data DIR with the *_perturbed.json "
                 "files); skipping the evaluation")
        return None
    try:
        sets = load_eval_sets(data, cfg.split, cfg.task_id)
    except DataError as e:
        raise DataError(f"{e} (pass --eval-data DIR or --no-eval)") from None
    if cfg.retain_model and (Path(cfg.retain_model) / set_file("Forget")).is_file():
        _retain_ratios(cfg, sets)  # a saved evaluation is checked now, not after training
    return sets


_JUDGES: dict[tuple, tuple] = {}


def load_judges(cfg):
    """The sentence embedder and the NLI judge, loaded once per process (continual runs reuse them)."""
    from .judges import load_embedder, load_nli

    key = (cfg.embedder, cfg.nli)
    if key not in _JUDGES:
        try:
            embedder = load_embedder(cfg.embedder)
        except (ImportError, RuntimeError) as e:
            raise DataError(str(e).splitlines()[0]) from None
        nli = load_nli(cfg.nli)
        if isinstance(nli, Unavailable) and "disabled" not in nli.reason:
            _warned.add(nli.reason)  # load_nli has already said why
        _JUDGES.clear()  # keep one pair in memory
        _JUDGES[key] = (embedder, nli)
    return _JUDGES[key]


def _retain_ratios(cfg, sets: list[EvalSet]) -> list[float] | None:
    if not cfg.retain_model:
        return None
    return retain_ratios_from(cfg.retain_model, _forget_set(sets), dtype=cfg.dtype,
                              trust_remote_code=cfg.trust_remote_code,
                              attn_implementation=cfg.attn_implementation,
                              prompt_format=cfg.prompt_format, batch_size=cfg.eval_batch_size)


def _finish(cfg, ev: Evaluation, out: Path) -> dict:
    from ..distributed import is_main_process

    if is_main_process():  # one writer when several processes evaluated together
        write_evaluation(ev, out)
        print_table(ev.summary)
        log.info("wrote the evaluation to %s", out / "summary.json")
    return ev.summary


def run_eval(cfg) -> dict:
    """``unlearn eval``: evaluate ``cfg.model`` on the sets of ``cfg.eval_data or cfg.data``."""
    from ..models import load_model
    from ..prompts import detect_prompt_format

    data = cfg.eval_data or cfg.data
    if not data:
        raise DataError("no evaluation data: give --data DIR (a TOFU or real-world folder)")
    if not cfg.out:
        raise DataError("no output folder: give --out DIR")
    sets = load_eval_sets(data, cfg.split, cfg.task_id)
    out = Path(cfg.out)
    if (out / "summary.json").exists() and not cfg.overwrite:
        raise DataError(f"{out}: already holds summary.json; choose another --out or pass --overwrite")
    embedder, nli = load_judges(cfg)
    retain_ratios = _retain_ratios(cfg, sets)
    texts = [q + " " + a for s in sets for q, a in zip(s.questions, s.answers)]
    model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code,
                                  attn_implementation=cfg.attn_implementation, texts=texts)
    model.to(_device())
    fmt = detect_prompt_format(tokenizer, cfg.model, cfg.prompt_format)
    ev = evaluate(model, tokenizer, fmt, sets, embedder, nli, cfg.eval_batch_size, retain_ratios, shard=True)
    from ..distributed import is_main_process

    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "eval_config.yaml")
    return _finish(cfg, ev, out)


def evaluate_after_unlearning(cfg, model, tokenizer, fmt, out, sets: list[EvalSet] | None = None,
                              shard: bool = False) -> dict | None:
    """The evaluation step of ``unlearn run``; None when the run has no evaluation data.
    ``shard``: every process calls this and evaluates its share (see :func:`evaluate`)."""
    sets = sets if sets is not None else eval_sets_for(cfg)
    if not sets:
        return None
    retain_ratios = _retain_ratios(cfg, sets)
    embedder, nli = load_judges(cfg)
    ev = evaluate(model, tokenizer, fmt, sets, embedder, nli, cfg.eval_batch_size, retain_ratios, shard=shard)
    return _finish(cfg, ev, Path(out))
