"""Several processes: two CPU processes (torchrun, gloo) against one, the shipped accelerate
configs, and the helpers that split work between processes and gather it back.

Why two processes with ``--batch-size 4`` do not give bit-identical numbers to one with
``--batch-size 8`` (same items in every optimiser step, same number of steps):

* a mean over tokens is taken per process and DDP then averages the two processes' gradients,
  so when the two halves of a batch hold different numbers of tokens the tokens are weighted
  slightly differently than in one mean over the whole batch (KL and GD are token means);
* each process pads its half of the batch to its own longest sequence, and the all-reduce adds
  the gradients in another order: float rounding differs (~1e-7 relative per step).

The first is a real, small difference in the update (the same one as between gradient
accumulation and a large batch) and it grows over steps. Measured here (lr 1e-3, 3 steps): ≤ 1e-6
relative on the total loss, ≤ 1e-3 on the small KL term, weights within 2e-5; the test allows 2e-3
relative on every loss part and 1e-4 on the weights (which are ~0.02). Evaluation of one model by
two processes versus one differs only by float rounding (one question per batch here, so the
batches do not even differ).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import listing, write_jsonl
from unlearn.distributed import gather_in_order, index_batches, mean_over_processes, sharded_map

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "accelerate"
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")


# ------------------------------------------------------------------------------- helpers


@pytest.mark.parametrize("n,world,bs", [(9, 2, 4), (8, 2, 4), (1, 2, 4), (0, 3, 2), (10, 3, 2), (5, 1, 2)])
def test_index_batches_cover_every_item_in_equal_counts(n, world, bs):
    shares = [index_batches(n, bs, rank, world) for rank in range(world)]
    assert len({len(s) for s in shares}) == 1, "every process must run the same number of batches"
    assert all(0 < len(b) <= bs for s in shares for b in s)
    real = [i for rank, s in enumerate(shares) for b in s for i in b if i % world == rank]
    assert sorted(set(real)) == list(range(n))


def test_one_process_helpers_are_identities():
    assert sharded_map(lambda xs: [x * 2 for x in xs], [1, 2, 3]) == [2, 4, 6]
    assert gather_in_order([2, 0, 1], ["c", "a", "b"], 3) == ["a", "b", "c"]

    class One:
        num_processes = 1

    assert mean_over_processes({"loss": 1.5}, One()) == {"loss": 1.5}


def test_only_the_main_process_writes(tmp_path, monkeypatch):
    """A process that is not the main one neither creates the output folder nor writes an evaluation."""
    import unlearn.distributed as dist
    import unlearn.protocols.plan as commands
    from unlearn.config import Config
    from unlearn.evaluation.six_metrics import Evaluation
    from unlearn.pipeline import prepare_out
    from unlearn.protocols import closer_look
    from unlearn.rundir import RunDir

    monkeypatch.setattr(dist, "is_main_process", lambda: False)
    monkeypatch.setattr(dist, "wait_for_everyone", lambda: None)
    prepare_out(Config(out=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()
    (tmp_path / "ev").mkdir()
    monkeypatch.setattr(closer_look, "evaluate", lambda *a, **kw: Evaluation({"Forget ROUGE": 0.5}, {"Forget": []}))
    plan = commands.EvalPlan(sets=["a set"], judges=closer_look.Judges(None, None))
    assert plan.evaluate(None, None, None, RunDir(tmp_path / "ev"), shard=True) == {"Forget ROUGE": 0.5}
    assert list((tmp_path / "ev").iterdir()) == []


def test_adamw_8bit_needs_bitsandbytes(monkeypatch):
    import importlib.util

    from unlearn.distributed import check_optim
    from unlearn.errors import ConfigError, DependencyError

    check_optim("adamw")
    with pytest.raises(ConfigError, match="unknown --optim 'sgd'"):
        check_optim("sgd")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a)
    )
    with pytest.raises(DependencyError, match="pip install bitsandbytes"):
        check_optim("adamw_8bit")


# ------------------------------------------------------------------------------- configs


SHIPPED = sorted(p.name for p in CONFIGS.glob("*.yaml"))


def test_every_config_is_shipped():
    assert set(SHIPPED) >= {"ddp.yaml", "zero2.yaml", "zero3.yaml", "zero3_offload.yaml", "fsdp.yaml"}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_accelerate_config_parses(name, monkeypatch):
    """yaml -> accelerate's ClusterConfig -> `accelerate launch` arguments (every nested key known)
    -> the environment the launcher sets -> accelerate's DeepSpeed / FSDP plugin."""
    from unittest import mock

    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DistributedType

    path = CONFIGS / name
    raw = yaml.safe_load(path.read_text())
    config = load_config_from_file(str(path))
    assert isinstance(config, ClusterConfig)
    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "unlearn", "run"])
    known = set(vars(args))
    for section in ("deepspeed_config", "fsdp_config"):
        unknown = [k for k in raw.get(section, {}) if k not in known]
        assert not unknown, f"{name}: {section} keys accelerate launch ignores: {unknown}"
    args, defaults, _ = _validate_launch_command(args)
    assert args.mixed_precision == "bf16" and args.num_processes >= 2
    if config.distributed_type == DistributedType.DEEPSPEED:
        from accelerate.utils import DeepSpeedPlugin
        from accelerate.utils.launch import prepare_deepspeed_cmd_env

        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
        with mock.patch.dict(os.environ, {k: v for k, v in env.items() if k.startswith("ACCELERATE")}):
            plugin = DeepSpeedPlugin()
        zero = plugin.deepspeed_config["zero_optimization"]
        assert plugin.zero_stage == raw["deepspeed_config"]["zero_stage"]
        assert plugin.gradient_accumulation_steps == "auto"  # filled from unlearn's --grad-accum
        # no clipping, like DDP: DeepSpeed reads an absent or 0.0 gradient_clipping as off (accelerate < 1.16
        # leaves the key out when it is 0.0, 1.16 writes it)
        assert plugin.deepspeed_config.get("gradient_clipping", 0.0) == 0.0
        if plugin.zero_stage == 3:
            assert plugin.zero3_init_flag and zero["stage3_gather_16bit_weights_on_model_save"] is True
        offload = "cpu" if "offload" in name else "none"
        assert zero["offload_optimizer"]["device"] == zero["offload_param"]["device"] == offload
    elif config.distributed_type == DistributedType.FSDP:
        from accelerate.utils import FullyShardedDataParallelPlugin
        from accelerate.utils.launch import prepare_multi_gpu_env

        env = prepare_multi_gpu_env(args)
        import accelerate.utils.dataclasses as acc_dataclasses

        # the plugin asks whether a GPU is there (sync_module_states): answer yes, as on the GPU machine
        # (accelerate < 1.16 asks is_cuda_available, 1.16 get_torch_accelerator_backend)
        gpu = (
            mock.patch.object(acc_dataclasses, "get_torch_accelerator_backend", return_value=("cuda", torch.cuda))
            if hasattr(acc_dataclasses, "get_torch_accelerator_backend")
            else mock.patch.object(acc_dataclasses, "is_cuda_available", return_value=True)
        )
        with (
            mock.patch.dict(os.environ, {k: v for k, v in env.items() if k.startswith(("ACCELERATE", "FSDP"))}),
            gpu,
            mock.patch("torch.cuda.current_device", return_value=0),
        ):
            plugin = FullyShardedDataParallelPlugin()
        assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True  # FULL_SHARD
        assert plugin.auto_wrap_policy is not None and not plugin.cpu_ram_efficient_loading
    else:
        assert config.distributed_type == DistributedType.MULTI_GPU


