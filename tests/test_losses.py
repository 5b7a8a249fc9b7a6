"""Hand-derived checks of unlearn.losses (docs/methods.md §2).

The expected numbers are worked out in the comments from distributions chosen to have simple
probabilities: with V = 2, logits ``[0, 0]`` give ``p = [1/2, 1/2]`` and logits ``[0, log 3]`` give
``p = [1/4, 3/4]``. Gradients are checked by sign (what minimising the loss does to the model) and,
where the derivative is short, by value.
"""

import math

import pytest
import torch
from torch.testing import assert_close

from unlearn.losses import (
    IGNORE_INDEX,
    ap,
    dpo,
    kl,
    max_entropy,
    mean_nll,
    npo,
    sequence_nll,
    token_counts,
)

LOG2, LOG3 = math.log(2.0), math.log(3.0)
IGNORE = IGNORE_INDEX
HALF = [0.0, 0.0]  # V = 2 logits with p = [1/2, 1/2]
QUARTER = [0.0, LOG3]  # V = 2 logits with p = [1/4, 3/4]


def scalar(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ---------------------------------------------------------------------------------------------
# sequence_nll, token_counts, mean_nll


def shift_batch():
    """B = 2, T = 3, V = 2.

    Position 0 has p = [1/2, 1/2], position 1 has p = [1/4, 3/4], position 2 (the last) has a
    distribution far from both, so using it (a missing shift) would change every number.
    """
    logits = torch.tensor([[HALF, QUARTER, [5.0, -5.0]]] * 2)
    labels = torch.tensor(
        [
            # labels[0] is never predicted, even when it is not -100.
            # position 0 -> token 1: -log(1/2) = log 2; position 1 -> token 0: -log(1/4) = 2 log 2.
            [1, 1, 0],
            # position 0 -> -100 (ignored); position 1 -> token 1: -log(3/4) = log 4 - log 3.
            [0, IGNORE_INDEX, 1],
        ]
    )
    return logits, labels


def test_sequence_nll_shifts_by_one_and_ignores_minus_100():
    logits, labels = shift_batch()
    expected = torch.tensor([LOG2 + 2 * LOG2, 2 * LOG2 - LOG3])
    assert_close(sequence_nll(logits, labels), expected)


def test_sequence_nll_without_label_tokens_is_zero():
    logits, _ = shift_batch()
    labels = torch.tensor([[1, IGNORE_INDEX, IGNORE_INDEX], [IGNORE_INDEX] * 3])
    assert_close(sequence_nll(logits, labels), torch.zeros(2))


def test_sequence_nll_matches_a_position_by_position_sum():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11)
    labels = torch.randint(0, 11, (3, 7))
    labels[0, :4] = IGNORE_INDEX
    labels[2, 5:] = IGNORE_INDEX
    log_p = torch.log_softmax(logits, dim=-1)
    expected = torch.zeros(3)
    for b in range(3):
        for t in range(6):
            if labels[b, t + 1] != IGNORE_INDEX:
                expected[b] -= log_p[b, t, labels[b, t + 1]]
    assert_close(sequence_nll(logits, labels), expected)


def test_sequence_nll_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="labels"):
        sequence_nll(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))


def test_token_counts_are_after_the_shift():
    _, labels = shift_batch()
    # Sequence 0: labels[1:] = [1, 0] -> 2 tokens (labels[0] = 1 does not count).
    # Sequence 1: labels[1:] = [-100, 1] -> 1 token.
    assert token_counts(labels).tolist() == [2, 1]


def test_mean_nll_is_a_token_mean_over_the_batch():
    logits, labels = shift_batch()
    # (3 log 2 + (2 log 2 - log 3)) / (2 + 1) tokens, not the mean of the per-sequence means.
    expected = (3 * LOG2 + 2 * LOG2 - LOG3) / 3
    assert_close(mean_nll(logits, labels), scalar(expected))


def test_mean_nll_of_an_empty_batch_is_zero_and_differentiable():
    logits = torch.zeros(1, 3, 2, requires_grad=True)
    loss = mean_nll(logits, torch.full((1, 3), IGNORE_INDEX))
    loss.backward()
    assert loss.item() == 0.0
    assert_close(logits.grad, torch.zeros_like(logits))


