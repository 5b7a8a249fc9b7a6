"""Checks on a CUDA GPU: training, cached reference statistics and evaluation agree with the CPU.

Skipped unless a GPU is visible and ``UNLEARN_TEST_GPU=1``::

    UNLEARN_TEST_GPU=1 pytest tests/test_gpu.py

(the rest of the suite hides GPUs: it checks numbers computed on the CPU).
"""

from __future__ import annotations

import copy

import pytest
import torch

from tests.conftest import GPU_TESTS
from tests.test_methods import FORGET, RETAIN
from unlearn.config import Config
from unlearn.datasets import UnlearningDataset
from unlearn.distributed import training_mixed_precision
from unlearn.evaluation.generation import generate
from unlearn.evaluation.scoring import answer_nlls
from unlearn.methods import build_objective, resolve
from unlearn.reference import reference_nlls
from unlearn.train import fit

pytestmark = pytest.mark.skipif(
    not (GPU_TESTS and torch.cuda.is_available()),
    reason="GPU checks: set UNLEARN_TEST_GPU=1 on a machine with a CUDA GPU",
)


@pytest.fixture(scope="module")
def tiny():
    from unlearn.models import build_tiny_model, build_tiny_tokenizer
    from unlearn.prompts import detect_prompt_format

    texts = [r["question"] + " " + r["answer"] for r in FORGET + RETAIN] + ["I don't know."]
    tok = build_tiny_tokenizer(texts, vocab_size=300)
    torch.manual_seed(0)
    model = build_tiny_model(tok, hidden_size=32, num_layers=2, num_heads=2)
    return tok, detect_prompt_format(tok, "tiny"), model


def _cfg(tmp_path, method: str) -> Config:
    return resolve(
        Config(
            method=method,
            epochs=2,
            lr=1e-3,
            batch_size=3,
            grad_accum=1,
            warmup=0,
            seed=0,
            dtype="auto",
            mixed_precision="auto",
            out=str(tmp_path),
        )
    )[1]


@pytest.mark.parametrize("method", ["GA+GD", "NPO+KL", "ME+AP", "DPO+GD"])
def test_training_on_the_gpu_keeps_float32_weights_under_bf16_autocast(tmp_path, tiny, method):
    tok, fmt, base = tiny
    model = copy.deepcopy(base)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = _cfg(tmp_path, method)
    if torch.cuda.is_bf16_supported():
        assert training_mixed_precision(cfg.dtype) == "bf16"
    obj = build_objective(method, cfg.method_args, cfg.forget_coeff, cfg.reg_coeff)
    ds = UnlearningDataset(FORGET, RETAIN, tok, fmt, obj.parts, ["I don't know."], mask_forget=cfg.mask)
    result = fit(model, tok, ds, obj, cfg, tmp_path)
    trained = result.model
    assert result.steps == 4
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in result.history)
    for name, p in trained.named_parameters():
        assert p.device.type == "cuda" and p.dtype == torch.float32, name
    changed = [n for n, p in trained.named_parameters() if not torch.equal(p.detach().cpu(), before[n])]
    assert changed, f"{method} changed no parameter on the GPU"


def test_cached_reference_statistics_match_the_cpu(tiny):
    tok, fmt, base = tiny
    obj = build_objective("DPO+GD")
    ds = UnlearningDataset(FORGET, RETAIN, tok, fmt, obj.parts, ["I don't know."])
    cpu = reference_nlls(copy.deepcopy(base), ds, obj.ref_nll_parts, tok, batch_size=4)
    gpu = reference_nlls(copy.deepcopy(base).cuda(), ds, obj.ref_nll_parts, tok, batch_size=4)
    assert set(cpu) == set(gpu) == {"forget", "forget_idk"}
    for part in cpu:
        torch.testing.assert_close(gpu[part].cpu().float(), cpu[part].cpu().float(), rtol=1e-4, atol=1e-4)


def test_evaluation_passes_match_the_cpu(tiny):
    """Greedy answers are the same tokens and answer NLLs agree to float rounding (float32 weights)."""
    tok, fmt, base = tiny
    questions = [r["question"] for r in FORGET + RETAIN]
    answers = [r["answer"] for r in FORGET + RETAIN]
    cpu_model, gpu_model = copy.deepcopy(base), copy.deepcopy(base).cuda()
    assert generate(gpu_model, tok, fmt, questions, max_length=40, batch_size=5) == generate(
        cpu_model, tok, fmt, questions, max_length=40, batch_size=5
    )
    nll_gpu = answer_nlls(gpu_model, tok, fmt, questions, answers, batch_size=5)
    nll_cpu = answer_nlls(cpu_model, tok, fmt, questions, answers, batch_size=5)
    assert nll_gpu.shape == (len(questions),)
    assert abs(nll_gpu - nll_cpu).max() < 1e-4 * max(1.0, abs(nll_cpu).max())


@pytest.mark.skipif(__import__("importlib").util.find_spec("deepspeed") is None, reason="needs deepspeed")
def test_rmu_under_zero3_trains_only_its_layers_like_one_gpu(tmp_path):
    """RMU's hidden states of a ZeRO-3-sharded model (``accelerate launch`` with the shipped zero3
    config, one process): the same selected MLPs change, and only they; the losses follow a
    single-GPU run closely (bf16 autocast on both)."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    from tests.conftest import write_jsonl
    from unlearn.__main__ import main

    root = Path(__file__).resolve().parents[1]
    forget, retain = write_jsonl(tmp_path / "f.jsonl", FORGET), write_jsonl(tmp_path / "r.jsonl", RETAIN)
    assert (
        main(
            [
                "finetune",
                "--model",
                "tiny",
                "--train",
                str(forget),
                str(retain),
                "--epochs",
                "2",
                "--out",
                str(tmp_path / "target"),
            ]
        )
        == 0
    )
    args = [
        "run",
        "--model",
        str(tmp_path / "target" / "model"),
        "--forget",
        str(forget),
        "--retain",
        str(retain),
        "--method",
        "RMU",
        "--method-arg",
        "layer=1",
        "--method-arg",
        "layers=0,1",
        "--epochs",
        "2",
        "--batch-size",
        "3",
        "--grad-accum",
        "1",
        "--lr",
        "1e-3",
        "--no-eval",
        "--seed",
        "0",
    ]
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    proc = subprocess.run(
        [
            accelerate,
            "launch",
            "--config_file",
            str(root / "configs/accelerate/zero3.yaml"),
            "--num_processes",
            "1",
            "-m",
            "unlearn",
            *args,
            "--out",
            str(tmp_path / "z3"),
        ],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    before = load_file(str(tmp_path / "target" / "model" / "model.safetensors"))
    for run in ("one", "z3"):
        after = load_file(str(tmp_path / run / "model" / "model.safetensors"))
        # ZeRO-3 saves 16-bit weights: a change is one larger than bf16's rounding
        changed = {
            k
            for k in before
            if (after[k].float() - before[k].float()).abs().max() > 8e-3 * before[k].abs().max() + 1e-6
        }
        assert changed and all(".mlp.down_proj." in k for k in changed), (run, sorted(changed))
    logs = [[json.loads(x) for x in (tmp_path / r / "train_log.jsonl").read_text().splitlines()] for r in ("one", "z3")]
    for a, b in zip(*logs, strict=False):
        assert a["loss"] == pytest.approx(b["loss"], rel=5e-2)
