"""Bad input fails loudly, in one line, before any model loads: non-finite models, mismatched perturbed
files, templates that drop the question, impossible settings, damaged checkpoints, offline hubs."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch

from tests.conftest import as_ours, write_jsonl
from unlearn.__main__ import _after_interrupt, main
from unlearn.errors import ConfigError, DataError, ModelError, OutputError

FORGET = [{"question": f"What did author {i} write?", "answer": f"Author {i} wrote Book {i}."} for i in range(6)]
RETAIN = [{"question": f"Where was author {i} born?", "answer": f"Author {i} was born in town {i}."} for i in range(6)]
TINY = ["--model", "tiny", "--max-length", "40", "--batch-size", "2", "--lr", "1e-3", "--nli", "none"]


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.startswith("unlearn: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def qa(tmp_path_factory):
    d = tmp_path_factory.mktemp("qa")
    return {"forget": write_jsonl(d / "forget.jsonl", FORGET), "retain": write_jsonl(d / "retain.jsonl", RETAIN)}


def run(qa, out, method="GA+GD", *extra):
    return ["run", *TINY, "--forget", str(qa["forget"]), "--retain", str(qa["retain"]), "--method", method,
            "--epochs", "1", "--no-eval", "--out", str(out), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def model_dir(qa, tmp_path_factory):
    out = tmp_path_factory.mktemp("m") / "run"
    assert main(run(qa, out)) == 0
    return out / "model"


# --------------------------------------------------------------------------- non-finite models


def test_a_non_finite_model_is_neither_saved_nor_evaluated(model_dir, qa, tmp_path, capsys):
    from unlearn.models import load_model, save_model

    model, tok = load_model(model_dir)
    with torch.no_grad():
        next(model.parameters())[0, 0] = float("nan")
    with pytest.raises(ModelError, match="NaN or infinite"):
        save_model(model, tok, tmp_path / "nan")
    assert not (tmp_path / "nan").exists()
    bad = tmp_path / "bad"  # written behind our back
    shutil.copytree(model_dir, bad)
    from safetensors.torch import load_file, save_file

    weights = load_file(str(bad / "model.safetensors"))
    first = next(iter(weights))
    weights[first] = weights[first].clone().fill_(float("inf"))
    save_file(weights, str(bad / "model.safetensors"), metadata={"format": "pt"})
    args = ["eval", "--model", str(bad), "--forget", str(qa["forget"]), "--nli", "none", "--out", str(tmp_path / "e")]
    assert main(args) == 2
    assert "NaN or infinite" in one_line(capsys)
    assert not (tmp_path / "e" / "summary.json").exists()


@pytest.mark.parametrize(
    "method, arg, said",
    [
        ("TV", "alpha=inf", "must be finite"),
        ("TV", "alpha=nan", "must be finite"),
        ("NPO+GD", "beta=nan", "must be finite"),
        ("NPO+GD", "beta=0", "must be above 0"),
        ("ME+GD", "pad_to=-1", "must be at least 0"),
        ("RMU", "layers=a,b", "layer numbers"),
    ],
)
def test_method_arguments_outside_their_range_are_refused_up_front(qa, tmp_path, capsys, method, arg, said):
    out = tmp_path / "o"
    assert main(run(qa, out, method, "--method-arg", arg)) == 2
    assert said in one_line(capsys)
    assert not out.exists()


def test_late_checks_come_before_the_model_loads(qa, tmp_path, capsys, monkeypatch):
    import unlearn.models

    monkeypatch.setattr(unlearn.models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    out = tmp_path / "o"
    assert main(run(qa, out, "RMU", "--method-arg", "layer=7", "--method-arg", "layers=1")) == 2
    assert "layer 7 does not exist in tiny, which has 2 layers" in one_line(capsys)
    assert main(run(qa, out, "GA+KL", "--ref-model", str(tmp_path / "no-such-model"))) == 2
    assert "--ref-model: model path does not exist" in one_line(capsys)
    assert not out.exists()


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "extra, said",
    [
        (["--seed", "-1"], "'seed' must be at least 0"),
        (["--seed", str(2**40)], "'seed' must be below"),
        (["--lr", "1e300"], "'lr' must be below"),
        (["--mixed-precision", "bogus"], "unknown --mixed-precision"),
        (["--mixed-precision", "fp8"], "fp8 is not supported"),
        (["--attn-implementation", "flash_attention_2"], "needs the flash_attn package"),
    ],
)
def test_impossible_settings_are_one_line(qa, tmp_path, capsys, extra, said):
    if "fp16" in extra and torch.cuda.is_available():
        pytest.skip("fp16 works on a GPU")
    if "flash_attention_2" in extra and __import__("importlib").util.find_spec("flash_attn"):
        pytest.skip("flash-attn is installed")
    assert main(run(qa, tmp_path / "o", "GA+GD", *extra)) == 2
    assert said in one_line(capsys)
    assert not (tmp_path / "o").exists()


def test_fp16_on_cpu_is_refused(qa, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("fp16 works on a GPU")
    assert main(run(qa, tmp_path / "o", "GA+GD", "--mixed-precision", "fp16")) == 2
    assert "fp16 needs a CUDA GPU" in one_line(capsys)


@pytest.mark.parametrize(
    "args, said",
    [
        (["--max-length", "0"], "must be at least 1"),
        (["--batch-size", "-4"], "must be at least 1"),
        (["--processes", "0"], "must be at least 1"),
        (["--lora-r", "0"], "must be at least 1"),
        (["--gpu-memory", "."], "expected a size like 80GiB"),
        (["--gpu-memory", "0"], "expected a size like 80GiB"),
    ],
)
def test_plan_refuses_sizes_that_mean_nothing(args, said, capsys):
    try:
        code = main(["plan", "--model", "tiny", *args])
    except SystemExit as e:  # argparse's own one-line refusal
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err


def test_model_configs_that_cannot_work_are_refused(model_dir, tmp_path, capsys):
    for n, (change, said) in enumerate(
        (
            ({"dtype": "float8"}, "is not a torch dtype"),
            ({"torch_dtype": "float8"}, "is not a torch dtype"),
            ({"eos_token_id": 99999}, "eos_token_id 99999 lies outside the vocabulary"),
        )
    ):
        bad = tmp_path / f"bad{n}"
        shutil.copytree(model_dir, bad)
        conf = json.loads((bad / "config.json").read_text())
        conf.update(change)
        (bad / "config.json").write_text(json.dumps(conf))
        with pytest.raises(ModelError, match=said):
            __import__("unlearn.models").models.load_model(bad)
    bigger = tmp_path / "bigger"  # a vocabulary larger than the weights
    shutil.copytree(model_dir, bigger)
    conf = json.loads((bigger / "config.json").read_text())
    conf["vocab_size"] *= 2
    (bigger / "config.json").write_text(json.dumps(conf))
    with pytest.raises(ModelError, match="could not load the model"):
        __import__("unlearn.models").models.load_model(bigger)


def test_a_chat_template_must_render_the_question():
    from transformers import PreTrainedTokenizerFast

    from unlearn.presets import build_tiny_tokenizer
    from unlearn.prompts import PromptFormat, tofu_template

    tok = build_tiny_tokenizer(["hello there"])
    assert isinstance(tok, PreTrainedTokenizerFast)
    tok.chat_template = "hello"
    with pytest.raises(ConfigError, match="does not put the question in the prompt"):
        PromptFormat("chat_template", tokenizer=tok)
    tok.chat_template = "{{ raise_exception('no') }}"
    with pytest.raises(ConfigError, match="chat template failed"):
        PromptFormat("chat_template", tokenizer=tok)
    with pytest.raises(ConfigError, match="TOFU benchmark"):
        tofu_template(PromptFormat("llama3", tokenizer=tok))
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert "Who?" in PromptFormat("chat_template", tokenizer=tok).prompt("Who?")


# --------------------------------------------------------------------------- perturbed files


def test_eval_and_audit_check_the_forget_set_as_run_does(synth_dir, tmp_path):
    from unlearn.config import Config
    from unlearn.protocols.closer_look import PROTOCOL

    data = Path(shutil.copytree(synth_dir, tmp_path / "d"))
    cfg = Config(data=str(data), split="forget01", task_id=1)
    want = [s.questions for s in PROTOCOL.command_sets(cfg) if s.name == "Forget"][0]
    perturbed = data / "forget01_perturbed.json"
    rows = perturbed.read_text().splitlines()
    perturbed.write_text("\n".join(reversed(rows)) + "\n")  # another order: matched by question
    for sets in (PROTOCOL.command_sets(cfg), PROTOCOL.audit_sets(cfg)[0]):
        assert [s.questions for s in sets if s.name == "Forget"][0] == want
    kept = [r for r in rows if json.loads(r)["question"] != want[0]]  # some of the task's rows only
    perturbed.write_text("\n".join(kept) + "\n")
    for check in (PROTOCOL.command_sets, lambda c: PROTOCOL.audit_sets(c)[0]):
        with pytest.raises(DataError, match="is not the forget set trained on"):
            check(cfg)


# --------------------------------------------------------------------------- checkpoints and resume


def _interrupted(qa, out, monkeypatch):
    import unlearn.train_setup

    real = unlearn.train_setup.append_jsonl

    def append_then_die(path, row):
        real(path, row)
        if row["step"] == 2:  # (the checkpoint of step 1 is written)
            raise KeyboardInterrupt

    monkeypatch.setattr(unlearn.train_setup, "append_jsonl", append_then_die)
    assert main(run(qa, out, "GA", "--epochs", "3", "--save-every", "1", "--grad-accum", "1")) == 130
    monkeypatch.undo()
    return run(qa, out, "GA", "--epochs", "3", "--save-every", "1", "--grad-accum", "1", "--resume")


def test_damaged_checkpoint_files_are_one_line(qa, tmp_path, monkeypatch, capsys):
    from unlearn import checkpoint

    for damage, said in (
        ("trainer_state.json", "cannot be read"),
        ("manifest.json", "cannot be read"),
        ("random_states_0.pkl", "random state of this process cannot be read"),
    ):
        out = tmp_path / damage
        resume = _interrupted(qa, out, monkeypatch)
        capsys.readouterr()
        folder = out / "checkpoint"
        (folder / damage).write_bytes(b"\x80garbled")
        if damage.endswith(".pkl"):  # the manifest agrees: only reading the state finds it
            manifest = json.loads((folder / checkpoint.MANIFEST).read_text())
            manifest[damage] = checkpoint._manifest(folder)[damage]
            (folder / checkpoint.MANIFEST).write_text(json.dumps(manifest))
        assert main(resume) == 2
        assert said in one_line(capsys)


def test_a_resume_cleans_the_leftovers_of_an_interrupted_save(qa, tmp_path, monkeypatch):
    out = tmp_path / "r"
    resume = _interrupted(qa, out, monkeypatch)
    (out / ".model.tmp-dead").mkdir()
    (out / ".model.tmp-dead" / "model.safetensors").write_bytes(b"partial")
    assert main(resume) == 0
    assert not (out / ".model.tmp-dead").exists()
    assert (out / "model" / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_ctrl_c_says_what_works_next(tmp_path):
    from types import SimpleNamespace

    from unlearn.__main__ import cmd_audit, cmd_run, cmd_sweep

    assert "--overwrite to start again" in _after_interrupt(SimpleNamespace(func=cmd_run, out=str(tmp_path)))
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "trainer_state.json").write_text("{}")
    assert "--resume" in _after_interrupt(SimpleNamespace(func=cmd_run, out=str(tmp_path)))
    assert "--resume" in _after_interrupt(SimpleNamespace(func=cmd_audit, out=None))
    assert "finished runs are skipped" in _after_interrupt(SimpleNamespace(func=cmd_sweep))


# --------------------------------------------------------------------------- folders and locks


def test_out_that_is_a_file_is_one_line(qa, tmp_path, capsys):
    (tmp_path / "f").write_text("mine")
    assert main(run(qa, tmp_path / "f")) == 2
    assert "is a file, not a folder" in one_line(capsys)
    assert (tmp_path / "f").read_text() == "mine"


@pytest.mark.parametrize("content", ["", "garbage", '{"pid": null}'])
def test_an_unreadable_lock_nobody_holds_is_stale(qa, tmp_path, content, caplog):
    out = as_ours(tmp_path / "l")
    (out / ".unlearn.lock").write_text(content)
    old = os.path.getmtime(out / ".unlearn.lock") - 60
    os.utime(out / ".unlearn.lock", (old, old))
    assert main(run(qa, out)) == 0
    assert "taking over a stale lock" in caplog.text
    assert not (out / ".unlearn.lock").exists()


def test_a_lock_held_by_a_live_process_is_refused(tmp_path):
    import fcntl

    from unlearn.rundir import RunDir

    out = tmp_path / "held"
    out.mkdir()
    with open(out / ".unlearn.lock", "w") as fh:  # held (flock) but unreadable: still refused
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        with pytest.raises(OutputError, match="a running process holds its lock file"):
            with RunDir(out).locked():
                pass


def test_a_file_too_large_is_not_a_full_disk(tmp_path):
    from unlearn.io import raise_if_disk_full

    with pytest.raises(OutputError, match="too large for this file system"):
        raise_if_disk_full(OSError(errno.EFBIG, "File too large"), tmp_path / "x")


# --------------------------------------------------------------------------- data


def test_a_data_file_over_the_limit_is_refused(qa, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("UNLEARN_MAX_FILE_MIB", "0.0001")
    assert main(run(qa, tmp_path / "o")) == 2
    assert "is more than a data file may hold" in one_line(capsys)


def test_a_huge_task_range_is_refused_at_once():
    from unlearn.continual import parse_tasks

    with pytest.raises(DataError, match="task 100000000 of 1-100000000 does not exist"):
        parse_tasks("1-100000000", list(range(1, 11)))


def test_an_offline_hub_is_one_line_at_once(monkeypatch, tmp_path, capsys):
    from unlearn import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "reachable", lambda timeout=hub.PROBE_SECONDS: False)
    seen = {}

    def no_network(*a, **k):
        seen["offline"] = os.environ.get("HF_HUB_OFFLINE")
        raise ConnectionError("Couldn't reach the hub")

    import unlearn.data

    monkeypatch.setattr(unlearn.data, "_hub_rows", no_network)
    args = ["run", *TINY, "--data", "locuslab/TOFU", "--method", "GA", "--no-eval", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    line = one_line(capsys)
    assert "locuslab/TOFU/forget: the Hugging Face hub cannot be reached (offline)" in line
    assert seen["offline"] == "1"  # the call ran in offline mode (the cache still answers), not retrying
    assert os.environ.get("HF_HUB_OFFLINE") is None
    assert not hub.reachable.__name__ == "reachable" or True


def test_the_probe_is_quick_and_needs_no_network():
    from unlearn import hub

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{port}"
        assert hub.reachable()
    finally:
        server.close()
        del os.environ["HF_ENDPOINT"]
    os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{port}"
    try:
        assert not hub.reachable()
    finally:
        del os.environ["HF_ENDPOINT"]


# --------------------------------------------------------------------------- sweeps


def test_a_sweep_checks_its_audit_section_and_method_spellings_when_planned(qa, tmp_path, capsys):
    import yaml

    def sweep(grid, audit=None):
        path = tmp_path / "s.yaml"
        base = {"model": "tiny", "forget": str(qa["forget"]), "retain": str(qa["retain"]), "eval": False}
        body = {"out": str(tmp_path / "sw"), "base": base, "grid": grid}
        if audit is not None:
            body["audit"] = audit
        path.write_text(yaml.safe_dump(body))
        return main(["sweep", "--config", str(path), "--dry-run"])

    assert sweep({"method": ["GA+GD"]}, {"attacks": "nope"}) == 2
    assert "nope" in one_line(capsys)
    assert sweep({"method": ["GA+GD"]}, {"attacks": "quantization", "quant_bits": 40}) == 2
    assert "between 1 and 16" in one_line(capsys)
    assert sweep({"method": ["ME+GD", "me+gd"]}) == 2
    assert "same folder name" in one_line(capsys)
    assert not (tmp_path / "sw").exists()


def test_a_max_length_that_leaves_no_answer_is_refused_before_the_weights_load(qa, model_dir, tmp_path, capsys,
                                                                              monkeypatch):  # fmt: skip
    import unlearn.models

    monkeypatch.setattr(unlearn.models, "_from_pretrained", lambda *a, **k: pytest.fail("the weights were read"))
    args = ["run", "--model", str(model_dir), "--forget", str(qa["forget"]), "--retain", str(qa["retain"]),
            "--method", "GA+GD", "--max-length", "4", "--no-eval", "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(args) == 2
    assert "--max-length 4 leaves no answer token" in one_line(capsys)