# ------------------------------------------------------------------- two processes vs one


def _qa(prefix: str, i: int, n_words: int) -> dict:
    filler = " ".join(["very"] * n_words)
    return {"question": f"What did {prefix} {i} write?", "answer": f"{prefix} {i} wrote a {filler} long book {i}."}


def _perturbed(row: dict, task: int | None = None) -> dict:
    out = {
        **row,
        "paraphrased_answer": row["answer"].replace("wrote", "authored"),
        "perturbed_answer": [row["answer"].replace("book", w) for w in ("poem", "play")],
    }
    return out if task is None else {**out, "task_id": task}


@pytest.fixture(scope="module")
def tofu(tmp_path_factory) -> Path:
    """A TOFU-layout folder: task 1 has 8 forget items (one global batch of 8), sequences of
    different lengths so that the two processes' halves pad differently."""
    d = tmp_path_factory.mktemp("tofu2p")
    forget = [{**_qa("Author", i, i % 5), "task_id": 1 + i // 8} for i in range(16)]
    retain = [_qa("Writer", i, (3 * i) % 7) for i in range(12)]
    general = [
        {"question": "What is the capital of France?", "answer": "Paris", "perturbed_answer": ["Rome", "Oslo"]},
        {"question": "Who wrote Hamlet?", "answer": "Shakespeare", "perturbed_answer": ["Dickens", "Twain"]},
    ]
    write_jsonl(d / "forget01.json", forget)
    write_jsonl(d / "retain90.json", retain)
    write_jsonl(d / "forget01_perturbed.json", [_perturbed(r, r["task_id"]) for r in forget])
    write_jsonl(d / "retain_perturbed.json", [_perturbed(r) for r in retain[:3]])
    write_jsonl(d / "real_authors_perturbed.json", general)
    write_jsonl(d / "world_facts_perturbed.json", general[::-1])
    return d


RUN = ["--model", "tiny", "--method", "NPO+KL", "--epochs", "3", "--lr", "1e-3", "--grad-accum", "1", "--seed", "3"]
# One question per batch: an item's numbers then do not depend on which items share its batch,
# which differs when the items are split between processes.
EVAL = ["--nli", "none", "--eval-batch-size", "1"]


def _torchrun(args: list[str], tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "PYTHONWARNINGS": "ignore",
    }
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "unlearn", *args]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _log(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    rows = [json.loads(line) for line in lines]  # every line whole: no interleaved writes
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1)), "duplicated or missing steps"
    return rows


