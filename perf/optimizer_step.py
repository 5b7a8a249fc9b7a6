"""One AdamW step over a model's weights: torch's default implementation on this device against the
fused one-pass kernel (``--optim adamw_fused``) and the multi-tensor one, side by side, best of N.

    python perf/optimizer_step.py [--model smollm2-135m] [--threads 2] [--repeats 3]

The weights are the preset's architecture with random values and random gradients: the step's cost
does not depend on the values.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from unlearn.presets import smollm2_path

KINDS = {"adamw (default)": {}, "adamw_fused": {"fused": True}, "foreach": {"foreach": True}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m", help="smollm2-135m or a model folder")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    folder = smollm2_path() if args.model == "smollm2-135m" else args.model
    params = list(AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder)).parameters())
    for w in params:
        w.grad = torch.randn_like(w) * 1e-3
    print(f"{sum(w.numel() for w in params) / 1e6:.1f}M weights in {len(params)} tensors, {args.threads} threads")
    best = {k: float("inf") for k in KINDS}
    optimizers = {
        k: torch.optim.AdamW([{"params": params, "weight_decay": 0.01}], lr=1e-4, **kw) for k, kw in KINDS.items()
    }
    for opt in optimizers.values():
        opt.step()  # the moments are allocated on the first step
    for _ in range(args.repeats):  # alternated, so that a busy moment of the machine hits every kind
        for kind, opt in optimizers.items():
            start = time.perf_counter()
            opt.step()
            best[kind] = min(best[kind], time.perf_counter() - start)
    for kind, seconds in best.items():
        print(f"{kind:<16} {seconds:.3f} s a step ({best['adamw (default)'] / seconds:.2f}x the default's speed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
