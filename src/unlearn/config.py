"""The single configuration schema.

One flat dataclass: every field is at once a command-line flag (``--grad-accum``), a YAML key
(``grad_accum: 4``) and an entry of the ``config.yaml`` saved beside every model. Each field's
metadata is the rest of what the program knows about it, so nothing keeps a copy of the field list:

* ``help``: the help text of the flag;
* ``group``: the flag group (model, lora, train, data, unlearn, eval, downstream, out, resume);
  each command takes whole groups (:data:`unlearn.__main__.COMMANDS`);
* ``trajectory``: the field changes what a run computes, so a checkpoint written under another
  value is not resumed (:func:`trajectory_fields`).

Precedence: defaults < ``--config FILE`` < flags. Fields left at ``None`` take the method's own
default when the run starts (:func:`unlearn.methods.resolve`); each default is written once, here
or in the method's registry entry.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from unlearn.errors import ConfigError
from unlearn.io import atomic_write_text

EVAL_BATCH_SIZE = 16
MIN_K = 0.4  # Min-K%: the share of lowest-probability tokens scored (MUSE's and open-unlearning's 0.4)
DEFAULT_NLI = "sileod/deberta-v3-base-tasksource-nli"  # the paper's entailment judge
GROUPS = ("model", "lora", "train", "data", "unlearn", "eval", "downstream", "audit", "out", "resume")


def _f(
    default: Any,
    help: str,
    group: str,
    trajectory: bool = False,
    lo: float | None = None,
    above: bool = False,
    hi: float | None = None,
):
    """A field: help text, flag group, whether it changes a run's result (the resume guard), and
    its domain for numbers (at least ``lo``, above it with ``above``, below ``hi``; always finite)."""
    assert group in GROUPS, group
    return field(
        default=default,
        metadata={"help": help, "group": group, "trajectory": trajectory, "lo": lo, "above": above, "hi": hi},
    )


@dataclass
class Config:
    # A table of options, one per line: its default, help text and flag group (kept as written).
    # fmt: off
    # --- model ---
    model: str = _f("tiny", "model: a local folder, a hub id, or a preset (tiny, smollm2-135m)", "model", True)
    prompt_format: str | None = _f(
        None, "prompt format: llama2, llama3, chat_template, plain or a template with {question} "
        "(default: detected from the model)", "model", True)
    dtype: str = _f("auto", "weights dtype: auto (training: float32 master weights; evaluation: bf16 on a GPU "
                    "that has it, else float32), float32, bfloat16, float16", "model", True)
    trust_remote_code: bool = _f(False, "allow a model folder to run its own Python code (off by default)", "model")
    attn_implementation: str | None = _f(None, "attention kernel: eager, sdpa or flash_attention_2", "model")
    # --- LoRA ---
    lora: bool = _f(False, "train a LoRA adapter on every linear layer but the output head instead of all weights; "
                    "saves OUT/adapter and the merged model in OUT/model", "lora", True)
    lora_r: int = _f(8, "LoRA rank (paper's code: 8)", "lora", True, lo=1)
    lora_alpha: int = _f(32, "LoRA scaling numerator: updates are scaled by alpha / r (paper's code: "
                         "32)", "lora", True, lo=0, above=True)
    lora_dropout: float = _f(0.05, "dropout on the LoRA branch's input (paper's code: 0.05)", "lora", True, lo=0, hi=1)
    # --- optimisation ---
    epochs: float = _f(5, "passes over the training data (unlearning: over the forget set)", "train", True, lo=0,
                       above=True)
    lr: float = _f(1e-5, "peak learning rate (AdamW; below 1e38, what float32 weights can take)", "train", True,
                   lo=0, hi=1e38)
    batch_size: int = _f(4, "examples per device per micro-step", "train", True, lo=1)
    effective_batch: int = _f(32, "examples per optimiser step over all processes, when --grad-accum is not given: "
                              "the accumulation is effective_batch / (batch_size x processes), so a run takes "
                              "the same steps on 1 or 8 GPUs (paper: 32 = 4 per device x 4 accumulation x 2 GPUs)",
                              "train", True, lo=1)
    grad_accum: int | None = _f(None, "micro-steps accumulated per optimiser step (default: from --effective-batch)",
                                "train", True, lo=1)
    weight_decay: float = _f(0.01, "AdamW weight decay", "train", True, lo=0)
    optim: str = _f("adamw", "optimiser: adamw (torch), adamw_fused (torch's one-pass kernel: the same update, "
                    "rounded differently in the last bit; about 4x faster a step on a CPU) or adamw_8bit "
                    "(bitsandbytes, CUDA; 8-bit optimiser states)", "train", True)
    warmup: int | None = _f(None, "linear warm-up steps (default, as officially: unlearning one epoch of steps when an "
                            "epoch has more than one, else none; fine-tuning max(1, steps / "
                                "epochs))", "train", True, lo=0)
    lr_schedule: str = _f("linear", "learning rate after the warm-up: linear (decays to 0 at the last step, as "
                          "officially), constant (WMDP's RMU) or cosine (RWKU's: to 0 on a half cosine)", "train", True)
    seed: int = _f(1001, "random seed (0 to 2^32 - 1)", "train", True, lo=0, hi=2**32)
    max_length: int | None = _f(None, "longest training sequence in tokens (default, as officially: 500; 300 for the "
                                "real-world layout)", "train", True, lo=2)
    mixed_precision: str = _f("auto", "mixed precision: auto (bf16 autocast over float32 weights on a GPU "
                              "that supports it, else none), no, bf16 or fp16", "train", True)
    gradient_checkpointing: bool = _f(False, "trade compute for memory by recomputing activations", "train")
    chunked_logits: bool | None = _f(None, "compute the loss terms' logits a chunk of positions at a time, never the "
                                     "whole batch x length x vocabulary tensor (same values; default: on when the "
                                     "vocabulary has 32,000 tokens or more and the output head is not sharded)",
                                     "train")
    # --- data ---
    data: str | None = _f(None, "data: a TOFU-layout folder, a real-world-layout folder, or "
                          "locuslab/TOFU", "data", True)
    split: str = _f("forget01", "TOFU split: forget01, forget05 or forget10 (MUSE: forget, scal/forget_N, "
                    "sust/forget_N; RWKU: a target N, targets N-M, optionally /phi3 or /passage)", "data", True)
    task_id: int | None = _f(None, "task of the split (TOFU 1..10; real world: one person, or all), as a number or "
                             "'all' (default, as officially: TOFU task 1; the real-world layout every person at "
                             "once)", "data", True, lo=1)
    benchmark: str = _f("closer-look", "evaluation protocol: closer-look (the paper's: its task layout, 18-value Model "
                        "Utility, Forget Efficacy) or tofu (the TOFU standard as open-unlearning computes it: the hub "
                        "configs of locuslab/TOFU or a snapshot folder of them, 9-value Model Utility, Forget Quality, "
                        "privleak; prompts, lengths and encoding as its configs), muse (raw-text unlearning of "
                        "muse-bench/MUSE-News or -Books or a snapshot folder: VerbMem, KnowMem, PrivLeak), wmdp "
                        "(lm-eval's wmdp_bio, wmdp_cyber and mmlu after unlearning --forget/--retain "
                        "text) or rwku (real people of jinzhuoran/RWKU or a snapshot folder, --split N or N-M: "
                        "forget probes at three levels, neighbours, MIA, utility)", "data", True)
    # --- unlearning ---
    forget: str | None = _f(None, "your own forget set (JSON lines with question and answer)", "unlearn", True)
    retain: str | None = _f(None, "your own retain set (JSON lines with question and answer)", "unlearn", True)
    idk: str | None = _f(None, "refusal sentences for IDK/DPO/AP, one per line (default: the official "
                         "idontknow.jsonl when it sits in the --data folder or its parent, else a built-in list)",
                         "unlearn", True)
    method: str = _f("ME+GD", "unlearning method: FORGET[+REG], e.g. ME+GD, IDK+AP, NPO+KL, GA, LLMU",
                     "unlearn", True)
    method_args: dict | None = _f(None, "a hyper-parameter of the method's terms, NAME=VALUE or TERM.NAME=VALUE "
                                  "(repeatable; e.g. beta=0.2, AP.beta=0.5; the names each method takes are "
                                  "listed in docs/methods.md)", "unlearn", True)
    forget_coeff: float | None = _f(None, "weight of the forget term (default: the term's, as officially: 1.0; ME 0.1, "
                                    "0.5 on the real-world layout, 1.0 in continual runs)", "unlearn", True, lo=0)
    reg_coeff: float | None = _f(None, "weight of the regulariser (default: the term's, 1.0)", "unlearn", True, lo=0)
    mask: bool | None = _f(None, "mask question tokens out of the forget loss (default: the term's, on; off for ME)",
                           "unlearn", True)
    fix_ref_model: bool = _f(False, "continual: keep the original model as the reference instead of the previous one",
                             "unlearn")
    ref_model: str | None = _f(None, "reference model folder (default: the model being unlearned, before training)",
                               "unlearn", True)
    # --- evaluation ---
    eval: bool = _f(True, "evaluate after unlearning (--no-eval skips it)", "eval")
    eval_data: str | None = _f(None, "evaluation data folder (*_perturbed.json files) when it differs from --data",
                               "eval")
    embedder: str | None = _f(None, "sentence embedder for Cosine Similarity: a sentence-transformers folder or hub id "
                              "(default: the packaged all-MiniLM-L6-v2)", "eval")
    nli: str | None = _f(DEFAULT_NLI, "NLI model for the Entailment Score: a folder or hub id; none disables it "
                         "(the default is reported unavailable when it cannot be loaded; any other that cannot is "
                         "an error)", "eval")
    holdout: str | None = _f(None, "JSON-lines rows like the forget set's (question, answer) that were never "
                             "trained on: adds membership-inference AUCs, forget against holdout (LOSS, ZLib, "
                             "Min-K%, Min-K%++; 0.5 = indistinguishable)", "eval")
    baseline: str | None = _f(None, "the evaluation of the model before unlearning (an `unlearn eval` output "
                              "folder): the evaluation then prints a before/after table and writes OUT/report",
                              "eval")
    eval_batch_size: int = _f(EVAL_BATCH_SIZE, "questions per batch when evaluating", "eval", lo=1)
    gen_batch_size: int | None = _f(None, "questions decoded together when generating answers (default: 4 x "
                                    "--eval-batch-size, 16 x on a CPU; an answer leaves its batch as it ends; "
                                    "answers do not depend on it)", "eval", True, lo=1)
    eval_every: int | None = _f(None, "also evaluate every N optimiser steps while unlearning (and before the first): "
                                "one row per evaluation in OUT/eval_log.jsonl, drawn against steps by unlearn report",
                                "eval", True, lo=1)
    eval_sets: str | None = _f(None, "the sets --eval-every evaluates, comma-separated (e.g. forget,retain; default: "
                               "every set); --benchmark rwku: the groups evaluated (forget,neighbor,mia,utility)",
                               "eval", True)
    keep: str = _f("last", "the model saved: last (the final weights), or best (with --eval-every: the evaluated "
                   "weights with the highest Forget Efficacy among those whose Model Utility is at least --mu-floor "
                   "times the starting one)", "eval", True)
    mu_floor: float = _f(0.9, "--keep best: the share of the starting Model Utility a kept model must keep", "eval",
                         True, lo=0)
    retain_model: str | None = _f(None, "for Forget Quality: a retain model folder, or a folder with its saved "
                                  "evaluation (eval_Forget.jsonl)", "eval")
    retain_logs: str | None = _f(None, "--benchmark tofu: a retain model's TOFU_EVAL.json (open-unlearning's or "
                                 "unlearn's, "
                                 "or the folder holding it) for Forget Quality and privleak, without re-evaluating it",
                                 "eval")
    # --- downstream ---
    downstream: str | None = _f(None, "lm-eval tasks to run after unlearning, comma-separated; the paper's: "
                                "arc_challenge,mmlu,truthfulqa_mc1,triviaqa,gsm8k (or 'paper'); needs lm-eval",
                                "downstream")
    downstream_limit: int | None = _f(None, "items per downstream task, for quick checks (None: every item)",
                                      "downstream", lo=1)
    downstream_include: str | None = _f(None, "folder of custom lm-eval task YAML files for --downstream", "downstream")
    # --- audit (unlearn audit; --audit on unlearn run) ---
    audit: bool = _f(False, "after unlearning, audit the saved model into OUT/audit (see unlearn audit)", "audit")
    attacks: str = _f("mia,memorization,relearn,quantization,prompts", "audit attacks to run, comma-separated: "
                      "mia (membership inference: needs --holdout or the data folder's holdoutNN.json), memorization, "
                      "relearn, quantization, prompts", "audit")
    target_model: str | None = _f(None, "the model before unlearning, audited beside it: relearning recovery is "
                                  "measured "
                                  "against it (unlearn run --audit: the run's --model)", "audit")
    relearn_steps: int = _f(20, "relearning attack: fine-tuning steps on part of the forget set", "audit", lo=1)
    relearn_lr: float = _f(1e-5, "relearning attack: peak learning rate (AdamW, decaying linearly, no "
                           "warm-up)", "audit", lo=0, above=True)
    relearn_batch_size: int = _f(4, "relearning attack: examples per step (per process, under several)", "audit", lo=1)
    relearn_fraction: float = _f(0.5, "relearning attack: share of the forget set relearned on (drawn with --seed); "
                                 "the forget metrics are measured on the rest", "audit", lo=0, above=True, hi=1)
    save_relearned: bool = _f(False, "keep the relearned model in OUT/relearn/model", "audit")
    quant_bits: str = _f("8,4", "quantization attack: weight bit widths, comma-separated", "audit")
    quant_group_size: int = _f(128, "quantization attack: weights per group sharing a scale and zero point", "audit",
                               lo=1)
    quant_backend: str = _f("auto", "quantization attack: simulated (round-to-nearest in place of the weights, any "
                            "device), bitsandbytes (a GPU and the bitsandbytes package: its 8-bit and NF4 kernels) or "
                            "auto (bitsandbytes when both are there)", "audit")
    icl_examples: int = _f(3, "prompt attack: retained question/answer pairs shown before a forget question", "audit",
                           lo=1)
    prefix_fraction: float = _f(0.5, "prompt attack: share of the answer's words given as the start of the reply",
                                "audit", lo=0, above=True, hi=1)
    mia_k: float = _f(MIN_K, "membership inference: the k of Min-K% and Min-K%++ (share of tokens)", "audit", lo=0,
                      above=True)
    # --- outputs ---
    out: str | None = _f(None, "output folder", "out")
    overwrite: bool = _f(False, "allow writing into an output folder that already holds results", "out")
    save_every: int | None = _f(None, "write a resumable checkpoint to OUT/checkpoint every N optimiser steps "
                                "(deleted once the final model is saved)", "resume", lo=1)
    resume: bool = _f(False, "continue the interrupted run in --out from its checkpoint (same settings)", "resume")
    # fmt: on

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, self.to_yaml())


FIELD_NAMES = {f.name for f in fields(Config)}


def save_fields(cfg: Config, path: str | Path, groups: tuple[str, ...], extra: tuple[str, ...] = ()) -> None:
    """Write the fields of ``groups`` (and ``extra``) only (an evaluation's ``eval_config.yaml`` has no
    training keys)."""
    keep = fields_of(*groups) + list(extra)
    atomic_write_text(path, yaml.safe_dump({k: v for k, v in cfg.to_dict().items() if k in keep}, sort_keys=False))


RENAMED = {"beta": "beta is a method argument now: method_args: {beta: 0.1} (flag: --method-arg beta=0.1)"}


def fields_of(*groups: str, exclude: tuple[str, ...] = ()) -> list[str]:
    """Names of the fields in ``groups``, in schema order."""
    return [f.name for f in fields(Config) if f.metadata["group"] in groups and f.name not in exclude]


def trajectory_fields() -> list[str]:
    """The fields a run's result depends on: a checkpoint is resumed only under the same values."""
    return [f.name for f in fields(Config) if f.metadata["trajectory"]]


