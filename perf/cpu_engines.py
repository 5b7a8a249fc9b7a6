"""Run `unlearn run` under each distributed engine on CPU and compare them with one process.

    python perf/cpu_engines.py [--work DIR] [--lora]

Variants: one process (--batch-size 2), and two processes (--batch-size 1 each) under DDP
(torchrun, gloo), DeepSpeed ZeRO-2 and ZeRO-3 (DeepSpeed's CPU accelerator; skipped when
deepspeed is not importable) and FSDP2. Prints the final loss and the largest weight difference
from the one-process model.

accelerate refuses DeepSpeed and FSDP without GPUs, so for those variants this script starts
itself as the worker (``--worker``) and sets accelerate's process state to the torchrun world
before handing over to ``unlearn``. That patch exists only here; it lets the code paths that
ZeRO-3 and FSDP take (reference model and NLLs on a sharded model, gathered 16-bit weights, LoRA
merge from a gathered state dict, reloading for evaluation) run end to end without a GPU. It says
nothing about GPU speed or memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TRAIN = ["--method", "NPO+KL", "--epochs", "3", "--grad-accum", "1", "--lr", "1e-3", "--no-eval"]
ENGINES = {
    "zero2": {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2", "DS_ACCELERATOR": "cpu"},
    "zero3": {
        "ACCELERATE_USE_DEEPSPEED": "true",
        "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3",
        "DS_ACCELERATOR": "cpu",
        "ACCELERATE_DEEPSPEED_ZERO3_INIT": "true",
        "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL": "true",
    },
    "fsdp2": {
        "ACCELERATE_USE_FSDP": "true",
        "FSDP_VERSION": "2",
        "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
        "FSDP_RESHARD_AFTER_FORWARD": "true",
        "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT",
        "FSDP_CPU_RAM_EFFICIENT_LOADING": "false",
        "FSDP_SYNC_MODULE_STATES": "false",
    },
}


def worker(argv: list[str]) -> int:
    from accelerate import PartialState
    from accelerate.utils import DistributedType

    from unlearn.__main__ import main

    if os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true":
        PartialState()  # DeepSpeed forms the gloo group itself
        PartialState._shared_state.update(
            num_processes=int(os.environ["WORLD_SIZE"]),
            process_index=int(os.environ["RANK"]),
            local_process_index=int(os.environ["LOCAL_RANK"]),
            distributed_type=DistributedType.DEEPSPEED,
            backend="gloo",
        )
    else:  # FSDP: accelerate turns it on only from a multi-GPU state
        from unlearn.distributed import state

        state()
        PartialState._shared_state.update(distributed_type=DistributedType.MULTI_GPU)
    return main(argv)


def _run(cmd: list[str], env: dict, log: Path) -> None:
    with open(log, "w") as fh:
        code = subprocess.run(
            cmd,
            env={
                **os.environ,
                "OMP_NUM_THREADS": "1",
                "ACCELERATE_MIXED_PRECISION": "no",
                "PYTHONWARNINGS": "ignore",
                **env,
            },
            stdout=fh,
            stderr=subprocess.STDOUT,
        ).returncode
    if code:
        raise SystemExit(f"{' '.join(cmd)} failed; see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter (dropout 0) instead of all weights")
    args = parser.parse_args()
    from safetensors.torch import load_file

    work = Path(args.work or tempfile.mkdtemp(prefix="cpu_engines_"))
    work.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {"PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    data, base = work / "data", work / "base"
    if not (base / "model").is_dir():
        _run(
            [py, "-m", "unlearn", "data", "synth", "--out", str(data), "--authors", "10", "--qa-per-author", "2"],
            env,
            work / "data.log",
        )
        _run(
            [
                py,
                "-m",
                "unlearn",
                "finetune",
                "--train",
                str(data / "forget10.json"),
                "--out",
                str(base),
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--grad-accum",
                "1",
                "--overwrite",
            ],
            env,
            work / "base.log",
        )
    common = ["run", "--data", str(data), "--model", str(base / "model"), *TRAIN]
    if args.lora:
        common += ["--lora", "--lora-dropout", "0"]
    torchrun = [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    variants = {
        "1 process": ([py, "-m", "unlearn", *common, "--batch-size", "2"], {}),
        "DDP": ([*torchrun, "-m", "unlearn", *common, "--batch-size", "1"], {}),
    }
    try:
        import deepspeed  # noqa: F401

        engines = ENGINES
    except ImportError:
        print("deepspeed is not importable: ZeRO-2 and ZeRO-3 skipped")
        engines = {k: v for k, v in ENGINES.items() if not k.startswith("zero")}
    for name, engine_env in engines.items():
        variants[name] = ([*torchrun, __file__, "--worker", *common, "--batch-size", "1"], engine_env)
    results = {}
    for name, (cmd, extra) in variants.items():
        out = work / name.replace(" ", "_")
        _run([*cmd, "--out", str(out), "--overwrite"], {**env, **extra}, work / f"{out.name}.log")
        rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
        results[name] = (rows, load_file(out / "model" / "model.safetensors"))
    ref_rows, ref_w = results["1 process"]
    print(f"{'variant':<10} {'steps':>5} {'final loss':>12} {'max |w - w(1 process)|':>24}")
    for name, (rows, w) in results.items():
        diff = max((w[k].float() - ref_w[k].float()).abs().max().item() for k in ref_w)
        extra = sorted(set(w) ^ set(ref_w))
        print(
            f"{name:<10} {len(rows):>5} {rows[-1]['loss']:>12.7f} {diff:>24.2e}"
            + (f"  keys differ: {extra}" if extra else "")
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.exit(worker(sys.argv[2:]))
    main()
