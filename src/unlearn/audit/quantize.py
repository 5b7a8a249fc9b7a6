"""The quantization attack's weights: round-to-nearest (RTN) weight-only quantization.

Zhang et al. (ICLR 2025, "Catastrophic Failure of LLM Unlearning via Quantization") found that an
unlearned model quantized to 4 bits often knows the forgotten answers again: unlearning moved the
weights by less than a quantization step. :func:`quantized_copy` simulates what a user's
quantized deployment computes: every linear layer's weight but the output head's is rounded to
``bits`` bits in groups of ``group_size`` input weights, each group with its own scale and zero
point (asymmetric min-max, as AWQ's ``pseudo_quantize_tensor``), and stored back de-quantized, so
the copy runs on any device. With ``--quant-backend bitsandbytes`` (a GPU and the package) the
model is loaded with bitsandbytes' own 8-bit and NF4 kernels instead (another rounding, so other
numbers; the backend is recorded in ``audit.json``).
"""

from __future__ import annotations

import copy
import importlib.util

import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from unlearn.errors import ConfigError, DependencyError

BACKENDS = ("auto", "simulated", "bitsandbytes")


@torch.no_grad()
def rtn(weight: torch.Tensor, bits: int, group_size: int = 128) -> torch.Tensor:
    """``weight`` (out × in) rounded to ``bits`` bits per group of ``group_size`` consecutive input
    weights and de-quantized, in its own dtype. Per group: ``scale = (max − min) / (2^bits − 1)``
    (at least 1e-5), ``zero = clamp(−round(min / scale), 0, 2^bits − 1)``,
    ``w ≈ (clamp(round(w / scale) + zero, 0, 2^bits − 1) − zero) × scale``."""
    if bits < 1:
        raise ValueError(f"bits must be at least 1, got {bits}")
    w = weight.detach().float().reshape(weight.shape[0], -1)
    top = 2**bits - 1
    out = torch.empty_like(w)
    for start in range(0, w.shape[1], group_size):
        g = w[:, start : start + group_size]
        lo, hi = g.amin(dim=1, keepdim=True), g.amax(dim=1, keepdim=True)
        scale = ((hi - lo) / top).clamp(min=1e-5)
        zero = (-torch.round(lo / scale)).clamp(0, top)
        out[:, start : start + group_size] = (torch.clamp(torch.round(g / scale) + zero, 0, top) - zero) * scale
    return out.reshape(weight.shape).to(weight.dtype)


def quantized_layers(model) -> list[tuple[str, torch.nn.Linear]]:
    """The linear layers quantized: every one but the output head."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not head]


def quantized_copy(model, bits: int, group_size: int = 128):
    """A copy of ``model`` with its linear weights (but the head's) RTN-quantized; ``model`` is
    left as it was."""
    q = copy.deepcopy(model)
    layers = quantized_layers(q)
    if not layers:
        raise ConfigError("the quantization attack found no linear layer to quantize in this model")
    for _, layer in layers:
        layer.weight.data = rtn(layer.weight.data, bits, group_size)
    return q


def bitsandbytes_available() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None


def backend(name: str) -> str:
    """The backend ``name`` asks for, resolved: ``auto`` is bitsandbytes on a GPU that has it."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown --quant-backend {name!r} (valid: {', '.join(BACKENDS)})")
    has_bnb = bitsandbytes_available()
    if name == "bitsandbytes" and not has_bnb:
        raise DependencyError(
            "--quant-backend bitsandbytes needs a CUDA GPU and the bitsandbytes package "
            "(pip install bitsandbytes); --quant-backend simulated runs anywhere"
        )
    if name == "auto":
        return "bitsandbytes" if has_bnb else "simulated"
    return name


def check_bits(text: str, backend_name: str = "simulated") -> list[int]:
    """``--quant-bits``: bit widths, comma-separated (bitsandbytes: 8 and 4 only)."""
    try:
        bits = [int(b) for b in str(text).split(",") if b.strip()]
    except ValueError:
        raise ConfigError(f"--quant-bits: expected bit widths like 8,4, got {text!r}") from None
    if not bits or any(not 1 <= b <= 16 for b in bits):
        raise ConfigError(f"--quant-bits: expected bit widths between 1 and 16, got {text!r}")
    if backend_name == "bitsandbytes" and any(b not in (4, 8) for b in bits):
        raise ConfigError("--quant-backend bitsandbytes quantizes to 8 or 4 bits only")
    return bits


def load_bitsandbytes(path, bits: int, trust_remote_code: bool = False):
    """The model at ``path`` loaded by bitsandbytes to ``bits`` bits (8: LLM.int8(); 4: NF4)."""
    config = (
        BitsAndBytesConfig(load_in_8bit=True)
        if bits == 8
        else BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    )
    return AutoModelForCausalLM.from_pretrained(
        path,
        quantization_config=config,
        device_map={"": torch.cuda.current_device()},
        trust_remote_code=trust_remote_code,
    )
