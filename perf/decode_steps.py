"""Where a greedy decoding step's time goes on this machine (docs/performance.md, "TOFU standard
against open-unlearning"): a prompt's pass against a decoding step, per token, by rows and by the
number of cached columns the step attends over.

    python perf/decode_steps.py [--model smollm2-135m] [--threads 1] [--repeats 3]

Token values do not change the arithmetic, so the inputs are random token ids. Each figure is the
best of ``--repeats``. Prints one line per measurement and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import DynamicCache

from unlearn.models import load_model


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def prompt_pass(model, rows: int, length: int, repeats: int, vocab: int) -> float:
    """Seconds per token of a forward pass over ``rows`` prompts of ``length`` tokens (no cache)."""
    ids = torch.randint(0, vocab, (rows, length))
    with torch.inference_mode():
        seconds = _best(lambda: model(input_ids=ids, use_cache=True, logits_to_keep=1), repeats)
    return seconds / (rows * length)


def decode_step(model, rows: int, columns: int, repeats: int, vocab: int) -> float:
    """Seconds of one decoding step of ``rows`` rows over ``columns`` cached columns."""
    cfg = model.config
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    nxt = torch.randint(0, vocab, (rows, 1))
    mask = torch.ones(rows, columns + 1, dtype=torch.long)
    with torch.inference_mode():
        cache = DynamicCache()  # filled with random keys and values: a prompt's pass is not needed
        for layer in range(cfg.num_hidden_layers):
            kv = torch.randn(2, rows, heads, columns, head_dim)
            cache.update(kv[0], kv[1], layer)

        def step():
            model(input_ids=nxt, attention_mask=mask, past_key_values=cache, use_cache=True)
            cache.crop(-1)  # the next repeat attends over the same columns

        return _best(step, repeats)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    texts = ["a tokenizer for the tiny preset"] if args.model == "tiny" else None
    model, _ = load_model(args.model, texts=texts)
    model.eval()
    vocab = model.config.vocab_size
    result = {"model": args.model, "threads": args.threads}
    per_token = prompt_pass(model, 16, 64, args.repeats, vocab)
    result["prompt_pass_ms_per_token"] = round(per_token * 1e3, 2)
    print(f"a prompt's pass (16 prompts of 64 tokens): {per_token * 1e3:.1f} ms per token", flush=True)
    steps = {}
    for rows in (8, 16, 64, 128):
        for columns in (60, 120, 300):
            seconds = decode_step(model, rows, columns, args.repeats, vocab)
            steps[f"{rows}x{columns}"] = round(seconds * 1e3, 1)
            print(
                f"a decoding step, {rows} rows over {columns} cached columns: {seconds * 1e3:.0f} ms "
                f"({seconds * 1e3 / rows:.1f} ms per token)",
                flush=True,
            )
    result["decode_step_ms"] = steps
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