def test_mean_nll_equals_transformers_loss():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=50,
    )
    model = LlamaForCausalLM(config).eval()
    input_ids = torch.randint(0, 50, (3, 9))
    labels = input_ids.clone()
    labels[:, :3] = IGNORE_INDEX  # the question
    labels[1, 6:] = IGNORE_INDEX  # padding of a shorter sequence
    with torch.no_grad():
        out = model(input_ids, labels=labels)
    assert_close(mean_nll(out.logits, labels), out.loss)


# ---------------------------------------------------------------------------------------------
# npo, dpo, ap


def test_npo_hand_value():
    # nll = 3, ref = 1, β = 0.1: -(2/0.1) log σ(0.1 · 2) = -20 log σ(0.2).
    loss = npo(torch.tensor([3.0]), torch.tensor([1.0]), beta=0.1)
    assert_close(loss, scalar(-20 * log_sigmoid(0.2)))


def test_npo_averages_over_the_batch():
    # Margins 2 and 0: -(20) · (log σ(0.2) + log σ(0)) / 2, with log σ(0) = -log 2.
    loss = npo(torch.tensor([3.0, 1.0]), torch.tensor([1.0, 1.0]), 0.1)
    assert_close(loss, scalar(-10 * (log_sigmoid(0.2) - LOG2)))


def test_npo_gradient_raises_the_forget_nll():
    nll = torch.tensor([3.0], requires_grad=True)
    ref = torch.tensor([1.0], requires_grad=True)
    npo(nll, ref, beta=0.1).backward()
    # dL/dnll = -(2/β) · β · σ(-β · 2) = -2 σ(-0.2): negative, so gradient descent raises nll,
    # by at most 2, the gradient-ascent weight, fading as nll grows past ref.
    assert_close(nll.grad, torch.tensor([-2 * sigmoid(-0.2)]))
    assert nll.grad.item() < 0 < ref.grad.item()


def test_dpo_hand_value():
    # policy: nll(rej) - nll(cho) = 5 - 2 = 3; reference: 3 - 3 = 0; margin 3.
    # -(2/0.1) log σ(0.1 · 3) = -20 log σ(0.3).
    loss = dpo(
        nll_chosen=torch.tensor([2.0]),
        nll_rejected=torch.tensor([5.0]),
        ref_nll_chosen=torch.tensor([3.0]),
        ref_nll_rejected=torch.tensor([3.0]),
        beta=0.1,
    )
    assert_close(loss, scalar(-20 * log_sigmoid(0.3)))


def test_dpo_with_zero_chosen_terms_is_npo():
    # With nll(cho) = ref(cho) = 0: -(2/β) mean log σ(β (nll(rej) - ref(rej))), NPO's formula.
    rejected, ref_rejected = torch.tensor([3.0, 7.0]), torch.tensor([1.0, 8.0])
    zeros = torch.zeros(2)
    expected = -20 * (log_sigmoid(0.1 * 2) + log_sigmoid(0.1 * -1)) / 2
    assert_close(dpo(zeros, rejected, zeros, ref_rejected, 0.1), scalar(expected))
    assert_close(dpo(zeros, rejected, zeros, ref_rejected, 0.1), npo(rejected, ref_rejected, 0.1))


def test_dpo_gradient_prefers_the_refusal():
    chosen = torch.tensor([2.0], requires_grad=True)
    rejected = torch.tensor([5.0], requires_grad=True)
    dpo(chosen, rejected, torch.tensor([3.0]), torch.tensor([3.0]), beta=0.1).backward()
    # Margin 3: dL/dnll(rej) = -2 σ(-0.3) < 0 (the true answer becomes less likely),
    # dL/dnll(cho) = +2 σ(-0.3) > 0 (the refusal becomes more likely).
    assert_close(rejected.grad, torch.tensor([-2 * sigmoid(-0.3)]))
    assert_close(chosen.grad, torch.tensor([2 * sigmoid(-0.3)]))


def test_ap_hand_value():
    # nll(idk) - nll(answer) = 5 - 2 = 3: -(1/0.1) log σ(0.3) = -10 log σ(0.3).
    loss = ap(nll_answer=torch.tensor([2.0]), nll_idk=torch.tensor([5.0]), beta=0.1)
    assert_close(loss, scalar(-10 * log_sigmoid(0.3)))


