"""``unlearn sweep``: grid order, folder names, resuming, validation, dry run; one real tiny sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import unlearn.sweep as sweep
from tests.conftest import write_jsonl
from unlearn.__main__ import main
from unlearn.io import read_csv_rows


def write_sweep(path: Path, base: dict, grid: dict, out: Path | None, **extra) -> Path:
    doc = {"base": base, "grid": grid, **extra}
    if out is not None:
        doc["out"] = str(out)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def calls(monkeypatch) -> list[dict]:
    """Replace the unlearn+eval step with a fake that writes what a finished run leaves."""
    seen: list[dict] = []

    def fake_run_one(cfg, plan):
        out = Path(cfg.out)
        seen.append(
            {
                "out": out,
                "method": cfg.method,
                "lr": cfg.lr,
                "overwrite": cfg.overwrite,
                "resume": cfg.resume,
                "sets": [s.name for s in plan.sets or []],
            }
        )
        if cfg.method == "NPO+KL":
            raise RuntimeError("non-finite loss at step 3")
        (out / "model").mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
        summary = {"Model Utility": 0.5, "Forget Efficacy": 0.25 if cfg.method == "ME+GD" else 0.75}
        (out / "summary.json").write_text(json.dumps(summary))
        return summary

    monkeypatch.setattr(sweep, "run_one", fake_run_one)
    return seen


@pytest.fixture
def grid_file(tmp_path, synth_dir) -> Path:
    base = {"model": "tiny", "data": str(synth_dir), "nli": "none", "epochs": 1}
    grid = {"method": ["ME+GD", "IDK+AP"], "lr": ["1e-5", 5.0e-6], "split": ["forget01"]}
    return write_sweep(tmp_path / "sweep.yaml", base, grid, tmp_path / "sw")


NAMES = [
    "method-ME+GD__lr-1e-05__split-forget01",
    "method-ME+GD__lr-5e-06__split-forget01",
    "method-IDK+AP__lr-1e-05__split-forget01",
    "method-IDK+AP__lr-5e-06__split-forget01",
]


def test_grid_order_folder_names_and_csv(grid_file, calls, capsys, tmp_path):
    assert main(["sweep", "--config", str(grid_file)]) == 0
    root = tmp_path / "sw"
    assert [c["out"] for c in calls] == [root / n for n in NAMES]
    assert [(c["method"], c["lr"]) for c in calls] == [
        ("ME+GD", 1e-5),
        ("ME+GD", 5e-6),
        ("IDK+AP", 1e-5),
        ("IDK+AP", 5e-6),
    ]
    assert calls[0]["sets"][:4] == ["Retain", "Real Authors", "Real World", "Forget"]  # validated up front
    assert not any(c["overwrite"] for c in calls)
    out = capsys.readouterr().out
    assert "[1/4] method-ME+GD__lr-1e-05__split-forget01: running" in out
    assert "[4/4] method-IDK+AP__lr-5e-06__split-forget01: done in" in out and "MU 0.5, FE 0.75" in out
    assert all(str(root / n) in out for n in NAMES)  # the final list of run folders
    rows = read_csv_rows(root / "sweep.csv")
    assert [r["run"] for r in rows] == NAMES and {r["status"] for r in rows} == {"done"}
    assert rows[0]["method"] == "ME+GD" and rows[1]["lr"] == "5e-06" and rows[0]["Forget Efficacy"] == "0.25"
    assert (root / "sweep.yaml").read_text() == grid_file.read_text()


def test_rerun_skips_finished_and_redoes_half_finished(grid_file, calls, capsys, tmp_path):
    assert main(["sweep", "--config", str(grid_file)]) == 0
    first = {r["run"]: r["seconds"] for r in read_csv_rows(tmp_path / "sw" / "sweep.csv")}
    calls.clear()
    capsys.readouterr()
    assert main(["sweep", "--config", str(grid_file)]) == 0
    assert calls == []  # everything finished: nothing runs
    assert "[2/4] method-ME+GD__lr-5e-06__split-forget01: finished, skipped: MU 0.5, FE 0.25" in capsys.readouterr().out
    rows = read_csv_rows(tmp_path / "sw" / "sweep.csv")
    assert {r["status"] for r in rows} == {"skipped"}
    assert {r["run"]: r["seconds"] for r in rows} == first and all(first.values())  # a skipped run keeps its time

    half = tmp_path / "sw" / NAMES[2]
    (half / "summary.json").unlink()  # trained, then stopped during the evaluation
    assert main(["sweep", "--config", str(grid_file)]) == 0
    assert [(c["out"], c["overwrite"]) for c in calls] == [(half, True)]
    assert "redoing" in capsys.readouterr().out
    assert [r["status"] for r in read_csv_rows(tmp_path / "sw" / "sweep.csv")] == [
        "skipped",
        "skipped",
        "done",
        "skipped",
    ]


def test_a_run_stopped_with_a_checkpoint_resumes_from_it(grid_file, calls, capsys, tmp_path, monkeypatch):
    from unlearn.rundir import RunDir

    assert main(["sweep", "--config", str(grid_file)]) == 0
    calls.clear()
    half = tmp_path / "sw" / NAMES[1]
    (half / "summary.json").unlink()
    (half / "model").rmdir()  # stopped while training, after writing a checkpoint
    monkeypatch.setattr(RunDir, "resumable", lambda self: self.path == half)
    capsys.readouterr()
    assert main(["sweep", "--config", str(grid_file), "--dry-run"]) == 0  # the plan says what will happen
    assert f"{half}  (unfinished, resume from its checkpoint)" in capsys.readouterr().out and not calls
    assert main(["sweep", "--config", str(grid_file)]) == 0
    assert [(c["out"], c["overwrite"], c["resume"]) for c in calls] == [(half, False, True)]
    assert "resuming from its checkpoint" in capsys.readouterr().out
    assert [r["status"] for r in read_csv_rows(tmp_path / "sw" / "sweep.csv")][1] == "done (resumed)"
    assert main(["sweep", "--config", str(grid_file)]) == 0  # its time counts from the resume: still said
    assert [r["status"] for r in read_csv_rows(tmp_path / "sw" / "sweep.csv")][1] == "skipped (resumed)"


def test_dry_run_plans_without_running(grid_file, calls, capsys, tmp_path):
    assert main(["sweep", "--config", str(grid_file), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert calls == [] and not (tmp_path / "sw").exists()
    assert "4 run(s) planned" in out
    lines = [line for line in out.splitlines() if line.startswith("[")]
    assert [line.split()[1] for line in lines] == [str(tmp_path / "sw" / n) for n in NAMES]
    assert all("(run)" in line for line in lines)


@pytest.mark.parametrize(
    "base, grid, extra, message",
    [
        ({}, {"lrr": [1e-5]}, {}, "grid: unknown key 'lrr'"),
        ({"epoch": 1}, {}, {}, "base: unknown key 'epoch'"),
        ({}, {"method": ["ME+GD", "XYZ+GD"]}, {}, "unknown method 'XYZ+GD'"),
        ({}, {"lr": ["fast"]}, {}, "'lr' must be a number"),
        ({}, {"lr": []}, {}, "grid: 'lr' has no values"),
        ({"lr": 1e-5}, {"lr": [1e-5]}, {}, "'lr' is in both base and grid"),
        ({}, {"out": ["a"]}, {}, "'out' is set by the sweep"),
        ({}, {}, {"grids": 1}, "unknown top-level key 'grids'"),
    ],
)
def test_validation_errors_before_anything_runs(tmp_path, synth_dir, calls, capsys, base, grid, extra, message):
    path = write_sweep(tmp_path / "bad.yaml", {"data": str(synth_dir), **base}, grid, tmp_path / "sw", **extra)
    assert main(["sweep", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert calls == [] and not (tmp_path / "sw").exists()


def test_missing_out_and_missing_file(tmp_path, calls, capsys):
    path = write_sweep(tmp_path / "s.yaml", {}, {"method": ["GA"]}, None)
    assert main(["sweep", "--config", str(path)]) == 2
    assert "no output folder" in capsys.readouterr().err
    assert main(["sweep", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "sweep file not found" in capsys.readouterr().err


def test_a_failed_run_does_not_stop_the_sweep(tmp_path, synth_dir, calls, capsys):
    path = write_sweep(
        tmp_path / "s.yaml", {"data": str(synth_dir), "nli": "none"}, {"method": ["NPO+KL", "ME+GD"]}, tmp_path / "sw"
    )
    assert main(["sweep", "--config", str(path)]) == 1
    assert [c["method"] for c in calls] == ["NPO+KL", "ME+GD"]
    assert "[1/2] method-NPO+KL: failed: non-finite loss at step 3" in capsys.readouterr().out
    rows = read_csv_rows(tmp_path / "sw" / "sweep.csv")
    assert [r["status"] for r in rows] == ["failed", "done"] and "non-finite" in rows[0]["error"]


def test_a_sweep_started_under_the_old_names_goes_on_there(grid_file, calls, capsys, tmp_path):
    """Sweeps from before the folder names changed (``method=ME+GD,lr=...``) resume in their folders."""
    assert main(["sweep", "--config", str(grid_file)]) == 0
    root = tmp_path / "sw"
    for new in NAMES:  # as an earlier version laid the sweep out
        old = new.replace("__", ",").replace("method-", "method=").replace("lr-", "lr=").replace("split-", "split=")
        (root / new).rename(root / old)
    calls.clear()
    assert main(["sweep", "--config", str(grid_file)]) == 0
    assert calls == [] and capsys.readouterr().out.count("finished, skipped") == 4
    assert not any((root / n).exists() for n in NAMES)


def test_run_names_are_safe_folder_names():
    assert sweep.run_name({"model": "/models/my model:v2", "lr": 1e-05}) == "model-_models_my_model_v2__lr-1e-05"
    assert sweep.run_name({"method": "ME+GD", "forget_coeff": None}) == "method-ME+GD__forget_coeff-none"
    assert not set(sweep.run_name({"data": "a=b,c d/e", "lr": 0.5})) & set("=, /")  # nothing a shell minds
    assert (
        sweep.run_name({"model": "/models/my model:v2", "lr": 1e-05}, legacy=True)
        == "model=_models_my_model_v2,lr=1e-05"
    )
    assert sweep.run_name({}) == "run"
    long = sweep.run_name({"model": "x" * 400})
    assert len(long) == sweep.MAX_NAME and long != sweep.run_name({"model": "x" * 399})


@pytest.mark.slow
def test_real_sweep_on_a_tiny_model(tmp_path, capsys):
    forget = write_jsonl(
        tmp_path / "forget.jsonl",
        [
            {"question": f"Who wrote the novel number {i}?", "answer": f"Author {i} wrote it in {1990 + i}."}
            for i in range(6)
        ],
    )
    retain = write_jsonl(
        tmp_path / "retain.jsonl",
        [
            {"question": f"What is the capital of country {i}?", "answer": f"City {i} is its capital."}
            for i in range(10)
        ],
    )
    base = {
        "model": "tiny",
        "forget": str(forget),
        "retain": str(retain),
        "eval": False,
        "epochs": 1,
        "batch_size": 2,
        "grad_accum": 1,
        "lr": 1e-3,
    }
    path = write_sweep(tmp_path / "s.yaml", base, {"method": ["GA+GD", "ME+GD"]}, tmp_path / "sw")
    assert main(["sweep", "--config", str(path)]) == 0
    for name in ("method-GA+GD", "method-ME+GD"):
        run = tmp_path / "sw" / name
        assert (run / "model").is_dir() and (run / "config.yaml").is_file(), name
        assert yaml.safe_load((run / "config.yaml").read_text())["method"] == name.split("-", 1)[1]
        assert (run / "train_log.jsonl").read_text().strip()
    rows = read_csv_rows(tmp_path / "sw" / "sweep.csv")
    assert [(r["run"], r["status"]) for r in rows] == [("method-GA+GD", "done"), ("method-ME+GD", "done")]
    capsys.readouterr()
    assert main(["sweep", "--config", str(path)]) == 0  # resumes: both finished (no evaluation: model saved)
    assert capsys.readouterr().out.count("finished, skipped") == 2
