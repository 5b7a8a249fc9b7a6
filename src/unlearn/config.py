"""The single configuration schema.

One flat dataclass: every field is at once a command-line flag (``--grad-accum``), a YAML key
(``grad_accum: 4``) and an entry of the ``config.yaml`` saved beside every model. The attribute
docstrings (``help=``) are the help text. Precedence: defaults < ``--config FILE`` < flags.
Fields left at ``None`` take the paper's per-method default when the run starts (see
:func:`unlearn.methods.method_defaults`).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


def _f(default: Any, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class Config:
    # --- model ---
    model: str = _f("tiny", "model: a local folder, a hub id, or a preset (tiny, smollm2-135m)")
    prompt_format: str | None = _f(
        None, "prompt format: llama2, llama3, chat_template, plain or a template with {question} "
        "(default: detected from the model)")
    dtype: str = _f("auto", "weights dtype: auto (training: float32 master weights; evaluation: bf16 on a GPU "
                    "that has it, else float32), float32, bfloat16, float16")
    trust_remote_code: bool = _f(False, "allow a model folder to run its own Python code (off by default)")
    attn_implementation: str | None = _f(None, "attention kernel: eager, sdpa or flash_attention_2")
    gradient_checkpointing: bool = _f(False, "trade compute for memory by recomputing activations")
    lora: bool = _f(False, "train a LoRA adapter on every linear layer but the output head instead of all weights; "
                    "saves OUT/adapter and the merged model in OUT/model")
    lora_r: int = _f(8, "LoRA rank (PAPER code: 8)")
    lora_alpha: int = _f(32, "LoRA scaling numerator: updates are scaled by alpha / r (PAPER code: 32)")
    lora_dropout: float = _f(0.05, "dropout on the LoRA branch's input (PAPER code: 0.05)")
    # --- data ---
    data: str | None = _f(None, "data: a TOFU-layout folder, a real-world-layout folder, or locuslab/TOFU")
    split: str = _f("forget01", "TOFU split: forget01, forget05 or forget10")
    task_id: int | None = _f(1, "task of the split to unlearn (TOFU: 1..10; real world: all tasks when unset)")
    forget: str | None = _f(None, "your own forget set (JSON lines with question and answer)")
    retain: str | None = _f(None, "your own retain set (JSON lines with question and answer)")
    idk: str | None = _f(None, "refusal sentences for IDK/DPO/AP, one per line (default: built-in list)")
    max_length: int = _f(500, "longest training sequence in tokens (PAPER: 500 TOFU, 300 real world)")
    # --- method and optimisation ---
    method: str = _f("ME+GD", "unlearning method: FORGET[+REG], e.g. ME+GD, IDK+AP, NPO+KL, GA, LLMU")
    epochs: float = _f(5, "epochs over the forget set")
    lr: float = _f(1e-5, "peak learning rate (AdamW)")
    batch_size: int = _f(4, "examples per device per micro-step")
    grad_accum: int = _f(4, "micro-steps accumulated per optimiser step")
    weight_decay: float = _f(0.01, "AdamW weight decay")
    optim: str = _f("adamw", "optimiser: adamw (torch) or adamw_8bit (bitsandbytes, CUDA; 8-bit optimiser states)")
    warmup: int | None = _f(None, "linear warm-up steps (default: one epoch of steps when an epoch has more than one)")
    forget_coeff: float | None = _f(None, "weight of the forget term (default: 0.1 for ME, 1.0 otherwise)")
    reg_coeff: float = _f(1.0, "weight of the regulariser")
    beta: float = _f(0.1, "inverse temperature of NPO, DPO and AP")
    mask: bool | None = _f(None, "mask question tokens out of the forget loss (default: on, off for ME)")
    fix_ref_model: bool = _f(False, "continual: keep the original model as the reference instead of the previous one")
    ref_model: str | None = _f(None, "reference model folder (default: the model being unlearned, before training)")
    seed: int = _f(1001, "random seed")
    mixed_precision: str = _f("auto", "mixed precision: auto (bf16 autocast over float32 weights on a GPU "
                              "that supports it, else none), no, bf16 or fp16")
    # --- evaluation ---
    eval: bool = _f(True, "evaluate after unlearning (--no-eval skips it)")
    eval_data: str | None = _f(None, "evaluation data folder (*_perturbed.json files) when it differs from --data")
    embedder: str | None = _f(None, "sentence embedder for Cosine Similarity: a sentence-transformers folder or hub id "
                              "(default: the packaged all-MiniLM-L6-v2)")
    nli: str | None = _f("sileod/deberta-v3-base-tasksource-nli",
                         "NLI model for the Entailment Score: a folder or hub id; none disables it")
    eval_batch_size: int = _f(16, "questions per batch when evaluating")
    retain_model: str | None = _f(None, "for Forget Quality: a retain model folder, or a folder with its saved "
                                  "evaluation (eval_Forget.jsonl)")
    downstream: str | None = _f(None, "lm-eval tasks to run after unlearning, comma-separated; the paper's: "
                                "arc_challenge,mmlu,truthfulqa_mc1,triviaqa,gsm8k (or 'paper'); needs lm-eval")
    downstream_limit: int | None = _f(None, "items per downstream task, for quick checks (None: every item)")
    downstream_include: str | None = _f(None, "folder of custom lm-eval task YAML files for --downstream")
    # --- outputs ---
    out: str | None = _f(None, "output folder")
    overwrite: bool = _f(False, "allow writing into an output folder that already holds results")
    save_every: int | None = _f(None, "write a resumable checkpoint to OUT/checkpoint every N optimiser steps "
                                "(deleted once the final model is saved)")
    resume: bool = _f(False, "continue the interrupted run in --out from its checkpoint (same settings)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        from .io import atomic_write_text

        atomic_write_text(path, self.to_yaml())


FIELD_NAMES = {f.name for f in fields(Config)}


def read_yaml_mapping(path: str | Path, what: str, shape: str) -> dict[str, Any]:
    """A YAML file holding a mapping; a missing file, bad YAML or another shape is one clear error."""
    from .data import DataError

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: a {what} must be {shape}")
    return raw


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config; keys may use '-' or '_'. Unknown keys are an error naming the file."""
    raw = read_yaml_mapping(path, "config file", "a mapping of keys to values")
    return config_keys(raw, f"{path}: ")


