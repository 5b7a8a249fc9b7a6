"""Reliability: exact resume (also after a real SIGKILL), atomic results, nothing overwritten
unasked, divergence stops the run, same seed gives the same weights, safe model loading."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import as_ours, listing, write_jsonl
from unlearn import checkpoint
from unlearn.__main__ import main
from unlearn.errors import ModelError, OutputError
from unlearn.outputs import OWNED
from unlearn.rundir import RunDir

FORGET = [
    {"question": f"What did author {i} write?", "answer": f"Author {i} wrote the novel Book {i}."} for i in range(8)
]
RETAIN = [
    {"question": f"Where was author {i} born?", "answer": f"Author {i} was born in town {i}."} for i in range(10, 18)
]
TRAIN = FORGET + RETAIN
# 8 items, batch 3: 3 batches per epoch; with grad-accum 2 a step spans an epoch boundary every other
# step (accumulation runs across epochs, as officially), so resuming has to get that right.
COMMON = [
    "--model",
    "tiny",
    "--max-length",
    "48",
    "--batch-size",
    "3",
    "--grad-accum",
    "2",
    "--lr",
    "1e-3",
    "--seed",
    "7",
    "--warmup",
    "1",
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("qa")
    return {
        "forget": write_jsonl(d / "forget.jsonl", FORGET),
        "retain": write_jsonl(d / "retain.jsonl", RETAIN),
        "train": write_jsonl(d / "train.jsonl", TRAIN),
    }


def run_args(files, method="NPO+GD", epochs=3):
    return [
        "run",
        *COMMON,
        "--forget",
        str(files["forget"]),
        "--retain",
        str(files["retain"]),
        "--method",
        method,
        "--epochs",
        str(epochs),
        "--no-eval",
    ]


def finetune_args(files, epochs=3):
    return ["finetune", *COMMON, "--train", str(files["train"]), "--epochs", str(epochs)]


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model" / "model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"tensors differ: {different[:5]}"


def error_line(err: str) -> str:
    """The one ``unlearn: error:`` line of stderr (progress bars share the stream)."""
    lines = [x for x in re.split(r"[\r\n]", err) if x.startswith("unlearn: error:")]
    assert len(lines) == 1, err
    return lines[0]


def log_text(out: Path) -> str:
    return (out / "train_log.jsonl").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def finetuned(files, tmp_path_factory):
    """One uninterrupted fine-tuning run: the reference of the determinism and resume tests."""
    out = tmp_path_factory.mktemp("ft") / "ref"
    assert main(finetune_args(files) + ["--out", str(out)]) == 0
    return out


# ------------------------------------------------------------------------------------- resume


@pytest.mark.slow  # (make test keeps the in-process interrupt and resume checks below)
def test_sigkill_mid_run_then_resume_is_bit_identical(files, tmp_path, one_thread):
    """A real ``kill -9`` of ``python -m unlearn run`` (NPO+GD: cached reference NLLs) while it
    writes checkpoints; ``--resume`` then ends with the weights and log of a run never stopped."""
    args = run_args(files, "NPO+GD", epochs=12)  # 24 optimiser steps
    killed = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "unlearn", *args, "--out", str(killed), "--save-every", "1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        reference = tmp_path / "reference"  # runs while the subprocess starts up
        assert main(args + ["--out", str(reference)]) == 0
        deadline = time.monotonic() + 240
        while True:
            try:
                step = checkpoint.step_of(killed) or 0
            except (OSError, ValueError, OutputError):  # caught between two renames of a checkpoint
                step = 0
            if step >= 3:
                break
            assert proc.poll() is None, "the run ended before it was killed:\n" + (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        time.sleep(0.05)  # land anywhere: in a step, in a checkpoint write, between two renames
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "model").exists()
    assert checkpoint.exists(killed)
    assert 3 <= checkpoint.step_of(killed) < 24

    assert main(args + ["--out", str(killed), "--resume"]) == 0
    assert_same_weights(killed, reference)
    assert log_text(killed) == log_text(reference)
    assert not checkpoint.exists(killed), "the checkpoint is removed once the final model is saved"
    assert not [p for p in killed.glob(".*") if p.name != OWNED], "no temporary folder is left behind"


def _interrupt_after_step(monkeypatch, stop_at: int):
    """Make the run die right after it logged step ``stop_at`` (as a kill would)."""
    import unlearn.train_setup

    real = unlearn.train_setup.append_jsonl

    def append_then_die(path, row):
        real(path, row)
        if row["step"] == stop_at:
            raise KeyboardInterrupt

    monkeypatch.setattr(unlearn.train_setup, "append_jsonl", append_then_die)


def test_same_seed_same_weights_and_log(files, finetuned, tmp_path):
    again = tmp_path / "again"
    assert main(finetune_args(files) + ["--out", str(again)]) == 0
    assert_same_weights(again, finetuned)
    assert log_text(again) == log_text(finetuned)
    assert len(log_text(finetuned).splitlines()) == 8  # floor(3 epochs x 16 items / (batch 3 x grad-accum 2))


def test_resume_in_process_truncates_the_log(files, finetuned, tmp_path, monkeypatch):
    out = tmp_path / "ft"
    _interrupt_after_step(monkeypatch, 5)  # the checkpoint is at step 4: step 5 is logged, then lost
    assert main(finetune_args(files) + ["--out", str(out), "--save-every", "2"]) == 130
    monkeypatch.undo()
    assert checkpoint.step_of(out) == 4 and not (out / "model").exists()
    assert [json.loads(x)["step"] for x in log_text(out).splitlines()] == [1, 2, 3, 4, 5]

    assert RunDir(out).resumable()
    assert main(finetune_args(files) + ["--out", str(out), "--resume"]) == 0
    assert_same_weights(out, finetuned)
    assert log_text(out) == log_text(finetuned)
    assert not RunDir(out).resumable()
    import yaml

    assert yaml.safe_load((out / "config.yaml").read_text())["resume"] is False  # reusable as --config


def _whole_and_interrupted(args: list[str], tmp_path, monkeypatch):
    """``(reference, resumed)``: the run whole, and the same run killed after step 2 with a
    checkpoint every step (to be resumed by the caller)."""
    reference, out = tmp_path / "reference", tmp_path / "resumed"
    assert main(args + ["--out", str(reference)]) == 0
    _interrupt_after_step(monkeypatch, 2)
    assert main(args + ["--out", str(out), "--save-every", "1"]) == 130
    monkeypatch.undo()
    return reference, out


def test_resume_reuses_cached_reference_and_original_kl_reference(files, tmp_path, monkeypatch):
    """NPO+KL needs both: reference NLLs of the original model (cached) and the original model
    itself (KL). Neither may come from the half-trained weights."""
    import unlearn.reference

    args = run_args(files, "NPO+KL", epochs=2)
    reference, out = _whole_and_interrupted(args, tmp_path, monkeypatch)

    calls = []
    real = unlearn.reference.reference_nlls
    monkeypatch.setattr(unlearn.reference, "reference_nlls", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert main(args + ["--out", str(out), "--resume"]) == 0
    assert calls == [], "a resumed run must not recompute reference NLLs from the half-trained model"
    assert_same_weights(out, reference)
    assert log_text(out) == log_text(reference)


def test_rmu_resume_uses_the_saved_control_vector(files, tmp_path, monkeypatch):
    """RMU's control vector is drawn once and saved in the checkpoint: a resumed run uses it (a new
    draw on resume, forced different here, is never made)."""
    import unlearn.methods

    args = run_args(files, "RMU", epochs=2) + ["--method-arg", "layer=1", "--method-arg", "layers=0,1"]
    reference, out = _whole_and_interrupted(args, tmp_path, monkeypatch)
    saved = load_file(str(checkpoint.path(out) / checkpoint.REF_STATS))
    vector = saved[unlearn.methods.RMU_CONTROL]
    assert vector.norm().item() == pytest.approx(6.5, rel=1e-5)  # unit norm x the default steering coefficient
    monkeypatch.setattr(torch, "rand", lambda *a, **k: (_ for _ in ()).throw(AssertionError("a new draw")))
    assert main(args + ["--out", str(out), "--resume"]) == 0
    assert_same_weights(out, reference)


def test_pdu_resume_goes_on_with_the_saved_dual_variable(files, tmp_path, monkeypatch):
    """PDU's dual variable moves after every batch and is saved with each checkpoint: the resumed run
    ends with the weights and log of the run never stopped."""
    from unlearn.methods.terms import PDU_DUAL

    args = run_args(files, "PDU", epochs=2) + ["--method-arg", "dual_warmup_epochs=0", "--method-arg", "alpha=2"]
    reference, out = _whole_and_interrupted(args, tmp_path, monkeypatch)
    saved = load_file(str(checkpoint.path(out) / checkpoint.REF_STATS))[PDU_DUAL]
    assert saved.dtype == torch.float64 and saved.item() != 2.0  # moved from alpha by two steps' batches
    assert main(args + ["--out", str(out), "--resume"]) == 0
    assert_same_weights(out, reference)
    assert log_text(out) == log_text(reference)


def test_method_args_are_saved_and_guard_the_resume(files, tmp_path, monkeypatch, capsys):
    """--method-arg reaches config.yaml (qualified, with every default written in); a resume under
    another value is refused, one under the same value continues."""
    import yaml

    out = tmp_path / "npo"
    args = run_args(files, "NPO+AP", epochs=2) + ["--method-arg", "NPO.beta=0.5"]
    _interrupt_after_step(monkeypatch, 2)
    assert main(args + ["--out", str(out), "--save-every", "1"]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert main(run_args(files, "NPO+AP", epochs=2) + ["--out", str(out), "--resume"]) == 2
    err = error_line(capsys.readouterr().err)
    assert "method_args = {'NPO.beta': 0.5, 'AP.beta': 0.1}" in err and "'NPO.beta': 0.1" in err
    assert main(args + ["--out", str(out), "--resume"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["method_args"] == {"NPO.beta": 0.5, "AP.beta": 0.1}
    assert (saved["forget_coeff"], saved["reg_coeff"], saved["mask"]) == (1.0, 1.0, True)
    # The saved config runs again as it is, giving the same model.
    again = tmp_path / "again"
    assert main(["run", "--config", str(out / "config.yaml"), "--out", str(again)]) == 0
    assert_same_weights(again, out)


def test_resume_with_other_settings_is_refused(files, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ft"
    _interrupt_after_step(monkeypatch, 2)
    assert main(finetune_args(files) + ["--out", str(out), "--save-every", "1"]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert main(finetune_args(files) + ["--out", str(out), "--resume", "--lr", "0.01"]) == 2
    err = error_line(capsys.readouterr().err)
    assert "lr = 0.001" in err and "lr = 0.01" in err and "--overwrite" in err
    assert checkpoint.step_of(out) == 1  # untouched (step 2 died before its checkpoint)


def test_checkpoint_publication_survives_a_kill_between_renames(tmp_path):
    """The only non-atomic moment of a save: the old checkpoint renamed aside, the new one not yet
    in place. Readers see a checkpoint; recover() puts the newer one back."""
    out = tmp_path / "run"
    for name, step in ((".checkpoint.old", 4), (".checkpoint.tmp", 5)):
        (out / name).mkdir(parents=True)
        (out / name / checkpoint.STATE).write_text(json.dumps({"version": checkpoint.VERSION, "step": step}))
        (out / name / checkpoint.MANIFEST).write_text("{}")  # no other file
    (out / ".checkpoint.trash").mkdir()
    assert checkpoint.exists(out) and checkpoint.step_of(out) == 5
    checkpoint.recover(out)
    assert listing(out) == ["checkpoint"]
    assert checkpoint.load(out)[0]["step"] == 5

    # A half-written new checkpoint (no state file) is never used, and the old one stays.
    (out / ".checkpoint.tmp").mkdir()
    (out / ".checkpoint.tmp" / "model.safetensors").write_bytes(b"partial")
    checkpoint.recover(out)
    assert checkpoint.step_of(out) == 5 and not (out / ".checkpoint.tmp").exists()
    checkpoint.remove(out)
    assert not checkpoint.exists(out) and not list(out.iterdir())


# ------------------------------------------------------------------------- nothing is lost


def test_results_are_never_overwritten_unasked(files, finetuned, capsys):
    before = (finetuned / "model" / "model.safetensors").read_bytes()
    assert main(finetune_args(files) + ["--out", str(finetuned)]) == 2
    err = capsys.readouterr().err
    assert "already holds results" in err and "--overwrite" in err
    assert main(finetune_args(files) + ["--out", str(finetuned), "--resume"]) == 2
    assert "has finished" in capsys.readouterr().err
    assert (finetuned / "model" / "model.safetensors").read_bytes() == before


def test_out_folder_rules_for_checkpoints(tmp_path, capsys):
    from unlearn.config import Config
    from unlearn.errors import OutputError as DataError
    from unlearn.pipeline import prepare_out

    out = tmp_path / "run"
    with pytest.raises(DataError, match="no checkpoint to resume from"):
        prepare_out(Config(out=str(out), resume=True))
    as_ours(out)  # as a killed run leaves it
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / checkpoint.STATE).write_text("{}")
    (out / "train_log.jsonl").write_text("")
    with pytest.raises(DataError, match="--resume to continue it or pass --overwrite"):
        prepare_out(Config(out=str(out)))
    with pytest.raises(DataError, match="give one"):
        prepare_out(Config(out=str(out), resume=True, overwrite=True))
    assert prepare_out(Config(out=str(out), resume=True))[0].path == out
    (out / "model").mkdir()
    folder, mode = prepare_out(Config(out=str(out), overwrite=True))  # starting again moves the old run aside
    assert mode == "new" and [p[:10] for p in listing(out)] == [".previous-"]
    folder.discard_previous()  # and deletes it once the new run is complete
    assert not listing(out)


def test_results_go_through_atomic_writers():
    """Result files are written by unlearn.io (temp file + rename) or into a temporary folder that
    is renamed into place; nothing else in the package opens a file for writing."""
    allowed = {
        "io.py": "the atomic writers themselves",
        "models.py": "save_pretrained into a temporary folder, then renamed",
        "presets.py": "the converted model written into a temporary folder, then renamed",
        "checkpoint.py": "state written into .checkpoint.tmp, then renamed",
        "rundir.py": "the lock file, created exclusively (O_EXCL) before anything is written",
    }
    pattern = re.compile(r"open\([^)]*['\"][wax]b?['\"]|\.write_(text|bytes)\(|json\.dump\(|\.to_csv\(|torch\.save\(")
    src = Path(__file__).resolve().parents[1] / "src" / "unlearn"
    offenders = [
        f"{p.relative_to(src)}:{i}: {line.strip()}"
        for p in sorted(src.rglob("*.py"))
        if p.name not in allowed
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, "non-atomic writes:\n" + "\n".join(offenders)


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path, monkeypatch):
    from unlearn import io

    target = tmp_path / "summary.json"
    io.atomic_write_json(target, {"v": 1})

    def crash(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        io.atomic_write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


# ------------------------------------------------------------------------------ divergence


def test_non_finite_loss_stops_keeps_checkpoint_writes_no_model(files, tmp_path, monkeypatch, capsys):
    from unlearn import losses

    real, calls = losses.mean_nll, []

    def nan_at_third_step(logits, labels):
        calls.append(1)
        out = real(logits, labels)
        return out * float("nan") if len(calls) == 3 else out

    monkeypatch.setattr(losses, "mean_nll", nan_at_third_step)
    out = tmp_path / "run"
    args = run_args(files, "GA", epochs=3) + ["--grad-accum", "1", "--out", str(out), "--save-every", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    line = error_line(err)
    assert line.startswith("unlearn: error: non-finite loss at step 3: GA: GA forget term = nan")
    assert "checkpoint of step 2 is kept" in line and "Traceback" not in err
    assert checkpoint.step_of(out) == 2
    assert not (out / "model").exists() and not (out / "config.yaml").exists()


def test_huge_learning_rate_diverges_without_a_final_model(files, tmp_path, capsys):
    out = tmp_path / "run"
    args = run_args(files, "GA", epochs=3) + ["--grad-accum", "1", "--out", str(out)]
    assert main(args + ["--lr", "1e300"]) == 2  # refused before anything: float32 weights cannot take it
    assert "'lr' must be below 1e+38" in error_line(capsys.readouterr().err) and not out.exists()
    assert main(args + ["--lr", "1e30"]) == 2
    assert re.search(r"non-finite (loss|weights) (at|after) step \d+: GA", capsys.readouterr().err)
    assert not (out / "model").exists()


# ---------------------------------------------------------------------------- safe loading


def _tiny_folder(path: Path) -> Path:
    from unlearn.models import build_tiny_model, build_tiny_tokenizer, save_model

    tok = build_tiny_tokenizer([r["question"] + " " + r["answer"] for r in TRAIN], vocab_size=300)
    return save_model(build_tiny_model(tok, hidden_size=16, num_layers=1, num_heads=2), tok, path)


def test_custom_code_is_refused_and_never_imported(tmp_path, files, capsys):
    model_dir = _tiny_folder(tmp_path / "evil")
    marker = tmp_path / "IMPORTED"
    (model_dir / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    conf = json.loads((model_dir / "config.json").read_text())
    conf["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (model_dir / "config.json").write_text(json.dumps(conf))
    code = main(
        [
            "run",
            "--model",
            str(model_dir),
            "--forget",
            str(files["forget"]),
            "--retain",
            str(files["retain"]),
            "--no-eval",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "asks to run its own Python code" in err and "--trust-remote-code" in err
    assert "modeling_evil" in err
    assert not marker.exists()

    # An unknown model type with a .py file beside it is refused the same way.
    conf.pop("auto_map")
    conf["model_type"] = "evil"
    (model_dir / "config.json").write_text(json.dumps(conf))
    from unlearn.models import load_model

    with pytest.raises(ModelError, match="model_type 'evil' is unknown.*modeling_evil.py"):
        load_model(model_dir)
    assert not marker.exists()


def test_pickle_checkpoint_is_announced(tmp_path, caplog):
    from unlearn.models import load_model

    model_dir = _tiny_folder(tmp_path / "m")
    state = load_file(str(model_dir / "model.safetensors"))
    torch.save(state, model_dir / "pytorch_model.bin")
    (model_dir / "model.safetensors").unlink()
    with caplog.at_level(logging.WARNING):
        load_model(model_dir)
    assert "pickle" in caplog.text and str(model_dir) in caplog.text


def test_safetensors_preferred_over_pickle(tmp_path, caplog):
    from unlearn.models import load_model

    model_dir = _tiny_folder(tmp_path / "m")
    (model_dir / "pytorch_model.bin").write_bytes(b"not a pickle: loading it would fail")
    with caplog.at_level(logging.WARNING):
        load_model(model_dir)
    assert "pickle" not in caplog.text


def test_offline_end_to_end_touches_no_network(files, tmp_path, monkeypatch):
    def no_network(*a, **k):
        raise AssertionError(f"network access: {a}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    ft = tmp_path / "ft"
    assert main(["finetune", *COMMON, "--train", str(files["train"]), "--epochs", "1", "--out", str(ft)]) == 0
    assert (
        main(
            [
                "run",
                *COMMON,
                "--model",
                str(ft / "model"),
                "--forget",
                str(files["forget"]),
                "--retain",
                str(files["retain"]),
                "--method",
                "ME+GD",
                "--epochs",
                "1",
                "--no-eval",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


# ------------------------------------------------------------------------- data loss, locks, damage


def test_overwrite_never_replaces_an_input(files, finetuned, tmp_path, capsys):
    """`--model OUT/model --overwrite --out OUT` would delete its own input: refused, model intact."""
    import shutil

    out = tmp_path / "x"
    shutil.copytree(finetuned, out)
    before = (out / "model" / "model.safetensors").read_bytes()
    code = main(run_args(files, "GA", epochs=1) + ["--model", str(out / "model"), "--out", str(out), "--overwrite"])
    assert code == 2
    err = error_line(capsys.readouterr().err)
    assert "--overwrite would replace" in err and "--model points into" in err
    assert (out / "model" / "model.safetensors").read_bytes() == before
    assert not list(out.glob(".previous-*")) and not (out / ".unlearn.lock").exists()


def test_overwrite_replaces_the_whole_result_set(files, tmp_path):
    """An evaluated run redone with --overwrite --no-eval keeps none of the old evaluation files."""
    from unlearn.io import atomic_write_json

    out = tmp_path / "r"
    assert main(run_args(files, "GA", epochs=1) + ["--out", str(out)]) == 0
    atomic_write_json(out / "summary.json", {"Forget ROUGE": 0.5})  # as an evaluation leaves them
    (out / "eval_Forget.jsonl").write_text("{}\n")
    assert main(run_args(files, "GA", epochs=1) + ["--out", str(out), "--overwrite"]) == 0
    assert listing(out) == ["config.yaml", "data.json", "model", "train_log.jsonl"]


def test_demo_refuses_an_earlier_demo_without_overwrite(tmp_path, capsys):
    as_ours(tmp_path / "demo")
    target = tmp_path / "demo" / "target" / "model"
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2
    assert "already holds a demo" in error_line(capsys.readouterr().err)
    assert (target / "config.json").read_text() == "{}"


@pytest.mark.slow  # (make test keeps the lock's unit checks: a stale lock taken over, a held one refused)
def test_two_runs_on_one_folder_one_wins(files, tmp_path, capsys, one_thread):
    """A second command on a folder another one is writing is refused at once; the first one's log
    holds its own rows only."""
    out = tmp_path / "shared"
    args = run_args(files, "GA+GD", epochs=40) + ["--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "unlearn", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / ".unlearn.lock").exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.01)
        assert main(args) == 2
        err = error_line(capsys.readouterr().err)
        assert "another unlearn command is writing here" in err and f"pid {proc.pid}" in err
        assert proc.wait(240) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    steps = [json.loads(x)["step"] for x in log_text(out).splitlines()]
    assert steps == list(range(1, len(steps) + 1))
    assert not (out / ".unlearn.lock").exists()


def test_a_stale_lock_is_taken_over_and_a_foreign_one_refused(files, tmp_path, caplog, capsys):
    out = tmp_path / "s"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".unlearn.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    with caplog.at_level(logging.WARNING, logger="unlearn"):
        assert main(run_args(files, "GA", epochs=1) + ["--out", str(out)]) == 0
    assert f"taking over a stale lock (process {dead.pid})" in caplog.text
    (out / ".unlearn.lock").write_text(json.dumps({"pid": 1, "host": "another-host", "started": "today"}))
    assert main(run_args(files, "GA", epochs=1) + ["--out", str(out), "--overwrite"]) == 2
    assert "pid 1 on another-host" in error_line(capsys.readouterr().err)
    assert (out / "model").is_dir()  # the earlier result is intact


def test_a_damaged_checkpoint_is_refused(files, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ck"
    _interrupt_after_step(monkeypatch, 2)
    assert main(run_args(files, "GA", epochs=2) + ["--out", str(out), "--save-every", "1"]) == 130
    monkeypatch.undo()
    next((out / "checkpoint").glob("random_states_*.pkl")).unlink()
    capsys.readouterr()
    assert main(run_args(files, "GA", epochs=2) + ["--out", str(out), "--resume"]) == 2
    err = error_line(capsys.readouterr().err)
    assert "random_states_0.pkl: is missing; the checkpoint is damaged" in err


def test_a_full_disk_is_one_line_and_leaves_no_temporary_files(files, tmp_path, capsys):
    """The model does not fit on a 512 KiB tmpfs: one line, no .checkpoint.tmp or .model.tmp left."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        for extra in (["--save-every", "1"], []):
            out = mnt / f"run{len(extra)}"
            assert main(run_args(files, "GA", epochs=2) + ["--out", str(out), *extra]) == 2
            err = error_line(capsys.readouterr().err)
            assert "no space left on the device" in err
            assert (
                not [p.name for p in out.glob(".*") if p.name not in (".unlearn.lock", OWNED)] if out.exists() else True
            )
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)  # lazily: even with a file still open


