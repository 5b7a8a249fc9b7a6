"""``unlearn plan``'s estimate against the measured peak memory of real training steps on CPU.

Each case builds a randomly initialised Llama from a config (no download), runs AdamW steps of a
method on batch × length random tokens per batch part (the first quarter a masked question)
through the same objective and BatchView as ``unlearn run``, float32 on one thread, in its own
process (``--probe``), and reports the process's peak resident memory above its memory after the
imports (so weights, optimiser states, reference, activations and logits all count), beside
:func:`unlearn.memory.estimate` for the same settings on ``--device cpu``.

    python perf/plan_check.py
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PYTHON  # noqa: E402

# name: (vocab, hidden, intermediate, layers, heads, method, batch, length, lora, gradient checkpointing, chunked)
CASES = {
    "32k-vocab ME+GD": (32000, 256, 688, 4, 4, "ME+GD", 4, 256, False, False, False),
    "32k-vocab ME+GD chunked": (32000, 256, 688, 4, 4, "ME+GD", 4, 256, False, False, True),
    "32k-vocab NPO+KL": (32000, 256, 688, 4, 4, "NPO+KL", 4, 256, False, False, False),
    "8k-vocab GA+GD deep": (8000, 512, 1376, 8, 8, "GA+GD", 4, 256, False, False, False),
    "8k-vocab GA+GD deep, checkpointing": (8000, 512, 1376, 8, 8, "GA+GD", 4, 256, False, True, False),
    "8k-vocab IDK+AP LoRA": (8000, 512, 1376, 8, 8, "IDK+AP", 2, 256, True, False, False),
    # held out: not looked at when the constants of unlearn.memory were set
    "16k-vocab UNDIAL+GD": (16000, 384, 1024, 6, 6, "UNDIAL+GD", 4, 192, False, False, False),
    "32k-vocab DPO+KL": (32000, 256, 688, 4, 4, "DPO+KL", 2, 256, False, False, False),
    "8k-vocab SimNPO+GD LoRA, checkpointing": (8000, 512, 1376, 8, 8, "SimNPO+GD", 4, 256, True, True, False),
    "48k-vocab NPO+GD chunked": (48000, 256, 688, 4, 4, "NPO+GD", 4, 256, False, False, True),
}


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _config(case):
    from transformers import LlamaConfig

    vocab, hidden, inter, layers, heads = case[:5]
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )


def probe(name: str) -> dict:
    import torch
    from transformers import LlamaForCausalLM

    from unlearn import chunked, losses
    from unlearn.methods import BatchView, build_objective
    from unlearn.reference import AdapterOff, Reference

    case = CASES[name]
    vocab, method, batch_size, length, lora, gc, chunk = case[0], case[5], case[6], case[7], case[8], case[9], case[10]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    start = rss_mib()
    model = LlamaForCausalLM(_config(case))
    if lora:
        from unlearn.lora import apply_lora

        model = apply_lora(model, 8, 32, 0.0, gc, 0)
    if gc:  # as unlearn.train.prepare_training does, after the adapter
        model.gradient_checkpointing_enable()
    model.train()
    g = torch.Generator().manual_seed(1)
    objective = build_objective(method)

    def part():
        ids = torch.randint(0, vocab, (batch_size, length), generator=g)
        labels = ids.clone()
        labels[:, : length // 4] = -100
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    batch = {p: part() for p in objective.parts} | {"index": torch.arange(batch_size)}
    frozen = None
    if objective.needs_ref_model:
        frozen = AdapterOff(model) if lora else copy.deepcopy(model).eval().requires_grad_(False)
    stats = None
    if objective.ref_nll_parts:
        with torch.no_grad():
            stats = {
                p: losses.sequence_nll(model(input_ids=batch[p]["input_ids"]).logits, batch[p]["labels"])
                for p in objective.ref_nll_parts
            }
    rows = chunked.chunk_rows(model, chunk, sharded=False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    for _ in range(3):
        loss, _ = objective(BatchView(model, batch, Reference(stats=stats, model=frozen), 0, rows))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return {"measured_mib": peak_mib() - start}


def estimate_mib(name: str) -> float:
    import torch
    from transformers import LlamaForCausalLM

    from unlearn.memory import Setting, Shape, estimate

    case = CASES[name]
    config = _config(case)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    head = model.get_output_embeddings()
    layer = sum(p.numel() for p in model.model.layers[0].parameters())
    lora = sum(
        m.in_features + m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head
    )
    shape = Shape(
        name,
        sum(p.numel() for p in model.parameters()),
        config.hidden_size,
        config.intermediate_size,
        config.num_hidden_layers,
        config.num_attention_heads,
        config.vocab_size,
        layer,
        lora,
        False,
    )
    s = Setting(
        method=case[5],
        batch_size=case[6],
        max_length=case[7],
        lora=case[8],
        mixed_precision=False,
        gradient_checkpointing=case[9],
        chunked_logits=case[10],
    )
    return estimate(shape, s, device="cpu").total / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probe")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe)))
        return
    print(f"{'case':38} {'estimated MiB':>14} {'measured MiB':>13} {'error':>7}")
    errors = []
    for name in CASES:
        measured = min(
            json.loads(
                subprocess.run([PYTHON, __file__, "--probe", name], capture_output=True, text=True, check=True)
                .stdout.strip()
                .splitlines()[-1]
            )["measured_mib"]
            for _ in range(args.repeats)
        )
        est = estimate_mib(name)
        errors.append((est - measured) / measured)
        print(f"{name:38} {est:14.0f} {measured:13.0f} {errors[-1]:+7.0%}")
    held = errors[6:]
    print(
        f"largest error {max(errors, key=abs):+.0%}; on the held-out cases {max(held, key=abs):+.0%} "
        "(positive: the plan overestimates)"
    )


if __name__ == "__main__":
    main()
