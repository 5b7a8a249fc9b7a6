"""The losses of docs/methods.md §2 as pure tensor functions.

No model, no config, no reduction over anything but the tensors given: a method in
:mod:`unlearn.methods` runs the model(s) and hands the logits or per-sequence NLLs here.

Conventions shared by every function:

* ``logits`` is ``(B, T, V)``; ``labels`` is ``(B, T)`` with ``-100`` (:data:`IGNORE_INDEX`) at
  positions that carry no loss (question tokens, padding). ``logits[:, t]`` predicts
  ``labels[:, t + 1]``, the usual causal-LM shift, so ``labels[:, 0]`` never counts.
* Any float dtype is accepted (bf16 included); the arithmetic is done in float32 and the result is
  float32, because a sum of a few hundred token NLLs or a log-sum-exp over 128k logits loses too
  many digits in bf16.
* ``β`` has no default here: each method term declares its own (``unlearn.methods``; the paper's is 0.1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from unlearn.encoding import IGNORE_INDEX

__all__ = [
    "IGNORE_INDEX",
    "sequence_nll",
    "token_counts",
    "mean_nll",
    "npo",
    "dpo",
    "ap",
    "max_entropy",
    "kl",
    "simnpo",
    "wga",
    "satimp",
    "undial",
    "ce_u",
    "activation_distance",
    "logit_margin_flattening",
]


def _check_logits_labels(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits (B, T, V) and labels (B, T), got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )


def _shifted_labels(labels: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` target of each logit position: ``labels[:, t + 1]``, and -100 at the last position.

    Shifting the labels instead of slicing ``logits[:, :-1]`` keeps the logits contiguous, so
    flattening them is a view and no (B, T, V) copy is made before the loss.
    """
    return F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``mask``; with an empty mask, a zero still connected to ``anchor``.

    The zero keeps ``backward()`` working (all-zero gradients) when a batch happens to have no
    position to train on, instead of a NaN that would stop the run.
    """
    if not mask.any():
        return anchor.float().sum() * 0.0
    # Index rather than multiply by the mask: an inf at an ignored position must not become NaN.
    return values[mask].mean()


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token negative log-likelihood of each sequence.

    ``nll_b = Σ_{t : labels[b, t+1] ≠ -100} −log softmax(logits[b, t])[labels[b, t+1]]``

    Args:
        logits: ``(B, T, V)``, any float dtype.
        labels: ``(B, T)`` int, -100 where no loss is taken.

    Returns:
        ``(B,)`` float32. A sequence with no label token gets 0.
    """
    _check_logits_labels(logits, labels)
    b, t, v = logits.shape
    # cross_entropy fuses log_softmax and the gather: the only (B·T, V) float32 tensor it keeps is
    # its log-probabilities (plus the float32 copy of the logits when they arrive in bf16).
    per_token = F.cross_entropy(
        logits.reshape(b * t, v).float(),
        _shifted_labels(labels).reshape(b * t),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )
    return per_token.view(b, t).sum(dim=1)


def token_counts(labels: torch.Tensor) -> torch.Tensor:
    """``(B,)`` number of label tokens of each sequence after the shift (``labels[:, 1:] ≠ -100``)."""
    return (labels[:, 1:] != IGNORE_INDEX).sum(dim=1)