def test_results_keep_the_usual_permissions(tmp_path):
    from unlearn.io import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644


def test_resume_finishes_a_missing_evaluation(tmp_path, synth_dir, capsys, monkeypatch):
    """Training finished, the evaluation failed: the message says how to finish it, and --resume
    evaluates the saved model without training again."""
    import unlearn.protocols.closer_look as commands
    import unlearn.train

    args = [
        "run",
        "--model",
        "tiny",
        "--data",
        str(synth_dir),
        "--method",
        "GA",
        "--epochs",
        "1",
        "--nli",
        "none",
        "--max-length",
        "96",
        "--out",
        str(tmp_path / "e"),
    ]

    real, calls = commands.evaluate, []

    def broken(*a, **k):  # the evaluation before unlearning works; the one after training fails
        from unlearn.errors import DataError

        calls.append(1)
        if len(calls) > 1:
            raise DataError("the judge went away")
        return real(*a, **k)

    monkeypatch.setattr(commands, "evaluate", broken)
    assert main(args) == 2
    assert "finish its evaluation with --resume" in error_line(capsys.readouterr().err)
    monkeypatch.undo()
    assert main(args) == 2  # the rerun without --resume says so too
    assert "--resume to finish its evaluation" in error_line(capsys.readouterr().err)
    monkeypatch.setattr(unlearn.train, "fit", lambda *a, **k: pytest.fail("trained again"))
    assert main(args + ["--resume"]) == 0
    assert (tmp_path / "e" / "summary.json").is_file()


def test_leftovers_of_a_killed_writer_are_cleaned(tmp_path):
    from unlearn.rundir import RunDir

    out = as_ours(tmp_path / "k")
    (out / ".model.tmp-1a2b").mkdir(parents=True)
    (out / ".summary.json.x9.tmp").write_text("{")
    (out / ".eval_Forget.jsonl.y.tmp").write_text("")
    with RunDir(out).locked() as folder:
        assert folder.prepare() == "new"
        assert listing(out) == [".unlearn.lock"]


def test_report_names_a_corrupt_summary(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "summary.json").write_text('{"Model Utility": 0.5')
    assert main(["report", str(tmp_path / "r"), "--out", str(tmp_path / "rep")]) == 2
    assert re.search(r"r/summary\.json: not readable", error_line(capsys.readouterr().err))


def test_an_unknown_hub_model_offline_says_so(monkeypatch, capsys, files, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert (
        main(run_args(files, "GA", epochs=1) + ["--model", "nobody/no-such-model", "--out", str(tmp_path / "h")]) == 2
    )
    err = error_line(capsys.readouterr().err)
    assert "nobody/no-such-model" in err and "HF_HUB_OFFLINE=1" in err
