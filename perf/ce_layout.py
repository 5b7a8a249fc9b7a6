"""Per-item NLLs under the two float32 cross-entropy layouts, against a float64 reference.

open-unlearning takes the cross-entropy over the logits laid out ``(B, V, T)`` (``logits.transpose(-1,
-2)``, ``CrossEntropyLoss(reduction="none")``); we take it over ``(B·T, V)``
(``unlearn.losses.sequence_nll``). The two sum the same float32 terms in another order, so per-item
NLLs (and the probabilities, truth ratios and rank-based values made from them) can differ by rounding.
This prints how much, and which is the closer to the same sums in float64, on TOFU forget items in the
TOFU standard's encoding (``TofuTemplate``, 512 tokens) of a model's prompt format::

    python perf/ce_layout.py --model smollm2-135m --prompt-format llama2 --rows 40
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from unlearn.data import read_records
from unlearn.encoding import IGNORE_INDEX
from unlearn.losses import sequence_nll, token_counts
from unlearn.models import load_model
from unlearn.prompts import detect_prompt_format, tofu_template

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tofu" / "forget10_perturbed.json"


def open_unlearning_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """open-unlearning's ``evaluate_probability``: the loss over the (B, V, T) layout, summed per item."""
    shifted = labels[..., 1:].contiguous()
    logits = logits[..., :-1, :].contiguous()
    return F.cross_entropy(logits.transpose(-1, -2), shifted, ignore_index=IGNORE_INDEX, reduction="none").sum(-1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--prompt-format", default=None, help="e.g. llama2 for the [INST] format")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--rows", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(1)
    model, tok = load_model(args.model, dtype="float32")
    fmt = tofu_template(detect_prompt_format(tok, args.model, args.prompt_format))
    rows = read_records(args.data)[: args.rows]
    worst = {"ours": 0.0, "open-unlearning": 0.0, "between": 0.0, "prob": 0.0}
    closer = 0
    for start in range(0, len(rows), args.batch_size):
        enc = [fmt.encode_pair(tok, r["question"], r["answer"], 512) for r in rows[start : start + args.batch_size]]
        width = max(len(e.input_ids) for e in enc)
        pad = tok.pad_token_id
        ids = torch.tensor([e.input_ids + [pad] * (width - len(e.input_ids)) for e in enc])
        labels = torch.tensor([e.labels + [IGNORE_INDEX] * (width - len(e.labels)) for e in enc])
        mask = torch.tensor([[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in enc])
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        n = token_counts(labels).double()
        ours = sequence_nll(logits, labels).double() / n
        ou = open_unlearning_nll(logits, labels).double() / n
        ref = open_unlearning_nll(logits.double(), labels) / n
        worst["ours"] = max(worst["ours"], (ours - ref).abs().max().item())
        worst["open-unlearning"] = max(worst["open-unlearning"], (ou - ref).abs().max().item())
        worst["between"] = max(worst["between"], (ours - ou).abs().max().item())
        worst["prob"] = max(worst["prob"], (torch.exp(-ours) - torch.exp(-ou)).abs().max().item())
        closer += int(((ours - ref).abs() <= (ou - ref).abs()).sum())
    print(f"model {args.model}, format {fmt.base.kind}, {len(rows)} forget items of {args.data}")
    print(f"largest per-item NLL difference, ours vs open-unlearning's layout: {worst['between']:.2e}")
    print(f"  ... of their probabilities exp(-NLL): {worst['prob']:.2e}")
    ours, theirs = worst["ours"], worst["open-unlearning"]
    print(f"largest difference from float64: ours {ours:.2e}, open-unlearning's {theirs:.2e}")
    print(f"items where ours is at least as close to float64: {closer} of {len(rows)}")
    assert math.isfinite(worst["between"])


if __name__ == "__main__":
    main()