def _close(a, b, rel: float, abs_: float, where: str = "") -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _close(a[k], b[k], rel, abs_, f"{where}/{k}")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=rel, abs_tol=abs_), f"{where}: {a} vs {b}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not found")
def test_two_processes_unlearn_and_evaluate_like_one(tofu, tmp_path, monkeypatch, one_thread):
    """torchrun, 2 CPU processes x --batch-size 4 vs 1 process x --batch-size 8: same steps, close
    losses and weights, one writer; the 2-process evaluation equals a 1-process one of that model."""
    from safetensors.torch import load_file

    from unlearn.__main__ import main

    one, two, one_eval = tmp_path / "one", tmp_path / "two", tmp_path / "one_eval"
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--data", str(tofu), "--out", str(one), "--batch-size", "8", "--no-eval", *RUN]) == 0
    proc = _torchrun(["run", "--data", str(tofu), "--out", str(two), "--batch-size", "4", *RUN, *EVAL], tmp_path)
    assert proc.stdout.count("saved the unlearned model") == 1  # one process speaks

    log1, log2 = _log(one / "train_log.jsonl"), _log(two / "train_log.jsonl")
    assert len(log1) == len(log2) == 3  # 8 items = one global batch per epoch, 3 epochs
    assert log2[0]["NPO forget term"] == pytest.approx(20 * math.log(2), rel=1e-6)  # reference NLLs gathered right
    for r1, r2 in zip(log1, log2, strict=False):
        assert r1["lr"] == r2["lr"] and r1["epoch"] == r2["epoch"]
        _close(
            {k: v for k, v in r1.items() if k not in ("step", "epoch", "lr")},
            {k: v for k, v in r2.items() if k not in ("step", "epoch", "lr")},
            rel=2e-3,
            abs_=1e-5,
        )

    w1, w2 = load_file(one / "model" / "model.safetensors"), load_file(two / "model" / "model.safetensors")
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=0, atol=1e-4, msg=k)

    expected = {
        "config.yaml",
        "data.json",
        "model",
        "summary.json",
        "train_log.jsonl",
        "eval_Forget.jsonl",
        "eval_Retain.jsonl",
        "eval_Real_Authors.jsonl",
        "eval_Real_World.jsonl",
        "intervals.json",  # each summary value's 95% interval
        "before",  # the evaluation of the model before unlearning
    }
    assert set(listing(two)) == expected  # one model, no stray temporary folders

    # The model the two processes trained, evaluated by one process: the same summary and records.
    assert main(["eval", "--model", str(two / "model"), "--data", str(tofu), "--out", str(one_eval), *EVAL]) == 0
    s1 = json.loads((one_eval / "summary.json").read_text())
    s2 = json.loads((two / "summary.json").read_text())
    assert s2.pop("verdict")["kind"]  # a run (not an evaluation) says what it did
    _close(s2, s1, rel=1e-5, abs_=1e-7)
    for name in ("eval_Forget.jsonl", "eval_Retain.jsonl", "eval_Real_Authors.jsonl"):
        rows1 = [json.loads(x) for x in (one_eval / name).read_text().splitlines()]
        rows2 = [json.loads(x) for x in (two / name).read_text().splitlines()]
        assert [r["question"] for r in rows2] == [r["question"] for r in rows1]  # gathered in order
        assert [r["generation"] for r in rows2] == [r["generation"] for r in rows1]


ACCELERATE = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")