def test_ap_gradient_prefers_the_true_answer():
    answer = torch.tensor([2.0], requires_grad=True)
    idk = torch.tensor([5.0], requires_grad=True)
    ap(answer, idk, beta=0.1).backward()
    # dL/dm = -(1/β) · β · σ(-βm) = -σ(-0.3) with m = nll(idk) - nll(answer):
    # descent lowers the answer's NLL and raises the refusal's.
    assert_close(answer.grad, torch.tensor([sigmoid(-0.3)]))
    assert_close(idk.grad, torch.tensor([-sigmoid(-0.3)]))


def test_preference_losses_accept_bf16_and_return_float32():
    nll = torch.tensor([3.0], dtype=torch.bfloat16)  # 3 and 1 are exact in bf16
    ref = torch.tensor([1.0], dtype=torch.bfloat16)
    assert npo(nll, ref, 0.1).dtype == torch.float32
    assert_close(npo(nll, ref, 0.1), scalar(-20 * log_sigmoid(0.2)))
    assert dpo(ref, nll, ref, ref, 0.1).dtype == torch.float32
    assert ap(ref, nll, 0.1).dtype == torch.float32


# ---------------------------------------------------------------------------------------------
# max_entropy


def test_max_entropy_is_zero_for_uniform_distributions():
    # Any logits constant over the vocabulary give p = U, and KL(U ‖ U) = 0.
    logits = torch.full((2, 4, 7), 3.25)
    logits[1] = -1.5
    labels = torch.ones(2, 4, dtype=torch.long)
    assert_close(max_entropy(logits, labels), scalar(0.0))


def test_max_entropy_hand_value_v2():
    # p = [1/4, 3/4]: KL(U ‖ p) = Σ_v ½ (log ½ - log p_v) = -log 2 + ½ (log 4 + log 4/3)
    #               = log 2 - ½ log 3.
    logits = torch.tensor([[QUARTER, HALF]])
    labels = torch.tensor([[IGNORE_INDEX, 0]])  # only position 0 counts
    assert_close(max_entropy(logits, labels), scalar(LOG2 - 0.5 * LOG3))


