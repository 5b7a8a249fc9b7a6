"""Helpers shared by the benchmarks: test models written to a folder, whole-process measurements.

Every benchmark compares two things side by side in the same run, alternating them and keeping
the best of N, because the machine is shared and a single timing is noise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
UNLEARN = [PYTHON, "-m", "unlearn"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1"}


@dataclass
class Measured:
    """One whole process: wall seconds, peak resident memory (MiB), CPU seconds (user + system)."""

    wall: float
    max_rss_mib: float
    rc: int
    output: str = ""
    cpu: float = 0.0


def measure(cmd: list[str], cwd: str | Path | None = None, env: dict | None = None) -> Measured:
    """Run ``cmd`` to completion; wall time and the peak RSS of that one child (``wait4``)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = out.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{text[-3000:]}")
    # ru_maxrss is in KiB on Linux
    return Measured(wall, usage.ru_maxrss / 1024, proc.returncode, text, usage.ru_utime + usage.ru_stime)


def alternate(runs: dict[str, callable], repeats: int) -> dict[str, list]:
    """Call each of ``runs`` in turn, ``repeats`` rounds (A B A B ...); results per name."""
    results = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            results[name].append(fn())
    return results


def best(values: list[Measured]) -> Measured:
    """The fastest run (the least disturbed by other processes); its RSS is the max over runs."""
    fastest = min(values, key=lambda m: m.wall)
    return Measured(
        fastest.wall, max(m.max_rss_mib for m in values), fastest.rc, fastest.output, min(m.cpu for m in values)
    )


# --------------------------------------------------------------------------- models on disk


def llama_config(vocab_size: int, hidden: int, layers: int, heads: int, intermediate: int, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def write_llama(
    out: Path,
    texts: list[str],
    vocab_size: int = 32000,
    hidden: int = 768,
    layers: int = 12,
    heads: int = 12,
    intermediate: int = 2048,
    tokenizer_vocab: int = 4096,
    seed: int = 0,
) -> Path:
    """A randomly initialised Llama (default ~110M parameters, vocabulary 32k) and a byte-level BPE
    tokenizer trained on ``texts``, saved as safetensors in ``out``. The model's vocabulary is
    ``vocab_size`` whatever the tokenizer's size, so the logits have the realistic width."""
    import torch
    from transformers import LlamaForCausalLM

    from unlearn.models import build_tiny_tokenizer

    if (out / "config.json").exists():
        return out
    tokenizer = build_tiny_tokenizer(texts, vocab_size=tokenizer_vocab)
    config = llama_config(max(vocab_size, len(tokenizer)), hidden, layers, heads, intermediate, tokenizer)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def n_params(model_dir: Path) -> int:
    """Parameters of a saved model (tied embeddings counted once), without loading its weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    return sum(p.numel() for p in model.parameters())


def synth_texts(data_dir: Path) -> list[str]:
    import json

    texts = []
    for name in ("full.json", "general.json"):
        for line in (data_dir / name).read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            texts.append(r["question"] + " " + r["answer"])
    return texts


def write_data(out: Path, authors: int = 100, qa_per_author: int = 4) -> Path:
    from unlearn.synthetic import write_synthetic

    if (out / "full.json").exists():
        return out
    return write_synthetic(out, n_authors=authors, qa_per_author=qa_per_author, seed=0)


def ratio_line(
    name: str,
    value: float,
    target: float | None = None,
    higher_is_better: bool = False,
    unit: str = "x",
    fmt: str = ".3f",
) -> dict:
    ok = None if target is None else (value >= target if higher_is_better else value <= target)
    return {
        "name": name,
        "value": value,
        "target": target,
        "ok": ok,
        "unit": unit,
        "sign": ">=" if higher_is_better else "<=",
        "fmt": fmt,
    }


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        tgt = (
            ""
            if r["target"] is None
            else f"  (target {r['sign']} {r['target']}{r['unit']}: {'met' if r['ok'] else 'NOT MET'})"
        )
        print(f"  {r['name']:<58} {format(r['value'], r.get('fmt', '.3f'))}{r['unit']}{tgt}", flush=True)
