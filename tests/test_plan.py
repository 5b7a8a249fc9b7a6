"""unlearn plan: parameter counts from configs alone, each memory component by hand, the command."""

from pathlib import Path

import pytest

from unlearn.__main__ import main
from unlearn.errors import ConfigError
from unlearn.memory import GiB, Setting, Shape, alternatives, estimate, model_shape, parse_size

ARCH = Path(__file__).resolve().parents[1] / "configs" / "architectures"


@pytest.mark.parametrize(
    "name,params", [("llama-2-7b", 6_738_415_616), ("llama-3-8b", 8_030_261_248), ("llama-3.2-1b", 1_235_814_400)]
)
def test_parameter_counts_of_the_shipped_architectures(name, params):
    shape = model_shape(str(ARCH / name))  # built on the meta device: no memory, no weights
    assert shape.params == params
    assert shape.layers in (16, 32) and shape.vocab in (32000, 128256)


SHAPE = Shape(
    "toy",
    params=1000,
    hidden=10,
    intermediate=20,
    layers=2,
    heads=2,
    vocab=100,
    largest_layer=300,
    lora_params_per_rank=50,
    tied=False,
)


def test_components_by_hand():
    s = Setting(method="GA+GD", batch_size=2, max_length=3, mixed_precision=False, chunked_logits=False)
    e = estimate(SHAPE, s, device="cpu").parts
    assert e["weights"] == 1000 * 4 and e["gradients"] == 1000 * 4 and e["optimiser states"] == 1000 * 8
    assert e["reference"] == 0  # GA+GD reads no reference model
    tokens = 2 * 2 * 3  # two parts (forget, retain) x batch 2 x length 3
    per_layer = tokens * (14 * 10 + 5 * 20) * 4
    assert e["activations"] == per_layer * 2 + per_layer  # two layers, plus one layer's gradients
    assert e["logits"] == (2 + 2 + 1) * 2 * 3 * 100 * 4  # NLL keeps 2 per part, +1 in backward
    kl = estimate(
        SHAPE,
        Setting(method="NPO+KL", batch_size=2, max_length=3, mixed_precision=False, chunked_logits=False),
        device="cpu",
    ).parts
    assert kl["reference"] == 1000 * 4 and kl["logits"] == (2 + 3 + 3) * 2 * 3 * 100 * 4
    lora = estimate(SHAPE, Setting(method="NPO+KL", lora=True, lora_r=4, mixed_precision=False), device="cpu").parts
    assert lora["reference"] == 0  # the adapter is switched off instead of a copy
    assert lora["gradients"] == 50 * 4 * 4 and lora["optimiser states"] == 50 * 4 * 8
    eight = estimate(SHAPE, Setting(optim="adamw_8bit"), device="cpu").parts
    assert eight["optimiser states"] == 1000 * 2


def test_zero_divides_over_processes():
    base = estimate(SHAPE, Setting(method="NPO+KL")).parts
    for stage, divided in (
        (1, {"optimiser states"}),
        (2, {"optimiser states", "gradients"}),
        (3, {"optimiser states", "gradients", "reference"}),
    ):
        e = estimate(SHAPE, Setting(method="NPO+KL", zero=stage, processes=4)).parts
        for k in ("optimiser states", "gradients", "reference"):
            assert e[k] == (base[k] / 4 if k in divided else base[k]), (stage, k)
    z3 = estimate(SHAPE, Setting(zero=3, processes=4)).parts
    assert z3["weights"] == 1000 * 4 / 4 + 300 * 2  # a quarter, plus the largest layer gathered in bf16
    with pytest.raises(ConfigError):
        estimate(SHAPE, Setting(zero=4))


def test_gradient_checkpointing_and_chunks_lower_the_estimate():
    big = Shape("v", 10**8, 1024, 4096, 16, 16, 128_256, 10**7, 10**5, False)
    plain = estimate(big, Setting(chunked_logits=False))
    assert (
        estimate(big, Setting(chunked_logits=False, gradient_checkpointing=True)).parts["activations"]
        < plain.parts["activations"] / 5
    )
    assert estimate(big, Setting()).parts["logits"] < plain.parts["logits"] / 10  # chunked by default at 128k


def test_alternatives_fit_the_budget():
    shape = model_shape(str(ARCH / "llama-3-8b"))
    s = Setting(method="NPO+KL")
    budget = 80 * GiB
    assert estimate(shape, s).total > budget
    found = alternatives(shape, s, budget)
    assert found and all(e.total <= budget for _, e in found)


def test_parse_size():
    assert parse_size("80GiB") == 80 * GiB and parse_size("80GB") == 80e9 and parse_size("512MiB") == 512 * 2**20
    assert parse_size("24") == 24 * GiB
    with pytest.raises(ConfigError):
        parse_size("lots")


def test_plan_command(capsys):
    assert main(["plan", "--model", str(ARCH / "llama-3-8b"), "--method", "NPO+KL", "--gpu-memory", "80GiB"]) == 0
    out = capsys.readouterr().out
    assert "8.03B parameters" in out and "does not fit in 80.0 GiB" in out and "--lora" in out
    assert main(["plan", "--model", str(ARCH / "llama-3.2-1b"), "--gpu-memory", "80GiB"]) == 0
    assert "fits in 80.0 GiB" in capsys.readouterr().out
    assert main(["plan", "--model", "/nowhere/at/all"]) == 2
    assert "no model config" in capsys.readouterr().err
