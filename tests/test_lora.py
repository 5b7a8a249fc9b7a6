"""LoRA: only the adapter trains, the merged model is base + adapter, the reference is the base
model with the adapter off, and continual unlearning goes on from the previous merged model."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import write_jsonl
from unlearn.config import Config
from unlearn.datasets import UnlearningDataset
from unlearn.lora import apply_lora, merge_state_dict, target_modules
from unlearn.methods import build_objective, resolve
from unlearn.models import build_tiny_model, build_tiny_tokenizer, load_model
from unlearn.prompts import detect_prompt_format
from unlearn.reference import AdapterOff, reference_nlls
from unlearn.train import fit

FORGET = [{"question": f"Who wrote book {i}?", "answer": f"Author {i} wrote book {i}."} for i in range(6)]
RETAIN = [{"question": f"Where is city {i}?", "answer": f"City {i} is in country {i}."} for i in range(8)]
IDS = torch.tensor([[1, 5, 9, 20, 30, 44], [1, 7, 3, 60, 2, 11]])


@pytest.fixture(scope="module")
def tiny():
    texts = [r["question"] + " " + r["answer"] for r in FORGET + RETAIN] + ["I don't know."]
    tok = build_tiny_tokenizer(texts, vocab_size=300)
    return (
        tok,
        detect_prompt_format(tok, "tiny"),
        lambda: build_tiny_model(tok, hidden_size=32, num_layers=1, num_heads=2),
    )


def _cfg(tmp_path, method="NPO+KL", **kw):
    base = dict(
        method=method, epochs=2, lr=1e-2, batch_size=3, grad_accum=1, warmup=0, seed=0, out=str(tmp_path), lora=True
    )
    base.update(kw)
    return resolve(Config(**base))[1]


def _randomise_adapter(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_targets_every_linear_but_the_head(tiny):
    _, _, make = tiny
    names = target_modules(make())
    assert names == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = apply_lora(make(), r=8, alpha=32, dropout=0.05)
    config = model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout) == (8, 32, 0.05)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert not any("lm_head" in n or "embed_tokens" in n for n in trainable)


def test_adapter_start_is_seeded(tiny):
    """Every process draws the same adapter (ZeRO-3 and FSDP broadcast nothing); the caller's RNG is left alone."""
    _, _, make = tiny
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = {n: p for n, p in apply_lora(make(), seed=5).named_parameters() if p.requires_grad}
    assert torch.equal(torch.rand(1), expected_next)
    b = {n: p for n, p in apply_lora(make(), seed=5).named_parameters() if p.requires_grad}
    c = {n: p for n, p in apply_lora(make(), seed=6).named_parameters() if p.requires_grad}
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a if ".lora_A." in n)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_only_the_adapter_trains(tmp_path, tiny, checkpointing):
    """NPO (reference NLLs) + KL (adapter-off reference), with and without gradient checkpointing."""
    tok, fmt, make = tiny
    base = make()
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    model = apply_lora(base, gradient_checkpointing=checkpointing)
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    cfg = _cfg(tmp_path, gradient_checkpointing=checkpointing)
    obj = build_objective(cfg.method, cfg.method_args, cfg.forget_coeff, cfg.reg_coeff)
    ds = UnlearningDataset(FORGET, RETAIN, tok, fmt, obj.parts, ["I don't know."], mask_forget=cfg.mask)
    result = fit(model, tok, ds, obj, cfg, tmp_path)
    assert result.steps == 4
    trained = result.model
    for n, p in trained.get_base_model().named_parameters():
        if ".lora_" not in n:
            key = n.replace(".base_layer.", ".")
            assert torch.equal(p.detach(), before[key]), f"base weight {key} changed"
    changed = [
        n for n, p in trained.named_parameters() if ".lora_B." in n and not torch.equal(p.detach(), lora_before[n])
    ]
    assert len(changed) == len([n for n in lora_before if ".lora_B." in n]), "some adapters got no gradient"
    assert result.history[-1]["KL regulariser"] > 0  # the adapter moved away from the reference


def test_reentrant_checkpointing_reaches_the_adapters(tiny):
    """Reentrant checkpointing (transformers 4.x's default) passes gradients back only to blocks
    whose inputs need them: with frozen embeddings that takes enable_input_require_grads."""
    _, _, make = tiny
    model = apply_lora(make(), gradient_checkpointing=True)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.train()
    model(input_ids=IDS, labels=IDS).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(
        g is not None and g.abs().sum() > 0 for n, g in grads.items() if ".lora_B." in n
    )  # (A gets none while B = 0)


def test_reference_is_the_base_model(tiny):
    """Reference NLLs and KL's reference logits of a LoRA model are the base model's."""
    tok, fmt, make = tiny
    base = make()
    with torch.no_grad():
        base_logits = base(input_ids=IDS).logits
    obj = build_objective("NPO+GD")
    ds = UnlearningDataset(FORGET, RETAIN, tok, fmt, obj.parts, ["no"])
    base_nlls = reference_nlls(base, ds, ("forget",), tok, batch_size=4)["forget"]
    model = apply_lora(base)
    _randomise_adapter(model)
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=IDS).logits, base_logits, atol=1e-4)
        torch.testing.assert_close(AdapterOff(model)(input_ids=IDS).logits, base_logits)
    assert model.training  # the reference call leaves the mode as it was
    torch.testing.assert_close(reference_nlls(model, ds, ("forget",), tok, batch_size=4)["forget"], base_nlls)


