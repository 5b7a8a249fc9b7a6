"""Greedy decoding's KV cache, each way side by side in one process (docs/performance.md):

    python perf/decode_cache.py --data WORK/locuslab/TOFU --model MODEL [--questions N] [--repeat 3]

* ``dynamic, drop each``: transformers' dynamic cache (every step copies the whole cache into a new
  tensor) and each ended row dropped at once (another copy of the whole cache);
* ``dynamic, drop 25%``: the same cache, ended rows dropped once they are more than a quarter of
  the batch;
* ``reserved, drop 25%`` (the default): :class:`unlearn.evaluation.generation.ReservedLayer`, each
  step written in place, ended rows dropped as above.

Each way generates the TOFU standard's answers (open-unlearning's stop and mask, 200 new tokens, 256
prompts a batch); the answers must be the same. Printed per way: the best wall time of ``--repeat``
(the ways in turn) and, with ``--profile``, the operators' own CPU time in one more pass under torch's
profiler, the largest operators named.
WORK is a ``perf/tofu_parity.py --work`` folder (its data snapshot); MODEL is ``smollm2-135m``, a
model folder, or that folder's ``tiny-model``. One thread; run it alone.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.profiler import profile

from unlearn.evaluation import generation
from unlearn.evaluation import open_unlearning as ou
from unlearn.models import load_model
from unlearn.presets import smollm2_path
from unlearn.prompts import PromptFormat, tofu_template
from unlearn.protocols.tofu import load_tofu_sets

WAYS = {"dynamic, drop each": (False, 0.0), "dynamic, drop 25%": (False, 0.25), "reserved, drop 25%": (True, 0.25)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a locuslab/TOFU snapshot folder (perf/tofu_parity.py builds one)")
    p.add_argument("--model", required=True, help="smollm2-135m or a model folder")
    p.add_argument("--questions", type=int, default=None, help="only the first N questions (default: all 657)")
    p.add_argument("--rows", type=int, default=256, help="prompts decoded together")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--profile", action="store_true", help="one more pass of each way under torch's profiler (slow)")
    args = p.parse_args()
    torch.set_num_threads(1)
    model, tok = load_model(str(smollm2_path() if args.model == "smollm2-135m" else Path(args.model)))
    model.eval()
    template = tofu_template(PromptFormat("chat_template" if tok.chat_template else "plain", tokenizer=tok))
    sets = load_tofu_sets(Path(args.data), "forget01")
    questions = [r["question"] for name in ("forget", "retain", "ra", "wf") for r in sets.of(name)][: args.questions]
    stop = ou.generation_stop(model)
    reserve = generation.reserve

    def run():
        return generation.generate(
            model, tok, template, questions, batch_size=args.rows, max_new_tokens=200, stop=stop, mask_pad=True
        )

    walls: dict[str, list[float]] = {w: [] for w in WAYS}
    ops, answers = {}, {}
    for rep in range(args.repeat):
        for way, (reserved, drop) in WAYS.items():
            generation.reserve = reserve if reserved else (lambda cache, capacity: None)
            generation.DROP_ENDED = drop
            start = time.perf_counter()
            answers[way] = run()
            walls[way].append(time.perf_counter() - start)
            if args.profile and rep == args.repeat - 1:
                with profile() as prof:
                    run()
                events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
                ops[way] = (sum(e.self_cpu_time_total for e in events) / 1e6, events[:4])
    generation.reserve, generation.DROP_ENDED = reserve, WAYS["reserved, drop 25%"][1]
    first = next(iter(answers.values()))
    print(f"model: {args.model}, {len(questions)} questions, {args.rows} a batch, one thread")
    for way in WAYS:
        same = sum(a == b for a, b in zip(answers[way], first, strict=True))
        runs = ", ".join(f"{t:.2f}" for t in walls[way])
        line = f"{way:<20} wall best {min(walls[way]):7.2f} s ({runs}); answers equal {same}/{len(first)}"
        if way in ops:
            total, top = ops[way]
            named = ", ".join(f"{e.key.removeprefix('aten::')} {e.self_cpu_time_total / 1e6:.2f} s" for e in top)
            line += f"; operators {total:.2f} s ({named})"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
