"""``unlearn audit``: the attacks run on a model (and the target and retain models beside it).

Everything is checked before any model loads (attack names, data, holdout, bit widths, the
output folder). Then each model is loaded once and every attack asked for runs on it; each
(attack, model) result is written atomically to ``DIR/attacks/<attack>.<model>.json`` with the
settings it was computed under, and its per-item records to ``DIR/items/<attack>.<model>.jsonl``,
so ``--resume`` skips what is finished. ``DIR/audit.json`` (the sections ``mia``, ``memorization``,
``relearn``, ``quantization``, ``prompts``), ``DIR/audit.png`` and the terminal table are made
from those files at the end. Every model pass goes through the evaluation runner
(:mod:`unlearn.evaluation.scoring`: batched, length-sorted); the audited models' files are only read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unlearn.data import read_records
from unlearn.errors import ConfigError, DataError, OutputError
from unlearn.io import atomic_write_json, atomic_write_jsonl
from unlearn.evaluation.six_metrics import _finite
from unlearn.rundir import MODEL, RunDir
from unlearn.audit import quantize

log = logging.getLogger("unlearn")

ATTACKS = ("mia", "memorization", "relearn", "quantization", "prompts")
ROLES = ("unlearned", "target", "retain")
AUDIT = "audit.json"
PLOT = "audit.png"
OWN = (AUDIT, PLOT, "attacks", "items", "relearn")  # everything an audit writes into its folder


# --------------------------------------------------------------------------- inputs


def parse_attacks(text: str) -> list[str]:
    names = [a.strip() for a in str(text).split(",") if a.strip()]
    unknown = [a for a in names if a not in ATTACKS]
    if unknown or not names:
        raise ConfigError(f"--attacks: unknown attack {unknown[0]!r} (valid: {', '.join(ATTACKS)})" if unknown
                          else f"--attacks: name at least one of {', '.join(ATTACKS)}")
    return list(dict.fromkeys(names))


@dataclass
class AuditInputs:
    """What an audit reads, validated: the sets, the models by role, the attacks."""

    attacks: list[str]
    forget: object  # EvalSet
    retain: object | None  # EvalSet
    holdout: list[dict] | None
    models: dict[str, str]  # role -> model folder or hub id
    saved_retain: dict | None = None  # a retain model's audit.json, used instead of running it
    ref_model: str | None = None
    bits: list[int] = field(default_factory=list)
    backend: str = "simulated"

    @property
    def data_key(self) -> str:
        """A fingerprint of the forget and holdout items: results are only combined over the same."""
        h = hashlib.sha256()
        for q, a in zip(self.forget.questions, self.forget.answers):
            h.update(f"{q}\x00{a}\x01".encode())
        for r in self.holdout or []:
            h.update(f"{r['question']}\x00{r['answer']}\x02".encode())
        return h.hexdigest()[:16]


def _model_folder(path: str) -> str:
    p = Path(path)
    if (p / MODEL).is_dir() and not (p / "config.json").exists():
        return str(p / MODEL)  # a run's output folder: its model
    return str(path)


def _saved_audit(path: str) -> dict | None:
    for candidate in (Path(path) / AUDIT, Path(path) / "audit" / AUDIT):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text(encoding="utf-8")) | {"_source": str(candidate)}
            except ValueError:
                raise DataError(f"{candidate}: not valid JSON") from None
    return None


def _holdout(cfg, attacks: list[str]) -> list[dict] | None:
    if "mia" not in attacks:
        return None
    path = cfg.holdout
    if path is None and cfg.data and Path(cfg.data).is_dir():
        candidate = Path(cfg.data) / f"holdout{cfg.split[-2:]}.json"
        path = candidate if candidate.is_file() else None
    if path is None:
        raise DataError("the mia attack needs rows never trained on: give --holdout FILE (JSON lines with question "
                        "and answer), or leave mia out of --attacks")
    rows = read_records(path, required=("question", "answer"))
    if not rows:
        raise DataError(f"{path}: the holdout set is empty")
    return rows


def check_inputs(cfg) -> AuditInputs:
    """Everything the audit needs, checked before any model loads."""
    from unlearn.protocols.plan import eval_sets_for
    from unlearn.evaluation.sets import forget_set

    attacks = parse_attacks(cfg.attacks)
    if not cfg.out:
        raise OutputError("no output folder: give --out DIR")
    if cfg.model == "tiny":
        raise ConfigError("--model: give the folder of the model to audit (the tiny preset is an untrained model)")
    tofu_holdout = None
    if cfg.benchmark == "tofu":  # the TOFU standard's sets: <split>_perturbed, retain_perturbed, holdoutXX
        from unlearn.evaluation.sets import EvalSet
        from unlearn.protocols.tofu import check_benchmark, load_tofu_sets

        check_benchmark(cfg.benchmark)
        t = load_tofu_sets(cfg.data, cfg.split)
        sets, tofu_holdout = [EvalSet("Retain", t.retain, "retain"), EvalSet("Forget", t.forget, "forget")], t.holdout
    else:
        sets = eval_sets_for(dataclasses.replace(cfg, eval=True))
    if not sets:
        raise DataError("no forget set to audit: give --data DIR (TOFU or real-world layout) or --forget FILE")
    forget = forget_set(sets)
    retain = next((s for s in sets if s.name == "Retain"), None)
    if "quantization" in attacks and retain is None:
        log.warning("no retain set: the quantization attack measures the forget set only")
    if "relearn" in attacks and len(forget.rows) < 2:
        raise DataError("the relearning attack needs at least two forget rows")
    models = {"unlearned": _model_folder(cfg.model)}
    saved = None
    if cfg.target_model:
        models["target"] = _model_folder(cfg.target_model)
    if cfg.retain_model:
        saved = _saved_audit(cfg.retain_model)
        if saved is None:
            models["retain"] = _model_folder(cfg.retain_model)
    backend = quantize.backend(cfg.quant_backend) if "quantization" in attacks else "simulated"
    bits = quantize.check_bits(cfg.quant_bits, backend) if "quantization" in attacks else []
    holdout = tofu_holdout if tofu_holdout is not None and not cfg.holdout and "mia" in attacks else _holdout(cfg, attacks)
    inputs = AuditInputs(attacks, forget, retain, holdout, models, saved, cfg.ref_model, bits, backend)
    if saved is not None and saved.get("data", {}).get("key") != inputs.data_key:
        raise DataError(f"{saved['_source']}: that audit was run on other forget or holdout items than this one; "
                        "audit the retain model on the same data, or give its model folder")
    return inputs


# --------------------------------------------------------------------------- measuring


def score_variant(model, tokenizer, variant, add_special_tokens: bool, batch_size: int,
                  gen_batch_size: int | None = None) -> list[dict]:
    """Per item of a prompt variant: the generation, its ROUGE-L recall against the reference, and
    the probability of the target text after the prompt (each process its share, when several)."""
    from unlearn.distributed import sharded_map
    from unlearn.evaluation import metrics as M
    from unlearn.evaluation.scoring import MAX_LENGTH, answer_nlls, generate, generation_batch
    from unlearn.audit.prompts import Rendered

    fmt = Rendered(add_special_tokens)
    # A longer prompt than the evaluation's gets as many more tokens: the reply's budget is unchanged.
    lengths = [len(ids) for ids in tokenizer(variant.prompts)["input_ids"]]
    limit = MAX_LENGTH + max(lengths) - min(lengths)
    gens = sharded_map(lambda ps: generate(model, tokenizer, fmt, ps, max_length=limit,
                                           batch_size=generation_batch(batch_size, gen_batch_size),
                                           desc=variant.name), variant.prompts)
    pairs = list(zip(variant.prompts, variant.targets))
    nll = np.array(sharded_map(lambda ps: list(answer_nlls(
        model, tokenizer, fmt, [p for p, _ in ps], [t for _, t in ps], batch_size, max_length=limit,
        desc=f"{variant.name}: NLLs")), pairs))
    rouge = M.rouge_l_recall_items(gens, variant.references)
    prob = M.probability_items(nll)
    return [{"question": q, "generation": g, "reference": r, "rouge": float(x), "probability": float(p)}
            for q, g, r, x, p in zip(variant.questions, gens, variant.references, rouge, prob)]


def _means(items: list[dict]) -> dict:
    return {"ROUGE": float(np.mean([i["rouge"] for i in items])),
            "Probability": float(np.mean([i["probability"] for i in items]))}


@dataclass
class Subject:
    """One model under audit: loaded once, with what its attacks share (token statistics, plain scores)."""

    role: str
    path: str
    model: object
    tokenizer: object
    fmt: object
    memo: dict = field(default_factory=dict)

    def token_stats(self, name: str, questions, answers, batch_size: int):
        from unlearn.evaluation.scoring import token_stats

        from unlearn.distributed import sharded_map

        if name not in self.memo:
            self.memo[name] = sharded_map(lambda qa: token_stats(
                self.model, self.tokenizer, self.fmt, [q for q, _ in qa], [a for _, a in qa], batch_size),
                list(zip(questions, answers)))
        return self.memo[name]


def attack_mia(cfg, inputs: AuditInputs, s: Subject, out: Path) -> tuple[dict, list[dict]]:
    from unlearn.distributed import sharded_map
    from unlearn.evaluation import mia
    from unlearn.evaluation.scoring import answer_nlls, grad_norms

    f, h = inputs.forget, inputs.holdout
    hq, ha = [r["question"] for r in h], [r["answer"] for r in h]
    fs = s.token_stats("forget", f.questions, f.answers, cfg.eval_batch_size)
    hs = s.token_stats("holdout", hq, ha, cfg.eval_batch_size)
    f_scores, h_scores = mia.item_scores(fs, cfg.mia_k), mia.item_scores(hs, cfg.mia_k)
    if inputs.ref_model:
        from unlearn.models import load_model

        ref, ref_tok = load_model(_model_folder(inputs.ref_model), dtype=cfg.dtype,
                                  trust_remote_code=cfg.trust_remote_code)
        ref.to(s.model.device)
        if ref_tok.get_vocab() != s.tokenizer.get_vocab():
            raise DataError(f"--ref-model {inputs.ref_model}: its tokenizer differs from the audited model's")
        def ref_nlls(qa):
            return list(answer_nlls(ref, s.tokenizer, s.fmt, [q for q, _ in qa], [a for _, a in qa],
                                    cfg.eval_batch_size, desc="reference NLLs"))

        rf, rh = sharded_map(ref_nlls, list(zip(f.questions, f.answers))), sharded_map(ref_nlls, list(zip(hq, ha)))
        del ref
        f_scores["Reference"] = mia.reference_scores([x.avg_loss for x in fs], rf)
        h_scores["Reference"] = mia.reference_scores([x.avg_loss for x in hs], rh)
    def norms(qa):
        return [-x for x in grad_norms(s.model, s.tokenizer, s.fmt, [q for q, _ in qa], [a for _, a in qa])]

    f_scores["GradNorm"] = sharded_map(norms, list(zip(f.questions, f.answers)))
    h_scores["GradNorm"] = sharded_map(norms, list(zip(hq, ha)))
    aucs = {name: mia.auc(f_scores[name], h_scores[name]) for name in f_scores}
    items = ([{"set": "forget", "question": q, **{k: v[i] for k, v in f_scores.items()}}
              for i, q in enumerate(f.questions)]
             + [{"set": "holdout", "question": q, **{k: v[i] for k, v in h_scores.items()}} for i, q in enumerate(hq)])
    return {"auc": aucs, "forget": len(fs), "holdout": len(hs)}, items


def attack_memorization(cfg, inputs: AuditInputs, s: Subject, out: Path) -> tuple[dict, list[dict]]:
    from unlearn.evaluation import mia

    f = inputs.forget
    fs = s.token_stats("forget", f.questions, f.answers, cfg.eval_batch_size)
    em = [mia.exact_memorization(x) for x in fs]
    es = [mia.extraction_strength(x) for x in fs]
    kept = [x for x in em if x is not None]
    summary = {"exact_memorization": float(np.mean(kept)) if kept else None,
               "extraction_strength": float(np.mean(es))}
    return summary, [{"question": q, "exact_memorization": a, "extraction_strength": b}
                     for q, a, b in zip(f.questions, em, es)]


def _prompt_variants(cfg, inputs: AuditInputs, fmt, rows=None):
    from unlearn.audit.prompts import variants

    f = inputs.forget
    return variants(fmt, f.rows if rows is None else rows, f.answer_key, inputs.retain.rows if inputs.retain else None,
                    icl_examples=cfg.icl_examples, prefix_fraction=cfg.prefix_fraction, seed=cfg.seed)


def _plain(cfg, inputs: AuditInputs, s: Subject, key: str, rows) -> list[dict]:
    """The plain questions of ``rows`` scored on the subject (memoised: prompts and quantization share it)."""
    if key not in s.memo:
        v, _ = _prompt_variants(cfg, inputs, s.fmt, rows)
        s.memo[key] = score_variant(s.model, s.tokenizer, v[0], s.fmt.add_special_tokens, cfg.eval_batch_size,
                                    cfg.gen_batch_size)
    return s.memo[key]


def attack_prompts(cfg, inputs: AuditInputs, s: Subject, out: Path) -> tuple[dict, list[dict]]:
    found, missing = _prompt_variants(cfg, inputs, s.fmt)
    summary, items = {}, []
    for v in found:
        scored = (_plain(cfg, inputs, s, "plain:forget", inputs.forget.rows) if v.name == "plain" else
                  score_variant(s.model, s.tokenizer, v, s.fmt.add_special_tokens, cfg.eval_batch_size, cfg.gen_batch_size))
        summary[v.name] = _means(scored)
        items += [{"variant": v.name, **i} for i in scored]
    if missing:
        summary["unavailable"] = missing
    return summary, items


def _sets_scores(cfg, inputs: AuditInputs, model, s: Subject) -> tuple[dict, list[dict]]:
    from unlearn.audit.prompts import variants

    summary, items = {}, []
    for name, es in (("forget", inputs.forget), ("retain", inputs.retain)):
        if es is None:
            continue
        v = variants(s.fmt, es.rows, es.answer_key, None)[0][0]
        scored = score_variant(model, s.tokenizer, v, s.fmt.add_special_tokens, cfg.eval_batch_size, cfg.gen_batch_size)
        summary[name] = _means(scored)
        items += [{"set": name, **i} for i in scored]
    return summary, items


def attack_quantization(cfg, inputs: AuditInputs, s: Subject, out: Path) -> tuple[dict, list[dict]]:
    summary, items = {}, []
    full = {}
    for name, es in (("forget", inputs.forget), ("retain", inputs.retain)):
        if es is not None:
            full[name] = _means(_plain(cfg, inputs, s, f"plain:{name}", es.rows))
    summary["full precision"] = full
    for bits in inputs.bits:
        label = f"{bits}-bit"
        if inputs.backend == "bitsandbytes":
            qmodel = quantize.load_bitsandbytes(s.path, bits, cfg.trust_remote_code)
        else:
            qmodel = quantize.quantized_copy(s.model, bits, cfg.quant_group_size)
        summary[label], scored = _sets_scores(cfg, inputs, qmodel, s)
        del qmodel
        for name in summary[label]:
            summary[label][name]["change"] = {m: summary[label][name][m] - full[name][m] for m in full[name]}
        items += [{"bits": bits, **i} for i in scored]
    return summary, items


def attack_relearn(cfg, inputs: AuditInputs, s: Subject, out: Path) -> tuple[dict, list[dict]]:
    from unlearn.audit import relearn as R
    from unlearn.audit.prompts import variants

    f = inputs.forget
    trained_on, measured = R.split(len(f.rows), cfg.relearn_fraction, cfg.seed)
    rows = [f.rows[i] for i in measured]

    def measure(model, tokenizer, fmt):
        v = variants(fmt, rows, f.answer_key, None)[0][0]
        return score_variant(model, tokenizer, v, fmt.add_special_tokens, cfg.eval_batch_size, cfg.gen_batch_size)

    info = {"relearned_rows": len(trained_on), "measured_rows": len(measured)}
    if s.role != "unlearned":  # the target's (and retain model's) knowledge of the measured part: no training
        scored = measure(s.model, s.tokenizer, s.fmt)
        return {**info, "measured": _means(scored)}, [{"stage": "as is", **i} for i in scored]
    before, after = R.relearn(cfg, s.path, [f.rows[i] for i in trained_on], f.answer_key, out / "relearn", measure)
    summary = {**info, "steps": cfg.relearn_steps, "lr": cfg.relearn_lr, "batch_size": cfg.relearn_batch_size,
               "before": _means(before), "after": _means(after)}
    return summary, [{"stage": "before", **i} for i in before] + [{"stage": "after", **i} for i in after]


RUNNERS = {"mia": attack_mia, "memorization": attack_memorization, "relearn": attack_relearn,
           "quantization": attack_quantization, "prompts": attack_prompts}
ORDER = ("mia", "memorization", "prompts", "quantization", "relearn")  # relearn last: it loads its own copy

SETTINGS = {  # the Config fields each attack's result depends on (besides the model and the data)
    "mia": ("mia_k", "ref_model", "max_length", "dtype", "prompt_format"),
    "memorization": ("dtype", "prompt_format"),
    "prompts": ("icl_examples", "prefix_fraction", "seed", "dtype", "prompt_format"),
    "quantization": ("quant_bits", "quant_group_size", "dtype", "prompt_format"),
    "relearn": ("relearn_steps", "relearn_lr", "relearn_batch_size", "relearn_fraction", "seed", "weight_decay",
                "max_length", "dtype", "mixed_precision", "prompt_format"),
}


def _settings(cfg, inputs: AuditInputs, attack: str, role: str) -> dict:
    out = {k: getattr(cfg, k) for k in SETTINGS[attack]}
    if attack == "quantization":
        out["backend"] = inputs.backend
    return {"model": inputs.models[role], "data": inputs.data_key, **out}


# --------------------------------------------------------------------------- the folder


def _prepare(out: Path, cfg) -> None:
    present = [n for n in OWN if (out / n).exists()]
    if cfg.resume and cfg.overwrite:
        raise OutputError("--resume continues the audit in --out and --overwrite starts it again: give one")
    if present and not (cfg.resume or cfg.overwrite):
        raise OutputError(f"{out}: already holds an audit ({', '.join(present)}); --resume to finish it or "
                          "--overwrite to replace it")
    if cfg.overwrite:
        for n in present:  # the audit's own files only
            p = out / n
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    (out / "attacks").mkdir(parents=True, exist_ok=True)
    (out / "items").mkdir(exist_ok=True)


def _done(out: Path, attack: str, role: str, settings: dict) -> dict | None:
    path = out / "attacks" / f"{attack}.{role}.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    if saved.get("settings") != json.loads(json.dumps(settings)):
        log.info("%s: computed under other settings; running it again", path)
        return None
    return saved["result"]


def run_audit(cfg, inputs: AuditInputs | None = None) -> dict:
    """``unlearn audit``: every attack of ``cfg.attacks`` on ``cfg.model`` (and ``cfg.target_model``,
    ``cfg.retain_model``), written to ``cfg.out``; returns ``audit.json``'s content."""
    from unlearn.distributed import is_main_process, wait_for_everyone

    inputs = inputs or check_inputs(cfg)
    out = Path(cfg.out)
    main = is_main_process()
    if main:
        out.mkdir(parents=True, exist_ok=True)
    wait_for_everyone()
    with RunDir(out).locked(main):
        if main:
            _prepare(out, cfg)
        wait_for_everyone()
        results: dict[str, dict[str, dict]] = {a: {} for a in inputs.attacks}
        for role, path in inputs.models.items():
            pending = []
            for attack in (a for a in ORDER if a in inputs.attacks):
                done = _done(out, attack, role, _settings(cfg, inputs, attack, role)) if cfg.resume else None
                if done is None:
                    pending.append(attack)
                else:
                    results[attack][role] = done
            if pending:
                subject = _load(cfg, role, path)
                for attack in pending:
                    if main:
                        print(f"audit: {attack} on the {role} model ({path})")
                    summary, items = RUNNERS[attack](cfg, inputs, subject, out)
                    if main:  # every process computed the same results (gathered): one writes
                        atomic_write_jsonl(out / "items" / f"{attack}.{role}.jsonl", _finite(items))
                        atomic_write_json(out / "attacks" / f"{attack}.{role}.json",
                                          _finite({"settings": _settings(cfg, inputs, attack, role), "result": summary}))
                    results[attack][role] = summary
                del subject
        if inputs.saved_retain is not None:
            for attack in inputs.attacks:
                saved = _from_saved(inputs.saved_retain, attack)
                if saved is not None:
                    results[attack]["retain"] = saved
        audit = assemble(cfg, inputs, results)
        if main:
            atomic_write_json(out / AUDIT, _finite(audit))
            from unlearn.report.plots import audit_plot

            audit_plot(audit, out / PLOT)
        wait_for_everyone()
    if main:
        print_audit(audit)
        print(f"audit: wrote {out / AUDIT} and {out / PLOT}")
    return audit


