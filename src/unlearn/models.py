"""Loading and saving causal language models.

``load_model`` takes a preset name (:mod:`unlearn.presets`: ``tiny``, ``smollm2-135m``), a local
folder or a hub id. Weights load from safetensors with ``trust_remote_code=False`` unless the
caller asks otherwise. Every write is atomic: a temporary folder next to the destination is
filled, then renamed into place.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

from unlearn import hub
from unlearn.errors import ConfigError, ModelError
from unlearn.io import publish_dir, raise_if_disk_full, temp_dir_next_to
from unlearn.presets import build_tiny_model, build_tiny_tokenizer, smollm2_path

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "spiece.model")
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


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
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_model(
    name_or_path: str | os.PathLike,
    *,
    dtype: str | torch.dtype = "auto",
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    texts: list[str] | None = None,
    before_weights=None,
):
    """Load ``(model, tokenizer)`` from a preset, a local folder or a hub id.

    The model comes back as loaded (eval mode). ``texts`` trains the ``tiny`` preset's
    tokenizer. A tokenizer without a pad token pads with EOS; one without EOS is an error.
    ``before_weights(tokenizer)`` runs once the tokenizer is loaded, before the weights are read
    (checks that need the tokenizer only: the data's encoding).
    """
    torch_dtype = resolve_dtype(dtype)
    name = str(name_or_path)
    if name == "tiny":
        if not texts:
            raise ValueError("the tiny preset trains its tokenizer in-process: pass texts=[...]")
        tokenizer = build_tiny_tokenizer(texts)
        if before_weights is not None:
            before_weights(tokenizer)
        model = build_tiny_model(tokenizer).to(torch_dtype)
        if attn_implementation is not None:
            model.set_attn_implementation(attn_implementation)
    else:
        path = smollm2_path() if name == "smollm2-135m" else _local_or_hub(name)
        if isinstance(path, Path):
            _check_folder(path)
            check_config(path)
        if isinstance(path, Path) and not trust_remote_code:
            refuse_custom_code(path)
        kwargs = {"trust_remote_code": trust_remote_code}

        def load():
            tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
            _require_eos(tokenizer, name)  # before the weights are read
            if before_weights is not None:
                before_weights(tokenizer)
            if attn_implementation is not None:
                kwargs["attn_implementation"] = attn_implementation
            return _from_pretrained(path, dtype=torch_dtype, **kwargs), tokenizer

        try:
            model, tokenizer = load() if isinstance(path, Path) else hub.fetch(name, ModelError, load)
        except (OSError, SafetensorError, pickle.UnpicklingError, RuntimeError, ValueError) as e:
            # missing/damaged files, weights that do not fit the config, no hub, no network
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            offline = (
                " (HF_HUB_OFFLINE=1: only local folders and the presets load)"
                if os.environ.get("HF_HUB_OFFLINE") == "1" and not isinstance(path, Path)
                else ""
            )
            raise ModelError(f"could not load the model {name}: {first}{offline}") from e
    _check_special_tokens(model, tokenizer, name)
    return model, tokenizer


def check_source(name: str, flag: str) -> None:
    """A model named by ``flag`` that can be found: a preset, a model folder, or a hub id (read later)."""
    if str(name) in ("tiny", "smollm2-135m"):
        return
    try:
        path = _local_or_hub(str(name))
    except ModelError as e:
        raise ModelError(f"{flag}: {e}") from None
    if isinstance(path, Path):
        _check_folder(path)
        check_config(path)


def _check_folder(path: Path) -> None:
    """A model path that is not a Hugging Face folder gets a message that says what it is."""
    if path.is_file():
        if path.suffix == ".gguf":
            raise ModelError(
                f"{path}: a GGUF file; GGUF loads through the smollm2-135m preset only. Convert it once "
                "with transformers (AutoModelForCausalLM.from_pretrained(folder, gguf_file=name), then "
                "save_pretrained) and pass the folder"
            )
        raise ModelError(f"{path}: a file, not a model folder (config.json, weights and tokenizer files)")
    if (path / "config.json").is_file() and not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ModelError(
            f"{path}: no tokenizer files ({', '.join(TOKENIZER_FILES)}); save the tokenizer with the model"
        )


def refuse_custom_code(path: Path) -> None:
    """Refuse a model folder that asks to run its own Python code, before transformers reads it.

    Such a folder names its classes in ``auto_map`` (config or tokenizer config), or has a
    ``model_type`` transformers does not know and a ``.py`` file to supply it. Reading two JSON
    files imports nothing; with ``--trust-remote-code`` this check is skipped.
    """
    reasons, model_type = [], None
    for fname in ("config.json", "tokenizer_config.json"):
        f = path / fname
        if not f.is_file():
            continue
        try:
            conf = json.loads(f.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelError(f"{f}: not valid JSON ({e})") from None
        if not isinstance(conf, dict):
            raise ModelError(f"{f}: expected a JSON object")
        if conf.get("auto_map"):
            reasons.append(f"{fname} maps classes to its own code (auto_map: {json.dumps(conf['auto_map'])})")
        if fname == "config.json":
            model_type = conf.get("model_type")
    code = sorted(p.name for p in path.glob("*.py"))
    if model_type is not None and model_type not in CONFIG_MAPPING_NAMES:
        if not code:
            raise ModelError(f"{path}: model_type '{model_type}' is unknown to this version of transformers")
        reasons.append(f"model_type '{model_type}' is unknown to transformers and {', '.join(code)} would supply it")
    if reasons:
        raise ModelError(
            f"{path}: the model folder asks to run its own Python code ({'; '.join(reasons)}); "
            "refusing to load it. Pass --trust-remote-code only if you have read that code and trust it"
        )


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
        raise ModelError(f"model path does not exist: {name}")
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
        raise ModelError(f"tokenizer has no EOS token ({name}); unlearning needs one to end every answer")


def check_config(path: Path) -> None:
    """What a model folder's ``config.json`` says that cannot work, found before anything loads: a
    dtype torch does not have, special token ids outside the vocabulary."""
    f = path / "config.json"
    try:
        conf = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # (a missing or invalid config.json is reported by the loader / refuse_custom_code)
    if not isinstance(conf, dict):
        return
    for key in ("dtype", "torch_dtype"):
        value = conf.get(key)
        if isinstance(value, str) and value != "auto" and not isinstance(getattr(torch, value, None), torch.dtype):
            raise ModelError(f"{f}: {key} {value!r} is not a torch dtype (e.g. float32, bfloat16, float16)")
    vocab = conf.get("vocab_size")
    if isinstance(vocab, int) and not isinstance(vocab, bool):
        for key in ("eos_token_id", "bos_token_id", "pad_token_id"):
            ids = conf.get(key)
            for i in ids if isinstance(ids, list) else [ids]:
                if isinstance(i, int) and not isinstance(i, bool) and not 0 <= i < vocab:
                    raise ModelError(f"{f}: {key} {i} lies outside the vocabulary (vocab_size {vocab})")


def _check_special_tokens(model, tokenizer, name: str) -> None:
    _require_eos(tokenizer, name)
    rows = model.get_input_embeddings().num_embeddings
    for what in ("eos", "bos", "pad"):
        i = getattr(tokenizer, f"{what}_token_id", None)
        if isinstance(i, int) and not 0 <= i < rows:
            raise ModelError(
                f"{name}: the tokenizer's {what.upper()} id {i} lies outside the model's {rows} embeddings"
            )
    if tokenizer.pad_token is None:
        log.info("%s: the tokenizer has no pad token; padding with EOS %r", name, tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    generation = getattr(model, "generation_config", None)
    if generation is not None and generation.pad_token_id is None:
        generation.pad_token_id = tokenizer.pad_token_id


def check_finite(weights, what: str) -> None:
    """Refuse weights holding NaN or infinite values (a diverged run, a task vector scaled by inf):
    such a model is neither saved nor evaluated. ``weights`` is a model or a state dict."""
    items = weights.state_dict().items() if hasattr(weights, "state_dict") else weights.items()
    for name, t in items:
        if torch.is_tensor(t) and t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ModelError(
                f"{what}: its weights hold NaN or infinite values ({bad} in {name}); it is not used. The "
                "unlearning diverged: lower --lr, check --method-arg values (e.g. a task vector alpha), or "
                "start from a healthy model"
            )


def save_model(
    model,
    tokenizer,
    out_dir: str | os.PathLike,
    state_dict: dict | None = None,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Save weights (safetensors), config and tokenizer; an existing folder is replaced whole.

    ``state_dict`` replaces the model's own weights (gathered from a sharded model, or merged
    with a LoRA adapter); ``model`` then only supplies the config. ``extra_files`` (name: text)
    are written into the folder before it is published, so it never appears without them.
    """
    out = Path(out_dir).expanduser()
    check_finite(model.state_dict() if state_dict is None else state_dict, f"the model to save in {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_next_to(out)
    try:
        # transformers saves safetensors by default (v5: always)
        model.save_pretrained(tmp, **({} if state_dict is None else {"state_dict": state_dict}))
        tokenizer.save_pretrained(tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        publish_dir(tmp, out)
    except Exception as e:  # (re-raised unless the disk is full)
        raise_if_disk_full(e, out)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
