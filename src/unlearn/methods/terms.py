"""The forget terms and regularisers, registered by name: each is its math (:mod:`unlearn.losses`)
over a :class:`~unlearn.methods.batch.BatchView`, its batch parts, what it needs from the reference,
its arguments with their defaults, its default weight and its source. :mod:`unlearn.methods` composes
them into an objective."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from unlearn import chunked, losses
from unlearn.methods.batch import BatchView

PAPER = "https://arxiv.org/abs/2410.08109"


@dataclass(frozen=True)
class Term:
    """One loss term: ``fn(view, **args)`` → 0-dim tensor."""

    name: str
    fn: Callable[..., torch.Tensor]
    parts: tuple[str, ...]
    ref: str | None = None  # None | "nll" | "logits"
    ref_parts: tuple[str, ...] = ()
    args: dict[str, Any] = field(default_factory=dict)  # hyper-parameter -> default
    coeff: float = 1.0  # default weight of the term in the objective
    scenario_coeff: dict[str, float] = field(default_factory=dict)  # scenario -> default weight there
    mask_question: bool = True  # forget terms: question tokens carry no loss in forget sequences
    doc: str = ""
    label: str = ""  # name of this term in logs; default "<name> forget term" / "<name> regulariser"
    source: str = ""  # the paper that defines it
    trainable: Callable[..., list[str]] | None = None  # args -> regexes of the only parameters that train
    task_vector: bool = False  # the trained weights are then negated: θ − α (θ_trained − θ)
    own_refusals: bool = False  # fine-tunes on the forget rows' own answers, which must be refusals (RT)
    in_context: bool = False  # trains nothing: an instruction before every evaluation prompt (ICU)
    own_retain: bool = False  # its retain term is part of it: no regulariser on top (PDU)

    @property
    def needs(self) -> list[str]:
        """What the term needs beyond the model: reference NLLs, a frozen model, refusals, a retain set."""
        out = {"nll": ["reference NLLs (cached)"], "logits": ["a frozen reference model"]}.get(self.ref, [])
        if self.trainable is not None:
            out.append("hidden states of one layer; trains only some parameters")
        if any(p.endswith("_idk") for p in self.parts):
            out.append("refusals")
        if self.own_refusals:
            out.append("forget rows answered with refusals (RWKU's refusal set)")
        if "forget_alt" in self.parts:
            out.append("an alternate answer per forget question (field 'alternate')")
        if any(p.startswith("retain") or p == "forget_mismatch" for p in self.parts):
            out.append("a retain set")
        return out


BETA = {"beta": 0.1}  # inverse temperature of the preference losses (docs/methods.md)


def _me(v: BatchView, pad_to: int) -> torch.Tensor:
    if not pad_to and v.chunk:
        return v.rows_mean("forget", chunked.uniform_kl_rows)
    if not pad_to:  # real tokens only: question, answer, one EOS
        return losses.max_entropy(v.logits("forget"), v.labels("forget"))
    logits, p = v.padded_logits("forget", pad_to)
    return losses.max_entropy(logits, p["labels"])


RMU_CONTROL = "rmu_control"  # the control vector's key among the reference statistics (saved in checkpoints)


def _rmu_vector(v: BatchView, size: int, steering_coeff: float, like: torch.Tensor) -> torch.Tensor:
    """RMU's control vector: uniform in [0, 1)^H, unit norm, times the steering coefficient. Drawn
    from the run's seed at the first step and kept with the reference statistics, which every
    checkpoint saves: a resumed run uses the saved vector, not a new draw."""
    ref = v.reference
    stats = getattr(ref, "stats", None) or {}
    if RMU_CONTROL not in stats:
        g = torch.Generator().manual_seed(v.seed)
        u = torch.rand(size, generator=g)
        stats = {**stats, RMU_CONTROL: u / u.norm() * steering_coeff}
        if ref is not None:
            ref.stats = stats
    return stats[RMU_CONTROL].to(device=like.device, dtype=torch.float32)


def _rmu(v: BatchView, layer: int, steering_coeff: float, alpha: float, layers: str) -> torch.Tensor:
    """RMU's whole objective: forget activations steered to the control vector, plus alpha times the
    retain activations' distance to the frozen model's (both at ``layer``)."""
    h = v.hidden("forget", layer)
    forget = losses.activation_distance(h, _rmu_vector(v, h.shape[-1], steering_coeff, h), v.labels("forget"))
    r = v.hidden("retain", layer)
    retain = losses.activation_distance(r, v.hidden("retain", layer, frozen=True), v.labels("retain"))
    v.note("RMU forget distance", forget)
    v.note("RMU retain distance", retain)  # unweighted: the objective adds alpha times it
    return forget + alpha * retain


def _rmu_trainable(layer: int, steering_coeff: float, alpha: float, layers: str) -> list[str]:
    ids = "|".join(x.strip() for x in str(layers).split(",") if x.strip())
    return [rf"(^|\.)(layers|h)\.({ids})\.mlp\.down_proj\."]


def _kl(v: BatchView, pad_to: int) -> torch.Tensor:
    if not pad_to and v.chunk:
        return v.rows_mean("retain", chunked.kl_rows, select="attention", ref=True)
    if not pad_to:  # real tokens only
        return losses.kl(v.logits("retain"), v.ref_logits("retain"), v.batch["retain"]["attention_mask"].bool())
    logits, p = v.padded_logits("retain", pad_to)
    return losses.kl(logits, v._ref_logits(p), torch.ones_like(p["attention_mask"], dtype=torch.bool))


def _wga(v: BatchView, beta: float) -> torch.Tensor:
    if v.chunk:
        return v.rows_mean("forget", chunked.wga_rows, beta=beta)
    return losses.wga(v.logits("forget"), v.labels("forget"), beta)


def _satimp(v: BatchView, beta1: float, beta2: float) -> torch.Tensor:
    if v.chunk:
        return v.rows_mean("forget", chunked.satimp_rows, beta1=beta1, beta2=beta2)
    return losses.satimp(v.logits("forget"), v.labels("forget"), beta1, beta2)


def _undial(v: BatchView, beta: float) -> torch.Tensor:
    if v.chunk:
        return v.rows_mean("forget", chunked.undial_rows, ref=True, beta=beta)
    return losses.undial(v.logits("forget"), v.ref_logits("forget"), v.labels("forget"), beta)


def _ce_u(v: BatchView, ignore_first: int) -> torch.Tensor:
    if v.chunk:
        return v.rows_mean("forget", chunked.ce_u_rows, labels=chunked.ce_u_labels(v.labels("forget"), ignore_first))
    return losses.ce_u(v.logits("forget"), v.labels("forget"), ignore_first)


def _no_training(v: BatchView) -> torch.Tensor:
    raise RuntimeError("ICU has no loss: it is evaluated, not trained")


PDU_DUAL = "pdu_dual"  # PDU's dual variable among the reference statistics (saved in checkpoints)


def _pdu(
    v: BatchView, retain_loss_eps: float, dual_step_size: float, dual_warmup_epochs: int, gamma: float, alpha: float
) -> torch.Tensor:
    """PDU's whole objective: ``gamma · flattening(forget) + λ · (NLL(retain) − eps)``, λ the dual
    variable (``alpha`` at the start). Once ``dual_warmup_epochs`` epochs have ended, every batch then
    moves it by ``λ ← max(0, λ + dual_step_size · (NLL(retain) − eps))`` after its loss is taken (the
    retain NLL averaged over the processes first, so they share one λ). λ lives with the reference
    statistics, which every checkpoint saves: a resumed run goes on with the saved λ."""
    forget = losses.logit_margin_flattening(v.logits("forget"), v.labels("forget"))
    retain = v.mean_nll("retain") - retain_loss_eps
    ref = v.reference
    stats = getattr(ref, "stats", None) or {}
    dual = stats.get(PDU_DUAL, torch.tensor([float(alpha)], dtype=torch.float64))
    loss = gamma * forget + float(dual[0]) * retain
    v.note("PDU forget flattening", forget)
    v.note("PDU retain NLL", retain + retain_loss_eps)
    v.note("PDU dual", dual[0])
    if v.epoch >= dual_warmup_epochs:
        gap = retain.detach().double().reshape(1)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(gap)
            gap = gap / torch.distributed.get_world_size()
        dual = torch.clamp(dual + dual_step_size * gap.cpu(), min=0.0)
    if ref is not None:
        ref.stats = {**stats, PDU_DUAL: dual}
    return loss


def _prefer(chosen: str):
    """DPO's forget term with the ``chosen`` part (a refusal, an alternate answer) preferred over the true answer."""
    return lambda v, beta: losses.dpo(v.nll(chosen), v.nll("forget"), v.ref_nll(chosen), v.ref_nll("forget"), beta)