def config_keys(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """``raw`` with keys as field names ('-' read as '_'); an unknown key is an error prefixed by ``where``."""
    from .data import DataError

    out = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name not in FIELD_NAMES:
            raise DataError(f"{where}unknown key '{key}' (valid: {', '.join(sorted(FIELD_NAMES))})")
        out[name] = value
    return out


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_config_args(parser: argparse.ArgumentParser, names: list[str]) -> None:
    """Add ``--flag`` for each named field; defaults are suppressed so we know what was given."""
    by_name = {f.name: f for f in fields(Config)}
    parser.add_argument("--config", help="YAML file with any of these keys; flags override it")
    for name in names:
        f = by_name[name]
        flag = "--" + name.replace("_", "-")
        help_text = f.metadata["help"]
        if f.type in ("bool", "bool | None"):
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
            continue
        typ = {"int": int, "float": float, "int | None": int, "float | None": float}.get(str(f.type), str)
        parser.add_argument(flag, dest=name, type=typ, default=argparse.SUPPRESS,
                            help=f"{help_text} (default: {f.default})")


def config_from_args(args: argparse.Namespace, **overrides: Any) -> Config:
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(load_yaml(args.config))
    values.update({k: v for k, v in vars(args).items() if k in FIELD_NAMES})
    values.update(overrides)
    cfg = Config(**values)
    _check_types(cfg)
    return cfg


def _check_types(cfg: Config) -> None:
    from .data import DataError

    for f in fields(Config):
        value = getattr(cfg, f.name)
        t = str(f.type)
        if value is None:
            if "None" not in t:
                raise DataError(f"config: '{f.name}' may not be empty")
            continue
        if t.startswith("bool") and isinstance(value, str):
            setattr(cfg, f.name, _parse_bool(value))
        elif t.startswith("int") and not isinstance(value, bool):
            try:
                setattr(cfg, f.name, int(value))
            except (TypeError, ValueError):
                raise DataError(f"config: '{f.name}' must be an integer, got {value!r}") from None
        elif t.startswith("float"):
            try:
                setattr(cfg, f.name, float(value))
            except (TypeError, ValueError):
                raise DataError(f"config: '{f.name}' must be a number, got {value!r}") from None