def mean_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token NLL over all label tokens of the batch: ``Σ_b nll_b / Σ_b n_b``.

    This is what ``model(input_ids, labels=labels).loss`` returns in transformers: long answers
    weigh more than short ones (a token mean, not a mean of per-sequence means). It is the GA,
    GD and IDK loss of docs/methods.md §2.

    Args:
        logits: ``(B, T, V)``; labels: ``(B, T)``.

    Returns:
        0-dim float32. A batch without any label token gives 0 (transformers gives NaN), so an
        empty batch cannot poison training.
    """
    total = sequence_nll(logits, labels).sum()
    return total / token_counts(labels).sum().clamp(min=1)


def npo(nll: torch.Tensor, ref_nll: torch.Tensor, beta: float) -> torch.Tensor:
    """Negative Preference Optimization forget loss.

    ``L = −(2/β) · mean_b log σ(β · (nll_θ,b − nll_ref,b))``

    Minimising it raises ``nll_θ`` on the forget set, like gradient ascent, but the weight
    ``σ(−β(nll_θ − nll_ref))`` of each sequence fades once it is already less likely than under the
    reference, which bounds the loss below by 0 instead of letting it run to −∞.

    Args:
        nll: ``(B,)`` summed answer NLL under the model being unlearned (:func:`sequence_nll`).
        ref_nll: ``(B,)`` the same under the frozen reference model (no gradient needed).
        beta: inverse temperature β.

    Returns:
        0-dim float32.
    """
    margin = nll.float() - ref_nll.float()
    return -(2.0 / beta) * F.logsigmoid(beta * margin).mean()


def dpo(
    nll_chosen: torch.Tensor,
    nll_rejected: torch.Tensor,
    ref_nll_chosen: torch.Tensor,
    ref_nll_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Direct Preference Optimization forget loss: prefer the refusal over the true answer.

    ``L = −(2/β) · mean_b log σ(β · ((nll_θ(rej) − nll_θ(cho)) − (nll_ref(rej) − nll_ref(cho))))``

    with *chosen* = the forget question with an "I don't know" answer and *rejected* = the forget
    question with its true answer. Written with NLLs, ``nll(rej) − nll(cho)`` is the usual DPO
    log-ratio ``log p(cho) − log p(rej)``. When both chosen terms are 0 it reduces to :func:`npo`.

    Args:
        nll_chosen, nll_rejected: ``(B,)`` summed answer NLLs under the model being unlearned.
        ref_nll_chosen, ref_nll_rejected: ``(B,)`` the same under the frozen reference model.
        beta: inverse temperature β.

    Returns:
        0-dim float32.
    """
    policy = nll_rejected.float() - nll_chosen.float()
    reference = ref_nll_rejected.float() - ref_nll_chosen.float()
    return -(2.0 / beta) * F.logsigmoid(beta * (policy - reference)).mean()


def ap(nll_answer: torch.Tensor, nll_idk: torch.Tensor, beta: float) -> torch.Tensor:
    """Answer Preservation regulariser (the paper's IDK+AP): prefer the true retain answer over a refusal.

    ``L = −(1/β) · mean_b log σ(β · (nll_θ(retain + IDK) − nll_θ(retain)))``

    There is no reference model: the loss pushes the refusal's NLL above the true answer's on
    retain questions, which stops the IDK forget term from teaching the model to refuse everything.

    Args:
        nll_answer: ``(B,)`` summed NLL of the true retain answers (:func:`sequence_nll`).
        nll_idk: ``(B,)`` summed NLL of a refusal to the same retain questions.
        beta: inverse temperature β.

    Returns:
        0-dim float32.
    """
    margin = nll_idk.float() - nll_answer.float()
    return -(1.0 / beta) * F.logsigmoid(beta * margin).mean()


