"""``unlearn plan``: the peak training memory of a method on a model, per device, from its config alone.

No weight is loaded: the parameter count comes from the model built on the ``meta`` device. The
estimate is the sum of the parts that are alive together in the backward pass of a step after
the first (when the optimiser states exist):

* **weights**: every parameter, in the training dtype (float32 master weights; ``--lora``: the base
  as loaded, the adapters in float32); ZeRO-3 divides them over the processes, plus the largest
  layer gathered whole;
* **gradients** and **optimiser states** of the trainable parameters: 4 bytes per gradient, AdamW's two
  moments 8 bytes (``adamw_8bit``: 2); ZeRO-2 and ZeRO-3 divide both, ZeRO-1 the states;
* **reference**: a frozen copy of the model for the terms that read a reference model's logits
  (KL, UNDIAL, LLMU, RMU) unless LoRA (the adapter is switched off instead: no copy); cached NLLs
  (NPO, DPO) cost nothing here;
* **activations**: what the decoder layers save for backward, ``ACT_PER_TOKEN_LAYER`` elements per
  token per layer in units of the hidden and intermediate sizes (the same per-token count as
  Korthikanti et al. 2022 for a Llama block), in the activation dtype (bf16 under mixed precision,
  else float32), for every sequence of every batch part a step runs; with gradient checkpointing,
  the layer inputs only plus one layer recomputed; eager attention adds its score matrices;
* **logits**: the float32 logits each part keeps for its loss, and their log-softmax (two
  batch × length × vocabulary tensors per part, plus one during the backward); with chunked
  logits, three chunks' worth.

``perf/plan_check.py`` measures real peaks on CPU for small models against these
estimates; docs/performance.md gives the error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

from unlearn import hub
from unlearn.chunked import CHUNK_ELEMENTS, MIN_VOCAB
from unlearn.errors import ConfigError, ModelError
from unlearn.methods import build_objective
from unlearn.presets import cache_dir, smollm2_gguf

GiB = 2**30
ACT_PER_TOKEN_LAYER = (14, 5)  # elements saved per token per layer: 14 × hidden + 5 × intermediate
LORA_ACTIVATIONS = 1.8  # measured: peft's adapters save about 0.8× more (perf/plan_check.py)
LOGITS_KEPT = {"ME": 1, "KL": 3, "UNDIAL": 3, "CE-U": 3, "LLMU": 2}  # (B, T, V) float32 tensors a term keeps
# per part it reads (the logits and what its loss saves for backward); the others keep 2


@dataclass(frozen=True)
class Shape:
    """What the estimate needs of a model, read from its config."""

    name: str
    params: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    vocab: int
    largest_layer: int  # parameters of one decoder layer
    lora_params_per_rank: int  # Σ (in + out) over the linear layers LoRA adapts (all but the head)
    tied: bool


@dataclass(frozen=True)
class Setting:
    """The training settings the memory depends on."""

    method: str = "ME+GD"
    batch_size: int = 4
    max_length: int = 500
    lora: bool = False
    lora_r: int = 8
    zero: int = 0
    processes: int = 1
    optim: str = "adamw"
    mixed_precision: bool = True
    gradient_checkpointing: bool = False
    chunked_logits: bool | None = None
    attention: str = "sdpa"

    def flags(self) -> str:
        out = [f"--batch-size {self.batch_size}"]
        out += ["--lora"] if self.lora else []
        out += [f"--optim {self.optim}"] if self.optim != "adamw" else []
        out += ["--gradient-checkpointing"] if self.gradient_checkpointing else []
        out += ["--no-chunked-logits"] if self.chunked_logits is False else []
        out += [f"ZeRO-{self.zero} on {self.processes} processes"] if self.zero else []
        return " ".join(out)


def model_config(name: str, trust_remote_code: bool = False):
    """The config of a model folder, a ``config.json`` file, a hub id or a preset, no weights read."""
    if name == "tiny":
        return LlamaConfig(
            vocab_size=1024,
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            tie_word_embeddings=True,
        )
    try:
        if name == "smollm2-135m":
            cached = cache_dir() / "smollm2-135m"
            if (cached / "config.json").is_file():
                return AutoConfig.from_pretrained(cached)
            gguf = smollm2_gguf()
            return AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        path = Path(name)
        if path.is_file() and path.suffix == ".json":
            path = path.parent
        if path.exists() or name.startswith(("/", ".", "~")):
            return AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        return hub.fetch(name, ModelError, AutoConfig.from_pretrained, name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"--model {name}: no model config found ({str(e).splitlines()[0]})") from None


def model_shape(name: str, trust_remote_code: bool = False) -> Shape:
    """Parameter counts of the model of ``name``, built on the meta device (no memory, no weights)."""
    config = model_config(name, trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    head = model.get_output_embeddings()
    params = sum(p.numel() for p in model.parameters())  # tied weights counted once
    layers = [m for n, m in model.named_modules() if re.search(r"(^|\.)(layers|h)\.\d+$", n)]
    largest = max((sum(p.numel() for p in m.parameters()) for m in layers), default=0)
    lora = sum(
        m.in_features + m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head
    )
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = int(getattr(text, "hidden_size", 0) or getattr(text, "n_embd", 0))
    inter = int(getattr(text, "intermediate_size", 0) or getattr(text, "n_inner", 0) or 4 * hidden)
    heads = int(getattr(text, "num_attention_heads", 0) or getattr(text, "n_head", 0) or 1)
    return Shape(
        name,
        params,
        hidden,
        inter,
        len(layers),
        heads,
        int(head.out_features),
        largest,
        lora,
        bool(getattr(text, "tie_word_embeddings", False)),
    )


@dataclass
class Estimate:
    parts: dict[str, float]  # component -> bytes per device

    @property
    def total(self) -> float:
        return sum(self.parts.values())


def estimate(shape: Shape, s: Setting, device: str = "cuda") -> Estimate:
    """Peak memory per device of one training step of ``s`` on ``shape`` (bytes, see the module docstring)."""
    if s.zero not in (0, 1, 2, 3):
        raise ConfigError(f"--zero: 0, 1, 2 or 3, got {s.zero}")
    objective = build_objective(s.method)
    n = max(1, s.processes)
    trainable = shape.lora_params_per_rank * s.lora_r if s.lora else shape.params
    if objective.forget.trainable is not None and not s.lora:  # RMU: some MLP projections only
        trained_layers = len(str(objective.forget_args.get("layers", "")).split(","))
        trainable = shape.hidden * shape.intermediate * trained_layers  # one down-projection per trained layer
    weights = shape.params * 4 + (trainable * 4 if s.lora else 0)
    if s.zero == 3:
        weights = weights / n + shape.largest_layer * (2 if s.mixed_precision else 4)
    grads = trainable * 4 / (n if s.zero >= 2 else 1)
    states = trainable * (2 if s.optim == "adamw_8bit" else 8) / (n if s.zero >= 1 else 1)
    reference = 0.0
    if objective.needs_ref_model and not s.lora:
        reference = shape.params * 4 / (n if s.zero == 3 else 1)
    act_bytes = 2 if (s.mixed_precision and device != "cpu") else 4
    sequences = len(objective.parts) * s.batch_size
    tokens = sequences * s.max_length
    a, b = ACT_PER_TOKEN_LAYER
    per_layer = tokens * (a * shape.hidden + b * shape.intermediate) * act_bytes
    if s.lora:
        per_layer *= LORA_ACTIVATIONS
    if s.attention == "eager":
        per_layer += sequences * shape.heads * s.max_length**2 * act_bytes * 2
    if s.gradient_checkpointing:
        activations = tokens * shape.hidden * act_bytes * shape.layers + per_layer
    else:
        activations = per_layer * shape.layers
    activations += per_layer  # the gradients of one layer's activations, in the backward pass
    chunk = s.chunked_logits if s.chunked_logits is not None else (shape.vocab >= MIN_VOCAB and s.zero != 3)
    if chunk:
        logits = 3 * min(tokens, max(1, CHUNK_ELEMENTS // shape.vocab)) * shape.vocab * 4
    else:
        per_part = s.batch_size * s.max_length * shape.vocab * 4
        kept = sum(LOGITS_KEPT.get(t.name, 2) * len(t.parts) for t in objective.terms)
        logits = (kept + (3 if objective.needs_ref_model else 1)) * per_part  # + the backward's own buffers
    return Estimate(
        {
            "weights": weights,
            "gradients": grads,
            "optimiser states": states,
            "reference": reference,
            "activations": activations,
            "logits": logits,
        }
    )


def alternatives(shape: Shape, s: Setting, budget: float, device: str = "cuda") -> list[tuple[Setting, Estimate]]:
    """Settings around ``s`` that fit ``budget`` bytes per device, cheapest change first."""
    options = []
    for gc in (s.gradient_checkpointing, True):
        for optim in dict.fromkeys((s.optim, "adamw_8bit")):
            for lora in dict.fromkeys((s.lora, True)):
                for bs in sorted({s.batch_size, 2, 1}, reverse=True):
                    if bs > s.batch_size:
                        continue
                    c = replace(s, gradient_checkpointing=gc, optim=optim, lora=lora, batch_size=bs)
                    e = estimate(shape, c, device)
                    if e.total <= budget:
                        changes = (
                            (gc != s.gradient_checkpointing)
                            + (optim != s.optim)
                            + (lora != s.lora)
                            + (bs != s.batch_size)
                        )
                        options.append((changes, -bs, c, e))
    options.sort(key=lambda x: (x[0], x[1], x[3].total))
    seen, out = set(), []
    for _, _, c, e in options:
        if c.flags() not in seen:
            seen.add(c.flags())
            out.append((c, e))
    return out[:6]


def parse_size(text: str) -> float:
    """``80GiB``, ``80GB``, ``512MiB``, ``80`` (GiB) → bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(GiB|GB|G|MiB|MB|M|TiB|TB)?\s*", str(text), re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"--gpu-memory: expected a size like 80GiB, got {text!r}")
    unit = (m.group(2) or "GiB").lower()
    scale = {"gib": GiB, "gb": 1e9, "g": GiB, "mib": 2**20, "mb": 1e6, "m": 2**20, "tib": 2**40, "tb": 1e12}[unit]
    return float(m.group(1)) * scale