def _from_saved(saved: dict, attack: str) -> dict | None:
    """The audited model's result of ``attack`` in a saved ``audit.json`` (the retain model's), as
    :data:`RUNNERS` return it; relearning is not taken (its split depends on the settings)."""
    section = saved.get(attack) or {}
    if attack == "mia":
        return {"auc": section["auc"]["unlearned"]} if "unlearned" in section.get("auc", {}) else None
    if attack == "relearn":
        return None
    return section.get("unlearned")


def _load(cfg, role: str, path: str) -> Subject:
    from unlearn.distributed import state
    from unlearn.models import load_model
    from unlearn.prompts import prompt_format_for

    model, tokenizer = load_model(path, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code,
                                  attn_implementation=cfg.attn_implementation)
    model.to(state().device)
    return Subject(role, path, model, tokenizer, prompt_format_for(tokenizer, cfg, path))


# --------------------------------------------------------------------------- audit.json


def _recovery(before: float, after: float, target: float) -> float | None:
    gap = target - before
    return None if abs(gap) < 1e-12 else (after - before) / gap


def assemble(cfg, inputs: AuditInputs, results: dict) -> dict:
    """``audit.json``: one section per attack, each with the value of every model audited."""
    from unlearn.evaluation import mia

    models = dict(inputs.models)
    if inputs.saved_retain is not None:
        models["retain"] = inputs.saved_retain.get("models", {}).get("unlearned", cfg.retain_model)
    audit = {"models": models, "attacks": inputs.attacks,
             "data": {"source": cfg.data or cfg.forget, "split": cfg.split, "task_id": cfg.task_id,
                      "forget": len(inputs.forget.rows), "holdout": len(inputs.holdout or []),
                      "key": inputs.data_key}}
    if "mia" in results:
        sec = {"k": cfg.mia_k, "auc": {role: r["auc"] for role, r in results["mia"].items()}}
        retain = sec["auc"].get("retain")
        if retain:
            sec["privleak"] = {role: {a: mia.privleak(v, retain[a]) for a, v in aucs.items() if a in retain}
                               for role, aucs in sec["auc"].items() if role != "retain"}
        audit["mia"] = sec
    if "memorization" in results:
        audit["memorization"] = dict(results["memorization"])
    if "relearn" in results:
        sec = dict(results["relearn"])
        u, t = sec.get("unlearned"), sec.get("target")
        if u and t:
            sec["recovery"] = {m: _recovery(u["before"][m], u["after"][m], t["measured"][m]) for m in u["before"]}
        audit["relearn"] = sec
    if "quantization" in results:
        audit["quantization"] = {"backend": inputs.backend, "group_size": cfg.quant_group_size,
                                 **results["quantization"]}
    if "prompts" in results:
        audit["prompts"] = dict(results["prompts"])
    return audit