FORGET_TERMS: dict[str, Term] = {
    t.name: t
    for t in [
        Term(
            "GA",
            lambda v: -v.mean_nll("forget"),
            ("forget",),
            doc="gradient ascent on the forget answers",
            source="Jang et al. 2023, arXiv 2210.01504",
        ),
        Term(
            "NPO",
            lambda v, beta: losses.npo(v.nll("forget"), v.ref_nll("forget"), beta),
            ("forget",),
            ref="nll",
            ref_parts=("forget",),
            args=BETA,
            doc="negative preference optimisation",
            source="Zhang et al. 2024, arXiv 2404.05868",
        ),
        Term(
            "DPO",
            _prefer("forget_idk"),
            ("forget", "forget_idk"),
            ref="nll",
            ref_parts=("forget", "forget_idk"),
            args=BETA,
            doc="prefer a refusal over the true answer",
            source="Rafailov et al. 2023, arXiv 2305.18290",
        ),
        Term(
            "AltPO",
            _prefer("forget_alt"),
            ("forget", "forget_alt"),
            ref="nll",
            ref_parts=("forget", "forget_alt"),
            args=BETA,
            doc="prefer a plausible alternate answer over the true one (DPO)",
            source="Mekala et al. 2024, arXiv 2409.13474",
        ),
        Term(
            "IDK",
            lambda v: v.mean_nll("forget_idk"),
            ("forget_idk",),
            doc="fine-tune the forget questions on refusals",
            source="Maini et al. 2024, arXiv 2401.06121",
        ),
        Term(
            "RT",
            lambda v: v.mean_nll("forget"),
            ("forget",),
            own_refusals=True,
            doc="rejection tuning: fine-tune on questions about the target answered with refusals (the forget "
            "rows' own answers: RWKU's refusal set under --benchmark rwku)",
            source="Jin et al. 2024, arXiv 2406.10890 (RWKU)",
        ),
        Term(
            "ICU",
            _no_training,
            (),
            in_context=True,
            doc="in-context unlearning: no training; RWKU's instruction to forget the target goes before every "
            "prompt (unlearn eval --benchmark rwku --method ICU)",
            source="Pawelczyk et al. 2024, arXiv 2310.07579; RWKU's prompt (Jin et al. 2024)",
        ),
        Term(
            "ME",
            lambda v, pad_to: _me(v, pad_to),
            ("forget",),
            args={"pad_to": 0},
            coeff=0.1,
            scenario_coeff={"real_world": 0.5, "continual": 1.0},
            mask_question=False,
            doc="maximise entropy: push next-token distributions towards uniform, question tokens included; "
            "pad_to=500 averages over every position of sequences padded to 500, as officially",
            source="Yuan et al. 2025, arXiv 2410.08109",
        ),
        Term(
            "LLMU",
            lambda v: -v.mean_nll("forget"),
            ("forget",),
            doc="GA; its regulariser (mismatched answers' NLL + KL) is part of the method",
            source="Yao et al. 2023, arXiv 2310.10683",
        ),
        Term(
            "SimNPO",
            lambda v, beta, gamma: losses.simnpo(v.nll("forget"), losses.token_counts(v.labels("forget")), beta, gamma),
            ("forget",),
            args={"beta": 2.5, "gamma": 0.0},
            coeff=0.1375,
            doc="NPO without a reference, on the length-normalised NLL with a margin gamma",
            source="Fan et al. 2024, arXiv 2410.07163",
        ),
        Term(
            "WGA",
            _wga,
            ("forget",),
            args={"beta": 1.0},
            doc="gradient ascent with each token weighted by its probability to the power beta",
            source="Wang et al. 2025, arXiv 2502.19301",
        ),
        Term(
            "SatImp",
            _satimp,
            ("forget",),
            args={"beta1": 5.0, "beta2": 1.0},
            coeff=0.1,
            doc="gradient ascent with token weights p^beta1 (1 - p)^beta2 (saturation x importance)",
            source="Yang et al. 2025, arXiv 2505.11953",
        ),
        Term(
            "UNDIAL",
            _undial,
            ("forget",),
            ref="logits",
            args={"beta": 10.0},
            doc="self-distillation towards the frozen model with the true token's logit lowered by beta",
            source="Dong et al. 2024, arXiv 2402.10052",
        ),
        Term(
            "RMU",
            _rmu,
            ("forget", "retain"),
            ref="logits",
            trainable=_rmu_trainable,
            args={"layer": 7, "steering_coeff": 6.5, "alpha": 1200.0, "layers": "5,6,7"},
            doc="representation misdirection: steer layer `layer`'s activations on forget text towards a fixed "
            "random vector, keep the retain activations (weight `alpha`); only the MLP down-projections of "
            "`layers` train",
            source="Li et al. 2024, arXiv 2403.03218",
        ),
        Term(
            "PDU",
            _pdu,
            ("forget", "retain"),
            own_retain=True,
            args={
                "retain_loss_eps": 0.3,
                "dual_step_size": 5.0,
                "dual_warmup_epochs": 5,
                "gamma": 1.0,
                "alpha": 100.0,
            },
            doc="primal-dual unlearning: flatten the forget logits (max minus mean, squared) under the constraint "
            "retain NLL <= retain_loss_eps, its weight a dual variable (start alpha) raised by dual_step_size x "
            "the excess after dual_warmup_epochs epochs",
            source="Entesari et al. 2025, arXiv 2506.05314 (open-unlearning's PDU, its TOFU settings)",
        ),
        Term(
            "TV",
            lambda v, alpha: v.mean_nll("forget"),
            ("forget",),
            args={"alpha": 1.0},
            task_vector=True,
            doc="task-vector negation: fine-tune on the forget set (this loss), then move the weights the other "
            "way: θ − alpha (θ_fine-tuned − θ)",
            source="Ilharco et al. 2023, arXiv 2212.04089 (a MUSE baseline)",
        ),
        Term(
            "CE-U",
            _ce_u,
            ("forget",),
            args={"ignore_first": 1},
            doc="cross-entropy towards the model's own distribution with the true token removed",
            source="Yang et al. 2025, arXiv 2503.01224",
        ),
    ]
}

