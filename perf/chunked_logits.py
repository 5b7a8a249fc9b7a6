"""Chunked logits (``--chunked-logits``) against whole logits: peak memory and step time.

A Llama with Llama-3's 128,256-token vocabulary and a small body (hidden 64, 2 layers), ME+GD and
NPO+KL (NPO's cached reference NLLs, KL's frozen model in memory), batch 4 × 256 tokens (the
first 64 of each a masked question), AdamW steps. Each configuration runs in its own process
(``python perf/chunked_logits.py --probe METHOD CHUNK``), alternating, best of ``--repeats``:
the process's peak resident memory above its memory just before the first step (model, optimiser
and reference in place), and the best step time over ``--steps`` steps after a warm-up step.
Targets: peak ≤ 0.5× and step time ≤ 1.1× of whole logits.

    python perf/chunked_logits.py [--repeats 2] [--steps 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PYTHON, alternate  # noqa: E402

VOCAB, HIDDEN, LAYERS, BATCH, LENGTH, QUESTION = 128_256, 64, 2, 4, 256, 64


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def probe(method: str, chunk: bool, steps: int) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from unlearn import chunked, losses
    from unlearn.methods import BatchView, build_objective
    from unlearn.reference import Reference

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=4 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=LENGTH,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    g = torch.Generator().manual_seed(1)

    def part():
        ids = torch.randint(0, VOCAB, (BATCH, LENGTH), generator=g)
        labels = ids.clone()
        labels[:, :QUESTION] = -100
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    batch = {"forget": part(), "retain": part(), "index": torch.arange(BATCH)}
    objective = build_objective(method)
    frozen = copy.deepcopy(model).eval().requires_grad_(False) if objective.needs_ref_model else None
    stats = None
    if objective.ref_nll_parts:
        with torch.no_grad():
            f = batch["forget"]
            stats = {"forget": losses.sequence_nll(model(input_ids=f["input_ids"]).logits, f["labels"])}
    ref = Reference(stats=stats, model=frozen)
    rows = chunked.chunk_rows(model, True, sharded=False) if chunk else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    before = rss_mib()
    times, first = [], None
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss, _ = objective(BatchView(model, batch, ref, 0, rows))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
        first = float(loss) if first is None else first
    return {"peak_above_mib": peak_mib() - before, "peak_mib": peak_mib(), "step_s": min(times[1:]), "loss": first}


def main() -> None:
    import subprocess

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probe", nargs=2, metavar=("METHOD", "CHUNK"))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe[0], args.probe[1] == "on", args.steps)))
        return

    def run(method, chunk):
        out = subprocess.run(
            [PYTHON, __file__, "--probe", method, chunk, "--steps", str(args.steps)],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    print(
        f"vocabulary {VOCAB}, hidden {HIDDEN}, {LAYERS} layers, batch {BATCH} x {LENGTH} tokens, "
        f"best of {args.repeats}, 1 thread"
    )
    print(
        f"{'method':8} {'logits':7} {'peak above start MiB':>21} {'peak RSS MiB':>13} {'step s':>8} {'first loss':>11}"
    )
    for method in ("ME+GD", "NPO+KL"):
        res = alternate(
            {"whole": lambda m=method: run(m, "off"), "chunked": lambda m=method: run(m, "on")}, args.repeats
        )
        best = {
            k: {
                "peak_above_mib": min(r["peak_above_mib"] for r in v),
                "peak_mib": min(r["peak_mib"] for r in v),
                "step_s": min(r["step_s"] for r in v),
                "loss": v[0]["loss"],
            }
            for k, v in res.items()
        }
        for k, b in best.items():
            print(
                f"{method:8} {k:7} {b['peak_above_mib']:21.0f} {b['peak_mib']:13.0f} {b['step_s']:8.3f} "
                f"{b['loss']:11.6f}"
            )
        w, c = best["whole"], best["chunked"]
        print(
            f"{method:8} chunked/whole: peak above start {c['peak_above_mib'] / w['peak_above_mib']:.2f}x "
            f"(target <= 0.5), step time {c['step_s'] / w['step_s']:.2f}x (target <= 1.1)"
        )


if __name__ == "__main__":
    main()