def forget_scores(audit: dict) -> dict[str, dict[str, float]]:
    """``{check: {role: forget-set ROUGE}}``: what the plot and the table show first."""
    rows: dict[str, dict[str, float]] = {}
    for role, variants in audit.get("prompts", {}).items():
        for name, v in variants.items():
            if name != "unavailable":
                rows.setdefault("plain" if name == "plain" else name, {})[role] = v["ROUGE"]
    for role, levels in ((r, v) for r, v in audit.get("quantization", {}).items() if isinstance(v, dict)):
        for label, v in levels.items():
            if label != "full precision" and "forget" in v:
                rows.setdefault(f"quantized {label}", {})[role] = v["forget"]["ROUGE"]
    relearn = audit.get("relearn", {})
    if "unlearned" in relearn:
        rows.setdefault("relearned (measured half)", {})["unlearned"] = relearn["unlearned"]["after"]["ROUGE"]
        for role in ("target", "retain"):
            if role in relearn:
                rows["relearned (measured half)"][role] = relearn[role]["measured"]["ROUGE"]
    return rows


def print_audit(audit: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    roles = [r for r in ROLES if r in audit["models"]]
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    table = Table(title="Audit: does the forgotten knowledge come back? (forget set; higher = more remembered)")
    table.add_column("check", no_wrap=True)
    for role in roles:
        table.add_column(role, justify="right")
    for check, values in forget_scores(audit).items():
        table.add_row(f"ROUGE {check}", *(fmt(values.get(r)) for r in roles))
    for attack in (audit.get("mia") or {}).get("auc", {}).get("unlearned", {}):
        table.add_row(f"MIA AUC {attack}", *(fmt(audit["mia"]["auc"].get(r, {}).get(attack)) for r in roles))
    leak = (audit.get("mia") or {}).get("privleak")
    if leak:
        table.add_row("PrivLeak Min-K% (0: as retain)", *(fmt(leak.get(r, {}).get("Min-K%")) for r in roles))
    for key in ("exact_memorization", "extraction_strength"):
        if "memorization" in audit:
            table.add_row(key.replace("_", " "), *(fmt(audit["memorization"].get(r, {}).get(key)) for r in roles))
    Console(width=120).print(table)
    rec = audit.get("relearn", {}).get("recovery")
    if rec:
        print("relearning recovery (0: nothing back, 1: as before unlearning): "
              + ", ".join(f"{m} {fmt(v)}" for m, v in rec.items()))