REGULARIZERS: dict[str, Term] = {
    t.name: t
    for t in [
        Term(
            "GD",
            lambda v: v.mean_nll("retain"),
            ("retain",),
            doc="gradient descent on the retain set",
            source="Liu et al. 2022, arXiv 2203.12817",
        ),
        Term(
            "KL",
            lambda v, pad_to: _kl(v, pad_to),
            ("retain",),
            ref="logits",
            args={"pad_to": 0},
            doc="KL(p_ref ‖ p) on retain sequences; pad_to=500 averages over every position of sequences "
            "padded to 500, as officially",
            source="Maini et al. 2024, arXiv 2401.06121",
        ),
        Term(
            "AP",
            lambda v, beta: losses.ap(v.nll("retain"), v.nll("retain_idk"), beta),
            ("retain", "retain_idk"),
            args=BETA,
            doc="answer preservation: prefer the retain answer over a refusal",
            source="Yuan et al. 2025, arXiv 2410.08109",
        ),
    ]
}

# Methods whose regulariser is part of their definition (not offered as FORGET+REG): LLMU's is the
# NLL of the forget question with its retain partner's answer plus KL, weighted together by reg_coeff.
LLMU_REG = Term(
    "LLMU",
    lambda v, pad_to: v.mean_nll("forget_mismatch") + _kl(v, pad_to),
    ("forget_mismatch", "retain"),
    ref="logits",
    args={"pad_to": 0},
    doc="mismatched answers' NLL + KL(p_ref ‖ p) on retain sequences (`pad_to`: as KL's)",
)
DEFAULT_REG = {"LLMU": LLMU_REG}