def default(name: str) -> Any:
    """The schema's default of a field."""
    return Config.__dataclass_fields__[name].default


PATH_FIELDS = (
    "model",
    "ref_model",
    "retain_model",
    "retain_logs",
    "data",
    "eval_data",
    "forget",
    "retain",
    "idk",
    "embedder",
    "holdout",
    "baseline",
    "target_model",
    "downstream_include",
    "out",
)
_PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$")


def check_placeholders(cfg: Config, where: str | None = None) -> None:
    """A shipped config's unfilled placeholder (``model: TARGET_MODEL_DIR``) is refused before
    anything runs, naming the key to set, instead of being looked up on the hub after training."""
    for name in PATH_FIELDS:
        value = getattr(cfg, name)
        if isinstance(value, str) and _PLACEHOLDER.match(value) and not Path(value).exists():
            prefix = f"{where}: " if where else ""
            raise ConfigError(
                f"{prefix}'{name}' is still the placeholder {value}: set it in the file or with "
                f"--{name.replace('_', '-')} PATH"
            )


def as_mapping(value: Any, name: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"config: '{name}' must be a mapping of names to values, got {value!r}")
    return {str(k): v for k, v in value.items()}


def as_int(value: Any) -> int:
    """``value`` as an integer; a bool or a fractional number is refused (``ValueError``), not truncated."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(value)
    return int(value)


def _as_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(value)
    return float(value)


def parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def check_types(cfg: Config) -> None:
    """Every value converted to its field's type and checked against its domain; one line each."""
    for f in fields(Config):
        value = getattr(cfg, f.name)
        t = str(f.type)
        if value is None:
            if "None" not in t:
                raise ConfigError(f"config: '{f.name}' may not be empty")
            continue
        if t.startswith("dict"):
            setattr(cfg, f.name, as_mapping(value, f.name))
        elif t.startswith("bool"):
            if isinstance(value, str):
                try:
                    value = parse_bool(value)
                except argparse.ArgumentTypeError:
                    raise ConfigError(f"config: '{f.name}' must be true or false, got {value!r}") from None
            if not isinstance(value, bool):
                raise ConfigError(f"config: '{f.name}' must be true or false, got {value!r}")
            setattr(cfg, f.name, value)
        elif t.startswith(("int", "float")):
            kind = "an integer" if t.startswith("int") else "a number"
            try:
                number = (as_int if t.startswith("int") else _as_float)(value)
            except (TypeError, ValueError, OverflowError):
                raise ConfigError(f"config: '{f.name}' must be {kind}, got {value!r}") from None
            _check_domain(f, number)
            setattr(cfg, f.name, number)


def _check_domain(f, number: float) -> None:
    lo, above, hi = f.metadata["lo"], f.metadata["above"], f.metadata["hi"]
    if not math.isfinite(number):
        raise ConfigError(f"config: '{f.name}' must be finite, got {number}")
    if lo is not None and (number < lo or (above and number == lo)):
        raise ConfigError(f"config: '{f.name}' must be {'above' if above else 'at least'} {lo:g}, got {number:g}")
    if hi is not None and number >= hi:
        raise ConfigError(f"config: '{f.name}' must be below {hi:g}, got {number:g}")


INPUT_FLAGS = tuple(f for f in PATH_FIELDS if f != "out")  # every path a command reads


def inputs_of(cfg: Config) -> dict[str, str | None]:
    """The paths a run reads, by flag: ``--overwrite`` never replaces anything they point into."""
    return {"--" + name.replace("_", "-"): getattr(cfg, name) for name in INPUT_FLAGS}