def max_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Maximum-entropy (ME) forget loss: KL from the uniform distribution, averaged over label positions.

    ``L = mean_{(b,t) : labels[b, t+1] ≠ -100} KL(U ‖ p_θ(·|x_≤t))``, with
    ``KL(U ‖ p) = Σ_v (1/V)(log(1/V) − log p_v) = −log V − mean_v log p_v``.

    The uniform distribution is never built: ``mean_v log p_v = mean_v z_v − logsumexp_v z``
    (``z`` the logits) is ``log_softmax(z).mean(-1)`` without keeping a (B, T, V) log-probability
    tensor for the backward pass, whose gradient ``softmax(z) − 1/V`` is written in place into
    the one (B, T, V) buffer that becomes the logits' gradient (:class:`_UniformKL`): the peak
    memory is below a cross-entropy's over the same logits (``perf/memory.py``). The
    official code takes ``log(p + 1e-12)``; we use the exact log-probabilities, which differ
    only where some ``p_v`` is below ~1e-12.

    Minimising it drives each next-token distribution towards uniform: it is ≥ 0, and 0 exactly
    when ``p`` is uniform.

    Args:
        logits: ``(B, T, V)``, any float dtype.
        labels: ``(B, T)``; only which positions are -100 matters, not the token ids.

    Returns:
        0-dim float32; 0 (with a zero gradient) when there is no label position.
    """
    _check_logits_labels(logits, labels)
    kl_uniform = _UniformKL.apply(logits)  # (B, T)
    return _masked_mean(kl_uniform, _shifted_labels(labels) != IGNORE_INDEX, logits)


class _UniformKL(torch.autograd.Function):
    """``KL(U ‖ softmax(z)) = logsumexp_v z − mean_v z_v − log V`` per position, (B, T).

    Autograd's own graph of that expression keeps three (B, T, V) temporaries alive in the
    backward pass (``z − lse``, its ``exp`` and the product with the incoming gradient) plus the
    mean's expanded gradient; here the gradient ``g · (softmax(z) − 1/V)`` is built in place in a
    single buffer. Only the logits (no copy) and the (B, T) log-sum-exp are saved.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor) -> torch.Tensor:
        z = logits.to(_compute_dtype(logits))
        lse = torch.logsumexp(z, dim=-1)
        ctx.save_for_backward(logits, lse)
        return lse - z.mean(dim=-1) - math.log(z.shape[-1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        logits, lse = ctx.saved_tensors
        g = logits.to(lse.dtype, copy=True)
        g.sub_(lse.unsqueeze(-1)).exp_().sub_(1.0 / logits.shape[-1]).mul_(grad.unsqueeze(-1))
        return g.to(logits.dtype)


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    """float32, or float64 for float64 inputs (gradient checks)."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def kl(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL regulariser: ``KL(p_ref ‖ p_θ)`` of the next-token distributions, averaged over ``mask``.

    ``L = mean_{(b,t) : mask[b,t]} Σ_v p_ref,v (log p_ref,v − log p_θ,v)``

    The official code averages over all B·T positions, padding included, so its value shrinks
    as padding grows; we average over the positions where ``mask`` is true (typically the
    attention mask), so the value does not depend on how the batch was padded.

    Args:
        logits: ``(B, T, V)`` of the model being trained.
        ref_logits: ``(B, T, V)`` of the frozen reference model on the same inputs.
        mask: ``(B, T)`` bool or 0/1: positions that count.

    Returns:
        0-dim float32; 0 (with a zero gradient) when the mask is empty.
    """
    if logits.shape != ref_logits.shape or mask.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits and ref_logits (B, T, V) and mask (B, T), got {tuple(logits.shape)}, "
            f"{tuple(ref_logits.shape)} and {tuple(mask.shape)}"
        )
    keep = mask.bool()
    if not keep.any():
        return logits.float().sum() * 0.0
    # Select the counted positions first: padding rows never enter the (N, V) log-softmaxes.
    log_p = F.log_softmax(logits[keep].float(), dim=-1)
    log_ref = F.log_softmax(ref_logits[keep].float(), dim=-1)
    per_position = F.kl_div(log_p, log_ref, reduction="none", log_target=True).sum(dim=-1)
    return per_position.mean()


# --------------------------------------------------------------------------- methods since the paper


def _token_ce(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position next-token cross-entropy ``(B, T)`` (0 where ignored) and the mask of counted positions."""
    _check_logits_labels(logits, labels)
    b, t, v = logits.shape
    target = _shifted_labels(labels)
    ce = F.cross_entropy(
        logits.reshape(b * t, v).float(), target.reshape(b * t), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(b, t)
    return ce, target != IGNORE_INDEX


def simnpo(nll: torch.Tensor, n_tokens: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """SimNPO forget loss (Fan et al. 2024, arXiv 2410.07163): NPO without a reference, on the
    length-normalised NLL, with a margin γ.

    ``L = −(2/β) · mean_b log σ(β · (nll_θ,b / |y_b| − γ))``

    Args:
        nll: ``(B,)`` summed answer NLL (:func:`sequence_nll`); n_tokens: ``(B,)`` its token counts.
        beta, gamma: inverse temperature and margin (the paper's TOFU setting: 2.5 and 0).
    """
    mean_nll = nll.float() / n_tokens.float().clamp(min=1)
    return -(2.0 / beta) * F.logsigmoid(beta * (mean_nll - gamma)).mean()


def wga(logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """Weighted gradient ascent (Wang et al. 2025, arXiv 2502.19301): each answer token's ascent
    weighted by its probability, ``w_t = p_θ(y_t)^β`` (no gradient through the weight).

    ``L = −mean_t w_t · CE_t`` over label positions; minimising it lowers the likelihood of the
    tokens the model still predicts, and leaves the ones already forgotten (p → 0) alone.
    """
    ce, mask = _token_ce(logits, labels)
    weight = torch.exp(-ce).detach() ** beta
    return _masked_mean(-(weight * ce), mask, logits)


def satimp(logits: torch.Tensor, labels: torch.Tensor, beta1: float, beta2: float) -> torch.Tensor:
    """SatImp (Yang et al. 2025, arXiv 2505.11953): gradient ascent with token weights
    ``w_t = p_t^β1 · (1 − p_t)^β2`` (saturation × importance; no gradient through the weight).

    ``L = −mean_t w_t · CE_t`` over label positions.
    """
    ce, mask = _token_ce(logits, labels)
    p = torch.exp(-ce).detach()
    weight = p**beta1 * (1 - p) ** beta2
    return _masked_mean(-(weight * ce), mask, logits)


def undial(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """UNDIAL (Dong et al. 2024, arXiv 2402.10052): self-distillation towards the frozen model's
    distribution with the true next token's logit lowered by β.

    ``L = mean_t CE(softmax(z_ref,t − β·onehot(y_t)), p_θ,t)`` over label positions.
    """
    _check_logits_labels(logits, labels)
    target = _shifted_labels(labels)
    mask = target != IGNORE_INDEX
    if not mask.any():
        return logits.float().sum() * 0.0
    teacher = ref_logits[mask].float().detach()
    teacher = teacher.scatter_add(-1, target[mask].unsqueeze(-1), torch.full_like(teacher[:, :1], -beta))
    return F.cross_entropy(logits[mask].float(), F.softmax(teacher, dim=-1))


def ce_u(logits: torch.Tensor, labels: torch.Tensor, ignore_first: int = 1) -> torch.Tensor:
    """CE-U, cross-entropy unlearning (Yang et al. 2025, arXiv 2503.01224): cross-entropy towards the
    model's own (detached) distribution with the true token removed (its logit set to −∞).

    ``L = mean_t CE(softmax(z_t with z_t[y_t] = −∞), p_θ,t)`` over label positions but the first
    ``ignore_first`` answer tokens of each sequence (the paper's footnote).
    """
    _check_logits_labels(logits, labels)
    answer = labels != IGNORE_INDEX
    labels = labels.masked_fill(answer & (answer.cumsum(dim=1) <= ignore_first), IGNORE_INDEX)
    target = _shifted_labels(labels)
    mask = target != IGNORE_INDEX
    if not mask.any():
        return logits.float().sum() * 0.0
    counted = logits[mask].float()
    removed = counted.detach().scatter(-1, target[mask].unsqueeze(-1), float("-inf"))
    return F.cross_entropy(counted, F.softmax(removed, dim=-1))


def activation_distance(hidden: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """RMU's distance (Li et al. 2024, arXiv 2403.03218): the squared error of the activations,
    averaged over the hidden size and then over each sequence's labelled tokens, then over the batch.

    ``L = mean_b (1/n_b) Σ_{t labelled} mean_d (h_{b,t,d} − target_{b,t,d})²``

    ``target`` is a control vector ``(H,)`` (forget) or the frozen model's activations
    ``(B, T, H)`` (retain); ``labels`` ``(B, T)`` marks the counted positions (not -100).
    """
    mask = (labels != IGNORE_INDEX).float()
    per_token = ((hidden.float() - target.float()) ** 2).mean(dim=-1)
    return ((per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)).mean()


def logit_margin_flattening(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """PDU's forget loss (Entesari et al. 2025): ``(max_v z_t − mean_v z_t)²`` averaged over the
    positions whose own label is scored (``labels[:, t] != -100``, unshifted, as open-unlearning
    masks it): zero when every logit of a position is equal, i.e. the next-token distribution is
    uniform."""
    _check_logits_labels(logits, labels)
    z = logits.to(_compute_dtype(logits))
    margin = (z.max(dim=-1).values - z.mean(dim=-1)) ** 2
    return _masked_mean(margin, labels != IGNORE_INDEX, logits)