@pytest.mark.slow
@pytest.mark.skipif(ACCELERATE is None, reason="accelerate CLI not found")
def test_accelerate_launch_finetune_then_continual_with_lora(tofu, tmp_path):
    """`accelerate launch --config_file configs/accelerate/ddp.yaml` (2 processes; on a machine
    without GPUs they run on CPU over gloo, in bf16 autocast): fine-tune, then continual
    unlearning with LoRA over two tasks with evaluation. One writer throughout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    launch = [ACCELERATE, "launch", "--config_file", str(CONFIGS / "ddp.yaml"), "-m", "unlearn"]
    base, cont = tmp_path / "base", tmp_path / "cont"
    for args in (
        [
            "finetune",
            "--train",
            str(tofu / "forget01.json"),
            str(tofu / "retain90.json"),
            "--out",
            str(base),
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
        ],
        [
            "continual",
            "--model",
            str(base / "model"),
            "--data",
            str(tofu),
            "--out",
            str(cont),
            "--tasks",
            "1,2",
            "--method",
            "IDK+AP",
            "--lora",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
            "--lr",
            "1e-3",
            "--keep-checkpoints",
            *EVAL,
        ],
    ):
        proc = subprocess.run(launch + args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert len(_log(base / "train_log.jsonl")) == 7  # 28 rows, 2 processes x 2 = 4 per step
    rows = (cont / "continual.csv").read_text().splitlines()
    assert rows[0].startswith("task,n_unlearned") and [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
    for t in (1, 2):
        assert len(_log(cont / f"task_{t}" / "train_log.jsonl")) == 2  # 8 items, 4 per step
        for name in ("adapter/adapter_model.safetensors", "model/model.safetensors", "summary.json"):
            assert (cont / f"task_{t}" / name).is_file()


@pytest.mark.slow  # ~20 s each; test_two_processes_unlearn_and_evaluate_like_one covers torchrun in make test
@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not found")
def test_two_processes_audit_like_one(tofu, tmp_path, monkeypatch, one_thread):
    """unlearn audit under torchrun: each process attacks its share of the items, one writes; the
    numbers equal a one-process audit's (relearning trains data-parallel, like a run)."""
    from unlearn.__main__ import main

    monkeypatch.chdir(tmp_path)
    model = tmp_path / "model_run"
    assert main(["run", "--data", str(tofu), "--out", str(model), "--batch-size", "8", "--no-eval", *RUN]) == 0
    holdout = write_jsonl(tmp_path / "holdout.jsonl", [_qa("Stranger", i, i % 4) for i in range(6)])
    audit = [
        "audit",
        "--model",
        str(model / "model"),
        "--data",
        str(tofu),
        "--holdout",
        str(holdout),
        "--eval-batch-size",
        "1",
        "--quant-bits",
        "4",
        "--relearn-steps",
        "2",
        "--relearn-batch-size",
        "2",
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    eval_only = "mia,memorization,prompts,quantization"
    assert main(audit + ["--attacks", eval_only, "--out", str(one)]) == 0
    proc = _torchrun(audit + ["--attacks", eval_only + ",relearn", "--out", str(two)], tmp_path)
    assert proc.stdout.count("audit: wrote") == 1  # one process speaks and writes
    a1, a2 = json.loads((one / "audit.json").read_text()), json.loads((two / "audit.json").read_text())
    for section in ("mia", "memorization", "prompts", "quantization"):
        _close(a2[section], a1[section], rel=1e-5, abs_=1e-7, where=section)
    assert len(_log(two / "relearn" / "train_log.jsonl")) == 2
    items = lambda d: [json.loads(x) for x in (d / "items" / "prompts.unlearned.jsonl").read_text().splitlines()]  # noqa: E731
    assert [r["generation"] for r in items(two)] == [r["generation"] for r in items(one)]  # gathered in order


@pytest.mark.slow  # ~20 s each; test_two_processes_unlearn_and_evaluate_like_one covers torchrun in make test
@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not found")
def test_two_processes_evaluate_the_tofu_standard_like_one(tofu, tmp_path, monkeypatch, one_thread):
    """unlearn eval --benchmark tofu under torchrun: each process generates and scores its share,
    one writes; TOFU_EVAL.json equals a one-process evaluation's."""
    from unlearn.__main__ import main

    monkeypatch.chdir(tmp_path)
    model = tmp_path / "model_run"
    assert main(["run", "--data", str(tofu), "--out", str(model), "--batch-size", "8", "--no-eval", *RUN]) == 0
    snap = tmp_path / "snapshot"  # the hub's configs: task 1 as forget01, task 2 as holdout01
    snap.mkdir()
    rows = [json.loads(x) for x in (tofu / "forget01_perturbed.json").read_text().splitlines()]
    write_jsonl(
        snap / "forget01_perturbed.json",
        [{k: v for k, v in r.items() if k != "task_id"} for r in rows if r["task_id"] == 1],
    )
    write_jsonl(snap / "holdout01.json", [r for r in rows if r["task_id"] == 2])
    for name in ("retain_perturbed", "real_authors_perturbed", "world_facts_perturbed"):
        (snap / f"{name}.json").write_bytes((tofu / f"{name}.json").read_bytes())
    ev = ["eval", "--benchmark", "tofu", "--model", str(model / "model"), "--data", str(snap), "--eval-batch-size", "1"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(ev + ["--out", str(one)]) == 0
    _torchrun(ev + ["--out", str(two)], tmp_path)
    l1, l2 = (json.loads((d / "TOFU_EVAL.json").read_text()) for d in (one, two))
    _close(l2, l1, rel=1e-5, abs_=1e-7, where="TOFU_EVAL")
