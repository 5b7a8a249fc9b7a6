"""Nothing of the user's is lost: every command writes only what it created, and ``--overwrite``
replaces only that (unlearn.outputs, the rule every command goes through)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import as_ours, write_jsonl
from unlearn import outputs
from unlearn.__main__ import main
from unlearn.errors import OutputError

FORGET = [{"question": f"What did author {i} write?", "answer": f"Author {i} wrote Book {i}."} for i in range(4)]
RETAIN = [{"question": f"Where was author {i} born?", "answer": f"Author {i} was born in town {i}."} for i in range(4)]
TINY = ["--model", "tiny", "--max-length", "40", "--batch-size", "2", "--lr", "1e-3", "--nli", "none"]

# A folder of the user's: every name some command writes, and a few others.
USER = {
    "config.yaml": b"my: settings\n",
    "data.json": b'{"mine": true}\n',
    "summary.json": b'{"my": "summary"}\n',
    "eval_Forget.jsonl": b'{"mine": 1}\n',
    "eval_config.yaml": b"mine: 1\n",
    "train_log.jsonl": b'{"step": "mine"}\n',
    "audit.json": b"{}\n",
    "items/mine.jsonl": b'{"keep": "me"}\n',
    "forget01.json": b'{"question": "mine", "answer": "mine"}\n',
    "report.md": b"# my report\n",
    "sweep.csv": b"mine\n",
    "continual.csv": b"mine\n",
    "data/forget05.json": b"mine\n",
    "target/notes.txt": b"mine\n",
    "notes.txt": b"keep me\n",
}


def user_folder(path: Path, names=None) -> Path:
    for name, data in USER.items():
        if names is None or name in names:
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(data)
    return path


def fingerprint(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def assert_kept(path: Path, names=None) -> None:
    for name, data in USER.items():
        if names is None or name in names:
            assert (path / name).read_bytes() == data, f"{name} was changed"


@pytest.fixture(scope="module")
def qa(tmp_path_factory):
    d = tmp_path_factory.mktemp("qa")
    return {"forget": write_jsonl(d / "forget.jsonl", FORGET), "retain": write_jsonl(d / "retain.jsonl", RETAIN)}


def run_cmd(qa, out, *extra):
    return ["run", *TINY, "--forget", str(qa["forget"]), "--retain", str(qa["retain"]), "--method", "GA+GD",
            "--epochs", "1", "--no-eval", "--out", str(out), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def model_dir(qa, tmp_path_factory):
    out = tmp_path_factory.mktemp("m") / "run"
    assert main(run_cmd(qa, out)) == 0
    return out / "model"


def commands(qa, model_dir, synth_dir, tmp: Path, out: Path) -> dict[str, list[str]]:
    """Every command that writes into --out, ready to run on ``out``."""
    sweep = tmp / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "out": str(out),
                "base": {
                    "model": "tiny",
                    "forget": str(qa["forget"]),
                    "retain": str(qa["retain"]),
                    "eval": False,
                    "epochs": 1,
                    "max_length": 40,
                },  # fmt: skip
                "grid": {"method": ["GA+GD"]},
            }
        )
    )
    return {
        "run": run_cmd(qa, out),
        "eval": [
            "eval",
            "--model",
            str(model_dir),
            "--forget",
            str(qa["forget"]),
            "--retain",
            str(qa["retain"]),
            "--nli",
            "none",
            "--out",
            str(out),
        ],  # fmt: skip
        "audit": [
            "audit",
            "--model",
            str(model_dir),
            "--forget",
            str(qa["forget"]),
            "--attacks",
            "memorization",
            "--out",
            str(out),
        ],  # fmt: skip
        "continual": [
            "continual",
            *TINY,
            "--data",
            str(synth_dir),
            "--method",
            "GA",
            "--tasks",
            "1",
            "--no-eval",
            "--out",
            str(out),
        ],  # fmt: skip
        "sweep": ["sweep", "--config", str(sweep)],
        "data synth": ["data", "synth", "--authors", "20", "--qa-per-author", "3", "--out", str(out)],
        "report": ["report", str(model_dir.parent), "--out", str(out)],
        "demo": ["demo", "--out", str(out)],
    }


OVERWRITE = {"run", "eval", "audit", "data synth", "demo"}  # the commands with --overwrite


@pytest.mark.parametrize("name", ["run", "eval", "audit", "continual", "sweep", "data synth", "report", "demo"])
def test_every_command_leaves_a_users_files_byte_for_byte(name, qa, model_dir, synth_dir, tmp_path, capsys):
    """--out at a folder of the user's holding files with the names the command writes: refused in one
    line before anything is written, with or without --overwrite, and every file survives."""
    for extra in ([], ["--overwrite"]) if name in OVERWRITE else ([],):
        out = user_folder(tmp_path / f"user{len(extra)}")
        before = fingerprint(out)
        args = commands(qa, model_dir, synth_dir, tmp_path, out)[name] + extra
        assert main(args) == 2, name
        err = capsys.readouterr().err
        assert "was not written by unlearn" in err and "Traceback" not in err, err
        assert fingerprint(out) == before
        assert not (out / outputs.OWNED).exists() or json.loads((out / outputs.OWNED).read_text())["names"] == []


def test_a_run_writes_around_a_users_files_and_overwrite_replaces_only_its_own(qa, tmp_path):
    out = user_folder(tmp_path / "mine", names={"notes.txt", "forget01.json", "target/notes.txt"})
    assert main(run_cmd(qa, out)) == 0
    assert (out / "model").is_dir()
    assert main(run_cmd(qa, out, "--overwrite")) == 0
    assert_kept(out, {"notes.txt", "forget01.json", "target/notes.txt"})
    assert not list(out.glob(".previous-*"))
    owned = json.loads((out / outputs.OWNED).read_text())
    assert owned["created"] is False and "model" in owned["names"] and "notes.txt" not in owned["names"]


def test_a_run_whose_out_is_its_data_folder_keeps_the_data(synth_dir, tmp_path):
    data = Path(shutil.copytree(synth_dir, tmp_path / "data"))
    before = fingerprint(data)
    args = ["run", *TINY, "--data", str(data), "--method", "GA", "--epochs", "1", "--no-eval", "--out", str(data)]
    assert main(args) == 0
    assert main(args + ["--overwrite"]) == 0
    after = fingerprint(data)
    assert {k: v for k, v in after.items() if k in before and k != outputs.OWNED} == {
        k: v for k, v in before.items() if k != outputs.OWNED
    }


def test_data_synth_and_demo_refuse_a_users_data(tmp_path, capsys):
    out = user_folder(tmp_path / "d", names={"forget01.json"})
    for extra in ([], ["--overwrite"]):
        assert main(["data", "synth", "--out", str(out), *extra]) == 2
        assert "forget01.json: was not written by unlearn" in capsys.readouterr().err
    assert_kept(out, {"forget01.json"})
    demo = user_folder(tmp_path / "demo", names={"data/forget05.json"})
    assert main(["demo", "--out", str(demo), "--overwrite"]) == 2
    assert "data: was not written by unlearn" in capsys.readouterr().err
    assert_kept(demo, {"data/forget05.json"})
    # its own data set: refused without --overwrite, replaced with it
    own = tmp_path / "own"
    assert main(["data", "synth", "--out", str(own), "--authors", "20", "--qa-per-author", "3"]) == 0
    assert main(["data", "synth", "--out", str(own), "--authors", "20", "--qa-per-author", "3"]) == 2
    assert "already holds a data set" in capsys.readouterr().err
    assert main(["data", "synth", "--out", str(own), "--authors", "20", "--qa-per-author", "3", "--overwrite"]) == 0


def test_audit_overwrite_refuses_to_replace_its_own_model_input(qa, model_dir, tmp_path, capsys):
    out = as_ours(tmp_path / "audit")
    relearned = out / "relearn" / "model"  # an earlier --save-relearned model, audited now
    shutil.copytree(model_dir, relearned)
    before = fingerprint(relearned)
    args = ["audit", "--model", str(relearned), "--forget", str(qa["forget"]), "--attacks", "memorization",
            "--out", str(out), "--overwrite"]  # fmt: skip
    assert main(args) == 2
    assert "which --model points into" in capsys.readouterr().err
    assert fingerprint(relearned) == before


def test_audit_overwrite_replaces_its_own_audit(qa, model_dir, tmp_path):
    out = tmp_path / "a"
    args = ["audit", "--model", str(model_dir), "--forget", str(qa["forget"]), "--attacks", "memorization",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    cost = json.loads((out / "audit.json").read_text())["seconds"]  # each attack's cost, per model
    assert cost["memorization"]["unlearned"] >= 0
    assert main(args) == 2  # an audit is there
    assert main(args + ["--overwrite"]) == 0
    assert (out / "audit.json").is_file() and not list(out.glob(".previous-*"))


def test_claim_records_and_refuses(tmp_path):
    folder = tmp_path / "f"
    assert outputs.claim(folder, ["a.json", "eval_*.jsonl"]) is None
    assert outputs.created_here(folder) and outputs.is_ours(folder, "anything")
    (folder / "a.json").write_text("1")
    with pytest.raises(OutputError, match="already holds results"):
        outputs.claim(folder, ["a.json"])
    aside = outputs.claim(folder, ["a.json"], overwrite=True)
    assert (aside / "a.json").read_text() == "1" and not (folder / "a.json").exists()
    outputs.discard_aside(folder)
    assert not aside.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "eval_Forget.jsonl").write_text("mine")
    with pytest.raises(OutputError, match="eval_Forget.jsonl: was not written by unlearn"):
        outputs.claim(mine, ["a.json", "eval_*.jsonl"], overwrite=True)
    outputs.claim(mine, ["a.json"])
    assert outputs.is_ours(mine, "a.json") and not outputs.is_ours(mine, "eval_Forget.jsonl")
    with pytest.raises(OutputError, match="is a file"):
        outputs.make_folder(mine / "eval_Forget.jsonl")
