"""Target 6 (needs a GPU): training tokens per second and peak GPU memory on the SmolLM2 preset.

Each configuration runs in its own process through the project's own training loop
(:func:`unlearn.train.fit`, ME+GD on a synthetic TOFU-layout task): bf16 weights with and
without gradient checkpointing, fp32 weights under bf16 autocast, and each attention kernel
available (eager, sdpa, flash_attention_2 when ``flash-attn`` is installed). One warm-up epoch
is run first and not counted; tokens are the real (unpadded) tokens of every sequence trained on.

    python perf/gpu_train.py                   # on a machine with a CUDA GPU
    python perf/gpu_train.py --device cpu --model tiny --epochs 1   # smoke test of the script
    python perf/gpu_train.py --init-from-config FOLDER   # random weights, FOLDER's architecture
    python perf/gpu_train.py --init-from-config FOLDER --profile --epochs 1   # where a step's time goes

``--init-from-config`` builds the model from a folder's ``config.json`` and tokenizer with random
weights (seed 0): speed and memory do not depend on the weights' values, and a machine that cannot
reach the hub or hold the packaged GGUF still measures the same architecture and token counts.

Not run by the project so far: no GPU was available where it was written (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {
    "bf16 + gradient checkpointing + sdpa": dict(dtype="bfloat16", gradient_checkpointing=True, attn="sdpa"),
    "bf16 + sdpa (no checkpointing)": dict(dtype="bfloat16", gradient_checkpointing=False, attn="sdpa"),
    "bf16 + gradient checkpointing + eager": dict(dtype="bfloat16", gradient_checkpointing=True, attn="eager"),
    "bf16 + gradient checkpointing + flash_attention_2": dict(
        dtype="bfloat16", gradient_checkpointing=True, attn="flash_attention_2"
    ),
    "fp32 weights + bf16 autocast + gradient checkpointing": dict(
        dtype="float32", gradient_checkpointing=True, attn="sdpa", mixed_precision="bf16"
    ),
}


PROFILED = "bf16 + sdpa (no checkpointing)"


def one(args, spec: dict) -> dict:
    import torch

    from unlearn.config import Config
    from unlearn.data import load_tofu, read_refusals
    from unlearn.datasets import UnlearningDataset
    from unlearn.methods import resolve
    from unlearn.models import load_model
    from unlearn.prompts import detect_prompt_format
    from unlearn.synthetic import write_synthetic
    from unlearn.train import fit

    work = Path(tempfile.mkdtemp(prefix="unlearn-gpu-"))
    data_dir = write_synthetic(work / "data", n_authors=args.authors, qa_per_author=10)
    data = load_tofu(data_dir, "forget10", 1)
    objective, cfg = resolve(
        Config(
            model=args.model,
            dtype=spec["dtype"],
            gradient_checkpointing=spec["gradient_checkpointing"],
            attn_implementation=spec["attn"],
            mixed_precision=spec.get("mixed_precision", "no"),
            method="ME+GD",
            batch_size=args.batch_size,
            grad_accum=1,
            epochs=1,
            lr=1e-5,
            warmup=0,
            max_length=256,
            out=str(work / "out"),
        )
    )
    refusals = read_refusals(None)
    texts = [r["question"] + " " + r["answer"] for r in data.forget + data.retain]
    model, tok = load_model(cfg.model, dtype=cfg.dtype, attn_implementation=cfg.attn_implementation, texts=texts)
    fmt = detect_prompt_format(tok, cfg.model)
    ds = UnlearningDataset(
        data.forget, data.retain, tok, fmt, objective.parts, refusals, cfg.max_length, mask_forget=cfg.mask
    )
    tokens_per_epoch = sum(len(item[p]) for item in ds.items for p in objective.parts)
    cuda = args.device == "cuda"
    model.to(args.device)
    fit(model, tok, ds, objective, cfg, work / "warmup")  # kernels, allocator, autotuning
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    if args.profile:
        return profile_epoch(model, tok, ds, objective, dataclasses.replace(cfg, epochs=1), work, cuda)
    cfg = dataclasses.replace(cfg, epochs=args.epochs)
    start = time.perf_counter()
    fit(model, tok, ds, objective, cfg, work / "timed")
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "tokens_per_s": tokens_per_epoch * args.epochs / seconds,
        "seconds": seconds,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "params_m": n_params / 1e6,
        "items": len(ds),
        "batch_size": cfg.batch_size,
        "epochs": args.epochs,
    }


def profile_epoch(model, tok, ds, objective, cfg, work: Path, cuda: bool) -> dict:
    """One epoch under ``torch.profiler``: wall time, the time the GPU ran kernels, and kernels per step."""
    import math

    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from unlearn.train import fit

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        fit(model, tok, ds, objective, cfg, work / "profiled")
        if cuda:
            torch.cuda.synchronize()
    wall = time.perf_counter() - start
    steps = math.ceil(len(ds) / cfg.batch_size)
    events = prof.key_averages()
    on_device = [e for e in events if e.device_type == DeviceType.CUDA]
    kernels = sum(e.count for e in on_device)
    return {
        "profile": True,
        "wall_s": wall,
        "device_busy_s": sum(e.self_device_time_total for e in on_device) / 1e6 if cuda else None,
        "steps": steps,
        "kernels_per_step": kernels / steps if cuda else None,
        "cpu_ops_per_step": sum(e.count for e in events if e.device_type == DeviceType.CPU) / steps,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "batch_size": cfg.batch_size,
    }


def materialise(folder: str) -> str:
    """Save a randomly initialised model of ``folder``'s architecture, with its tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = Path(tempfile.mkdtemp(prefix="unlearn-arch-"))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=torch.float32)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(folder).save_pretrained(out)
    return str(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--authors", type=int, default=100, help="synthetic authors (forget10: a tenth of them)")
    ap.add_argument(
        "--init-from-config",
        default=None,
        metavar="FOLDER",
        help="random weights with FOLDER's config.json and tokenizer (replaces --model)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="one epoch of the bf16 configuration without checkpointing under torch.profiler: wall time, "
        "the GPU's busy time, kernels per step",
    )
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one(args, CONFIGS[args.one])))
        return
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit(
                "no CUDA GPU here: this benchmark measures GPU training (try --device cpu --model tiny "
                "for a smoke test of the script)"
            )
    if args.init_from_config:
        args.model = materialise(args.init_from_config)
        print(f"model: random weights, architecture and tokenizer of {args.init_from_config}")
    import torch
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    if not args.profile:
        print(f"{'configuration':<56} {'tokens/s':>10} {'peak GiB':>9}")
    for name in [PROFILED] if args.profile else CONFIGS:
        if CONFIGS[name]["attn"] == "flash_attention_2":
            try:
                import flash_attn  # noqa: F401
            except ImportError:
                print(f"{name:<56} {'skipped: flash-attn not installed':>20}")
                continue
        cmd = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--model",
            args.model,
            "--device",
            args.device,
            "--batch-size",
            str(args.batch_size),
            "--epochs",
            str(args.epochs),
            "--authors",
            str(args.authors),
            *(["--profile"] if args.profile else []),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name:<56} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else '?'}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        if r.get("profile"):
            busy = "n/a (no GPU)" if r["device_busy_s"] is None else f"{r['device_busy_s']:.2f} s"
            per_step = "n/a" if r["kernels_per_step"] is None else f"{r['kernels_per_step']:.0f}"
            print(
                f"{name}: one epoch ({r['steps']} steps at batch {r['batch_size']}, {r['device']}) "
                f"{r['wall_s']:.2f} s; "
                f"kernels running on the GPU {busy}; {per_step} kernels and {r['cpu_ops_per_step']:.0f} CPU-side "
                "operator calls a step",
                flush=True,
            )
            continue
        peak = "n/a" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        print(
            f"{name:<56} {r['tokens_per_s']:>10.0f} {peak:>9}   ({r['device']}, {r['params_m']:.1f}M params, "
            f"{r['items']} items x {r['epochs']} epochs, batch {r['batch_size']})",
            flush=True,
        )


if __name__ == "__main__":
    main()