def test_merged_state_dict_equals_peft_merge(tiny):
    _, _, make = tiny
    model = apply_lora(make(), r=4, alpha=16)
    _randomise_adapter(model, seed=1)
    merged = merge_state_dict(model.state_dict(), model)
    with torch.no_grad():
        model.eval()
        adapted = model(input_ids=IDS).logits
        reference = model.merge_and_unload()
        assert set(merged) == set(reference.state_dict())
        for k, v in reference.state_dict().items():
            torch.testing.assert_close(merged[k], v, rtol=0, atol=1e-6)
        torch.testing.assert_close(reference(input_ids=IDS).logits, adapted, rtol=1e-5, atol=1e-5)


def _write_data(d, tasks=2, per_task=4):
    rows = [
        {"task_id": t, "question": f"Who wrote book {t}-{i}?", "answer": f"Author {t}{i} wrote book {t}-{i}."}
        for t in range(1, tasks + 1)
        for i in range(per_task)
    ]
    d.mkdir(parents=True, exist_ok=True)
    write_jsonl(d / "forget01.json", rows)
    write_jsonl(d / "retain90.json", RETAIN)
    return d


def test_run_saves_adapter_and_merged_model(tmp_path):
    """OUT/adapter on top of the base model gives OUT/model; the evaluated model is the merged one."""
    from peft import PeftModel

    from unlearn.pipeline import run

    data = _write_data(tmp_path / "data")
    cfg = Config(
        model="tiny",
        data=str(data),
        out=str(tmp_path / "run"),
        method="NPO+KL",
        epochs=2,
        lr=1e-2,
        batch_size=2,
        grad_accum=1,
        eval=False,
        lora=True,
        lora_r=4,
    )
    result = run(cfg)
    out = tmp_path / "run"
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["lora_alpha"] == 32 and "lm_head" not in adapter["target_modules"]
    merged, tok = load_model(out / "model")
    assert not any("lora" in k for k in merged.state_dict())
    # the tiny preset's weights depend only on its tokenizer, which OUT/model holds
    with torch.no_grad():
        untouched = build_tiny_model(tok)(input_ids=IDS).logits
        rebuilt = PeftModel.from_pretrained(build_tiny_model(tok), out / "adapter").eval()
        expected = rebuilt(input_ids=IDS).logits
        torch.testing.assert_close(merged(input_ids=IDS).logits, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(result.model(input_ids=IDS).logits, expected, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(untouched, expected, atol=1e-4)  # the adapter did train


def test_continual_with_lora_goes_on_from_the_merged_model(tmp_path):
    """Task 2 puts a fresh adapter on task 1's merged model: task_2/model = task_1/model + task_2/adapter."""
    from peft import PeftModel

    from unlearn.continual import continual

    data = _write_data(tmp_path / "data")
    cfg = Config(
        model="tiny",
        data=str(data),
        out=str(tmp_path / "cont"),
        method="NPO+KL",
        epochs=1,
        lr=1e-2,
        batch_size=2,
        grad_accum=1,
        eval=False,
        lora=True,
    )
    rows = continual(cfg, "1,2", keep_checkpoints=True)
    assert [int(r["task"]) for r in rows] == [1, 2]
    root = tmp_path / "cont"
    for t in (1, 2):
        assert (root / f"task_{t}" / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((root / "task_2" / "adapter" / "adapter_config.json").read_text())[
        "base_model_name_or_path"
    ] == str(root / "task_1" / "model")
    task1, _ = load_model(root / "task_1" / "model")
    task2, _ = load_model(root / "task_2" / "model")
    with torch.no_grad():
        expected = PeftModel.from_pretrained(task1, root / "task_2" / "adapter").eval()(input_ids=IDS).logits
        torch.testing.assert_close(task2(input_ids=IDS).logits, expected, rtol=1e-5, atol=1e-5)
        first, _ = load_model(root / "task_1" / "model")
        assert not torch.allclose(first(input_ids=IDS).logits, expected, atol=1e-4)  # task 2 did train


def test_rmu_with_lora_trains_only_the_chosen_layers_adapters(tmp_path, tiny):
    tok, fmt, _ = tiny
    model = apply_lora(build_tiny_model(tok, hidden_size=32, num_layers=2, num_heads=2))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = _cfg(tmp_path, "RMU", method_args={"layer": 1, "layers": "1", "steering_coeff": 20})
    obj = build_objective("RMU", cfg.method_args)
    ds = UnlearningDataset(FORGET, RETAIN, tok, fmt, obj.parts, ["no"])
    trained = fit(model, tok, ds, obj, cfg, tmp_path).model
    changed = sorted(n for n, p in trained.named_parameters() if not torch.equal(p.detach(), before[n]))
    assert changed and all("layers.1.mlp.down_proj.lora_" in n for n in changed), changed
