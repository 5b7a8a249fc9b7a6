"""The audit's five attacks, each run on one model (:class:`Subject`): membership inference,
memorisation, prompt variants, quantisation and relearning. Each returns its summary and its
per-item records; :mod:`unlearn.audit.run` decides what runs and keeps the results."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unlearn import models
from unlearn.audit import quantize
from unlearn.audit import relearn as R
from unlearn.audit.inputs import AuditInputs, model_folder
from unlearn.audit.prompts import Rendered, variants
from unlearn.distributed import sharded_map
from unlearn.errors import DataError
from unlearn.evaluation import metrics as M
from unlearn.evaluation import mia
from unlearn.evaluation.generation import generate, generation_batch
from unlearn.evaluation.scoring import MAX_LENGTH, answer_nlls, grad_norms, token_stats

log = logging.getLogger("unlearn")


def score_variant(
    model, tokenizer, variant, add_special_tokens: bool, batch_size: int, gen_batch_size: int | None = None
) -> list[dict]:
    """Per item of a prompt variant: the generation, its ROUGE-L recall against the reference, and
    the probability of the target text after the prompt (each process its share, when several)."""
    fmt = Rendered(add_special_tokens)
    # A longer prompt than the evaluation's gets as many more tokens: the reply's budget is unchanged.
    lengths = [len(ids) for ids in tokenizer(variant.prompts)["input_ids"]]
    limit = MAX_LENGTH + max(lengths) - min(lengths)
    gens = sharded_map(
        lambda ps: generate(
            model,
            tokenizer,
            fmt,
            ps,
            max_length=limit,
            batch_size=generation_batch(batch_size, gen_batch_size, model),
            desc=variant.name,
        ),
        variant.prompts,
    )
    pairs = list(zip(variant.prompts, variant.targets, strict=False))
    nll = np.array(
        sharded_map(
            lambda ps: list(
                answer_nlls(
                    model,
                    tokenizer,
                    fmt,
                    [p for p, _ in ps],
                    [t for _, t in ps],
                    batch_size,
                    max_length=limit,
                    desc=f"{variant.name}: NLLs",
                )
            ),
            pairs,
        )
    )
    rouge = M.rouge_l_recall_items(gens, variant.references)
    prob = M.probability_items(nll)
    return [
        {"question": q, "generation": g, "reference": r, "rouge": float(x), "probability": float(p)}
        for q, g, r, x, p in zip(variant.questions, gens, variant.references, rouge, prob, strict=False)
    ]


def _means(items: list[dict]) -> dict:
    return {
        "ROUGE": float(np.mean([i["rouge"] for i in items])),
        "Probability": float(np.mean([i["probability"] for i in items])),
    }


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
        if name not in self.memo:
            self.memo[name] = sharded_map(
                lambda qa: token_stats(
                    self.model, self.tokenizer, self.fmt, [q for q, _ in qa], [a for _, a in qa], batch_size
                ),
                list(zip(questions, answers, strict=False)),
            )
        return self.memo[name]


def attack_mia(cfg, inputs: AuditInputs, s: Subject, out: Path) -> tuple[dict, list[dict]]:
    f, h = inputs.forget, inputs.holdout
    hq, ha = [r["question"] for r in h], [r["answer"] for r in h]
    fs = s.token_stats("forget", f.questions, f.answers, cfg.eval_batch_size)
    hs = s.token_stats("holdout", hq, ha, cfg.eval_batch_size)
    f_scores, h_scores = mia.item_scores(fs, cfg.mia_k), mia.item_scores(hs, cfg.mia_k)
    if inputs.ref_model:
        ref, ref_tok = models.load_model(
            model_folder(inputs.ref_model), dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code
        )
        ref.to(s.model.device)
        if ref_tok.get_vocab() != s.tokenizer.get_vocab():
            raise DataError(f"--ref-model {inputs.ref_model}: its tokenizer differs from the audited model's")

        def ref_nlls(qa):
            return list(
                answer_nlls(
                    ref,
                    s.tokenizer,
                    s.fmt,
                    [q for q, _ in qa],
                    [a for _, a in qa],
                    cfg.eval_batch_size,
                    desc="reference NLLs",
                )
            )

        rf, rh = (
            sharded_map(ref_nlls, list(zip(f.questions, f.answers, strict=False))),
            sharded_map(ref_nlls, list(zip(hq, ha, strict=False))),
        )
        del ref
        f_scores["Reference"] = mia.reference_scores([x.avg_loss for x in fs], rf)
        h_scores["Reference"] = mia.reference_scores([x.avg_loss for x in hs], rh)

    def norms(qa):
        return [-x for x in grad_norms(s.model, s.tokenizer, s.fmt, [q for q, _ in qa], [a for _, a in qa])]

    f_scores["GradNorm"] = sharded_map(norms, list(zip(f.questions, f.answers, strict=False)))
    h_scores["GradNorm"] = sharded_map(norms, list(zip(hq, ha, strict=False)))
    aucs = {name: mia.auc(f_scores[name], h_scores[name]) for name in f_scores}
    items = [
        {"set": "forget", "question": q, **{k: v[i] for k, v in f_scores.items()}} for i, q in enumerate(f.questions)
    ] + [{"set": "holdout", "question": q, **{k: v[i] for k, v in h_scores.items()}} for i, q in enumerate(hq)]
    return {"auc": aucs, "forget": len(fs), "holdout": len(hs)}, items


def attack_memorization(cfg, inputs: AuditInputs, s: Subject, out: Path) -> tuple[dict, list[dict]]:
    f = inputs.forget
    fs = s.token_stats("forget", f.questions, f.answers, cfg.eval_batch_size)
    em = [mia.exact_memorization(x) for x in fs]
    es = [mia.extraction_strength(x) for x in fs]
    kept = [x for x in em if x is not None]
    summary = {"exact_memorization": float(np.mean(kept)) if kept else None, "extraction_strength": float(np.mean(es))}
    return summary, [
        {"question": q, "exact_memorization": a, "extraction_strength": b}
        for q, a, b in zip(f.questions, em, es, strict=False)
    ]


def _prompt_variants(cfg, inputs: AuditInputs, fmt, rows=None):
    f = inputs.forget
    return variants(
        fmt,
        f.rows if rows is None else rows,
        f.answer_key,
        inputs.retain.rows if inputs.retain else None,
        icl_examples=cfg.icl_examples,
        prefix_fraction=cfg.prefix_fraction,
        seed=cfg.seed,
    )


def _plain(cfg, inputs: AuditInputs, s: Subject, key: str, rows) -> list[dict]:
    """The plain questions of ``rows`` scored on the subject (memoised: prompts and quantization share it)."""
    if key not in s.memo:
        v, _ = _prompt_variants(cfg, inputs, s.fmt, rows)
        s.memo[key] = score_variant(
            s.model, s.tokenizer, v[0], s.fmt.add_special_tokens, cfg.eval_batch_size, cfg.gen_batch_size
        )
    return s.memo[key]


def attack_prompts(cfg, inputs: AuditInputs, s: Subject, out: Path) -> tuple[dict, list[dict]]:
    found, missing = _prompt_variants(cfg, inputs, s.fmt)
    summary, items = {}, []
    for v in found:
        scored = (
            _plain(cfg, inputs, s, "plain:forget", inputs.forget.rows)
            if v.name == "plain"
            else score_variant(
                s.model, s.tokenizer, v, s.fmt.add_special_tokens, cfg.eval_batch_size, cfg.gen_batch_size
            )
        )
        summary[v.name] = _means(scored)
        items += [{"variant": v.name, **i} for i in scored]
    if missing:
        summary["unavailable"] = missing
    return summary, items


def _sets_scores(cfg, inputs: AuditInputs, model, s: Subject) -> tuple[dict, list[dict]]:
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
    summary = {
        **info,
        "steps": cfg.relearn_steps,
        "lr": cfg.relearn_lr,
        "batch_size": cfg.relearn_batch_size,
        "before": _means(before),
        "after": _means(after),
    }
    return summary, [{"stage": "before", **i} for i in before] + [{"stage": "after", **i} for i in after]


RUNNERS = {
    "mia": attack_mia,
    "memorization": attack_memorization,
    "relearn": attack_relearn,
    "quantization": attack_quantization,
    "prompts": attack_prompts,
}
ORDER = ("mia", "memorization", "prompts", "quantization", "relearn")  # relearn last: it loads its own copy