def test_max_entropy_hand_value_peaked_distribution():
    # V = 4, logits [log 97, 0, 0, 0]: p = [97/100, 1/100, 1/100, 1/100].
    # KL(U ‖ p) = -log 4 - ¼ (log 0.97 + 3 log 0.01) = log 100 - log 4 - ¼ log 97 = log 25 - ¼ log 97.
    # (This is KL(U ‖ p), not KL(p ‖ U) = log V - H(p): ME punishes every token the model
    # deems near-impossible, so it is large here, ≈ 2.08, while log 4 - H(p) ≈ 1.22.)
    logits = torch.tensor([[[math.log(97.0), 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    labels = torch.tensor([[2, 3]])
    assert_close(max_entropy(logits, labels), scalar(math.log(25.0) - 0.25 * math.log(97.0)))


def test_max_entropy_averages_over_label_positions_only():
    # Position 0 (target labels[1] = -100) is peaked and must be ignored; positions 1 and 2 count
    # (targets labels[2], labels[3]) with values log 2 - ½ log 3 and 0; the last position never counts.
    logits = torch.tensor([[[9.0, -9.0], QUARTER, HALF, [-9.0, 9.0]]])
    labels = torch.tensor([[1, IGNORE_INDEX, 0, 1]])
    assert_close(max_entropy(logits, labels), scalar((LOG2 - 0.5 * LOG3) / 2))


def test_max_entropy_gradient_pushes_towards_uniform():
    # ∂/∂z_k [-log V - mean_v z_v + logsumexp(z)] = p_k - 1/V: [1/4 - 1/2, 3/4 - 1/2].
    logits = torch.tensor([[QUARTER, HALF]], requires_grad=True)
    max_entropy(logits, torch.tensor([[0, 1]])).backward()
    assert_close(logits.grad, torch.tensor([[[-0.25, 0.25], [0.0, 0.0]]]))


def test_max_entropy_without_label_positions_is_zero_and_differentiable():
    logits = torch.randn(2, 3, 5, requires_grad=True)
    loss = max_entropy(logits, torch.full((2, 3), IGNORE_INDEX))
    loss.backward()
    assert loss.dim() == 0 and loss.item() == 0.0
    assert_close(logits.grad, torch.zeros_like(logits))


# ---------------------------------------------------------------------------------------------
# kl


def test_kl_is_zero_for_equal_logits():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 9)
    assert_close(kl(logits, logits.clone(), torch.ones(2, 5, dtype=torch.bool)), scalar(0.0))


def test_kl_hand_value_and_direction():
    # p_θ = [1/2, 1/2], p_ref = [1/4, 3/4]:
    # KL(p_ref ‖ p_θ) = ¼ log(½) + ¾ log(3/2) = ¾ log 3 - log 2  (≈ 0.131).
    # The other direction, KL(p_θ ‖ p_ref) = log 2 - ½ log 3 (≈ 0.144), would fail this test.
    logits = torch.tensor([[HALF]])
    ref_logits = torch.tensor([[QUARTER]])
    assert_close(kl(logits, ref_logits, torch.ones(1, 1)), scalar(0.75 * LOG3 - LOG2))


def test_kl_averages_over_masked_positions_only():
    # Counted: (0, 0) and (1, 1) with value ¾ log 3 - log 2 each, (1, 0) with 0 -> mean 2/3 of it.
    # (0, 1) is padding with very different logits; averaging over all 4 positions as the
    # official code does would give a different number.
    k = 0.75 * LOG3 - LOG2
    logits = torch.tensor([[HALF, [8.0, -8.0]], [QUARTER, HALF]])
    ref_logits = torch.tensor([[QUARTER, [-8.0, 8.0]], [QUARTER, QUARTER]])
    mask = torch.tensor([[1, 0], [1, 1]])
    assert_close(kl(logits, ref_logits, mask), scalar(2 * k / 3))
    assert_close(kl(logits, ref_logits, mask.bool()), scalar(2 * k / 3))


def test_kl_gradient_moves_towards_the_reference():
    # ∂KL(p_ref ‖ p_θ)/∂z = p_θ - p_ref = [½ - ¼, ½ - ¾].
    logits = torch.tensor([[HALF]], requires_grad=True)
    kl(logits, torch.tensor([[QUARTER]]), torch.ones(1, 1)).backward()
    assert_close(logits.grad, torch.tensor([[[0.25, -0.25]]]))


def test_kl_with_an_empty_mask_is_zero_and_differentiable():
    logits = torch.randn(1, 2, 3, requires_grad=True)
    loss = kl(logits, torch.randn(1, 2, 3), torch.zeros(1, 2))
    loss.backward()
    assert loss.item() == 0.0
    assert_close(logits.grad, torch.zeros_like(logits))


# ---------------------------------------------------------------------------------------------
# bf16


def test_logit_losses_accept_bf16_and_compute_in_float32():
    # Upcasting bf16 to float32 is exact, so a float32 result must equal the float32 computation
    # on the same (rounded) logits; a bf16 computation would be off by ~1e-2.
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 32).to(torch.bfloat16).requires_grad_()
    ref_logits = torch.randn(2, 6, 32).to(torch.bfloat16)
    labels = torch.randint(0, 32, (2, 6))
    labels[0, :2] = IGNORE_INDEX
    mask = labels != IGNORE_INDEX
    exact = logits.detach().float()
    cases = [
        (sequence_nll(logits, labels), sequence_nll(exact, labels)),
        (mean_nll(logits, labels), mean_nll(exact, labels)),
        (max_entropy(logits, labels), max_entropy(exact, labels)),
        (kl(logits, ref_logits, mask), kl(exact, ref_logits.float(), mask)),
    ]
    for got, expected in cases:
        assert got.dtype == torch.float32
        assert_close(got, expected)
    sum(got.sum() for got, _ in cases).backward()
    assert logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad.float()).all()


# --------------------------------------------------------------------------- methods since the paper


def test_simnpo_normalises_by_length_and_needs_no_reference():
    from unlearn.losses import simnpo

    nll = torch.tensor([4.0, 2.0], requires_grad=True)
    loss = simnpo(nll, torch.tensor([2, 1]), beta=2.5, gamma=0.0)
    # both sequences have a mean NLL of 2: -(2/2.5) log σ(2.5 · 2)
    assert_close(loss, scalar(-0.8 * log_sigmoid(5.0)))
    assert_close(simnpo(torch.tensor([4.0]), torch.tensor([2]), 2.5, 1.0), scalar(-0.8 * log_sigmoid(2.5)))
    loss.backward()
    assert (nll.grad < 0).all()  # descent raises the forget NLL


def _one_position(logit_row, label, vocab):
    """logits (1, 2, V) whose position 0 has ``logit_row`` and predicts ``label``."""
    logits = torch.zeros(1, 2, vocab)
    logits[0, 0] = torch.tensor(logit_row)
    return logits.requires_grad_(True), torch.tensor([[IGNORE, label]])


def test_wga_weights_each_token_by_its_probability():
    from unlearn.losses import wga

    logits, labels = _one_position([0.0, 0.0], 0, 2)  # p(y) = 0.5, CE = log 2, weight 0.5^β
    loss = wga(logits, labels, beta=1.0)
    assert_close(loss, scalar(-0.5 * LOG2))
    assert_close(wga(*_one_position([0.0, 0.0], 0, 2), beta=2.0), scalar(-0.25 * LOG2))
    loss.backward()
    assert logits.grad[0, 0, 0] > 0  # descent lowers the true token's logit


def test_satimp_weights_saturation_times_importance():
    from unlearn.losses import satimp

    logits, labels = _one_position([math.log(3.0), 0.0], 0, 2)  # p(y) = 0.75
    loss = satimp(logits, labels, beta1=1.0, beta2=1.0)
    assert_close(loss, scalar(-(0.75 * 0.25) * -math.log(0.75)))
    loss.backward()
    assert logits.grad[0, 0, 0] > 0


def test_undial_distils_the_teacher_with_the_true_logit_lowered():
    from unlearn.losses import undial

    logits, labels = _one_position([math.log(3.0), 0.0], 0, 2)  # student p = (0.75, 0.25)
    ref = torch.zeros(1, 2, 2)  # teacher (0, 0) - ln 3 on the true token: softmax = (0.25, 0.75)
    loss = undial(logits, ref, labels, beta=math.log(3.0))
    assert_close(loss, scalar(-(0.25 * math.log(0.75) + 0.75 * math.log(0.25))))
    loss.backward()
    assert logits.grad[0, 0, 0] > 0  # the student moves towards the teacher: lower p(y)


def test_ce_u_removes_the_true_token_and_skips_the_first_answer_token():
    from unlearn.losses import ce_u

    logits = torch.zeros(1, 3, 3)
    logits[0, 1] = torch.tensor([0.0, math.log(2.0), 0.0])  # position 1 predicts label 1: p = (.25, .5, .25)
    logits.requires_grad_(True)
    labels = torch.tensor([[IGNORE, 0, 1]])  # the first answer token (label 0) is skipped
    loss = ce_u(logits, labels, ignore_first=1)
    # target: softmax((0, -inf, 0)) = (.5, 0, .5); CE = -(.5 ln .25 + .5 ln .25) = ln 4
    assert_close(loss, scalar(math.log(4.0)))
    loss.backward()
    assert logits.grad[0, 1, 1] > 0 and logits.grad[0, 0].abs().sum() == 0
    both = ce_u(logits.detach(), labels, ignore_first=0)
    assert both.item() > 0 and not math.isclose(both.item(), math.log(4.0), rel_tol=1e-6)


def test_rmu_activation_distance():
    from unlearn.losses import activation_distance

    h = torch.tensor([[[1.0, 3.0], [0.0, 0.0], [5.0, 5.0]]], requires_grad=True)
    labels = torch.tensor([[1, 1, IGNORE]])  # the third position does not count
    # position 0: ((1-1)^2 + (3-1)^2)/2 = 2; position 1: ((0-1)^2 + (0-1)^2)/2 = 1; mean 1.5
    loss = activation_distance(h, torch.tensor([1.0, 1.0]), labels)
    assert_close(loss, scalar(1.5))
    loss.backward()
    assert h.grad[0, 2].abs().sum() == 0