def print_plan(shape: Shape, s: Setting, device: str, budget: float | None) -> Estimate:
    e = estimate(shape, s, device)
    console = Console(width=110)
    title = (
        f"{shape.name}: {shape.params / 1e9:.2f}B parameters, vocabulary {shape.vocab}, {shape.layers} layers; "
        f"{s.method}, {s.flags()}, length {s.max_length}, {'bf16 autocast' if s.mixed_precision else 'float32'}"
    )
    console.print(title)
    table = Table()
    table.add_column("per device")
    table.add_column("GiB", justify="right")
    for k, v in e.parts.items():
        table.add_row(k, f"{v / GiB:.2f}")
    table.add_row("total (estimated peak)", f"{e.total / GiB:.2f}")
    console.print(table)
    if budget is not None:
        if e.total <= budget:
            console.print(f"fits in {budget / GiB:.1f} GiB")
        else:
            console.print(f"does not fit in {budget / GiB:.1f} GiB; settings that do:")
            found = alternatives(shape, s, budget, device)
            for c, ce in found:
                console.print(f"  {c.flags()}: {ce.total / GiB:.2f} GiB")
            if not found:
                console.print(
                    "  none of batch size 1-2, gradient checkpointing, 8-bit AdamW and LoRA on one device: "
                    "shard with ZeRO-3 over more processes (--zero 3 --processes N)"
                )
    return e
