"""Continual unlearning over 2 tasks, including resume after an interruption."""

import dataclasses
import json

import pytest

from unlearn.config import Config
from unlearn.continual import continual, parse_tasks
from unlearn.data import DataError
from unlearn.io import read_csv_rows


@pytest.fixture(scope="module")
def target(synth_dir, tmp_path_factory):
    from unlearn.pipeline import finetune

    out = tmp_path_factory.mktemp("cont_target")
    cfg = Config(
        model="tiny", out=str(out), epochs=3, lr=3e-3, batch_size=8, grad_accum=1, warmup=0, seed=0, max_length=96
    )
    return finetune(cfg, [str(synth_dir / "full.json")])


def _cfg(synth_dir, target, out, **kw):
    base = dict(
        model=str(target),
        data=str(synth_dir),
        split="forget05",
        method="GA+GD",
        epochs=1,
        lr=1e-3,
        batch_size=2,
        grad_accum=1,
        max_length=96,
        nli="none",
        out=str(out),
        seed=0,
    )
    base.update(kw)
    return Config(**base)


def test_parse_tasks():
    assert parse_tasks("1,3", [1, 2, 3]) == [1, 3]
    assert parse_tasks("1-3", [1, 2, 3]) == [1, 2, 3]
    assert parse_tasks(None, [4, 5]) == [4, 5]
    with pytest.raises(DataError, match="do not exist"):
        parse_tasks("1,9", [1, 2])
    with pytest.raises(DataError, match="twice"):
        parse_tasks("1,1", [1, 2])


def test_two_tasks_then_resume(synth_dir, target, tmp_path, monkeypatch):
    import unlearn.pipeline as pipeline
    import unlearn.protocols.plan as commands

    calls = []
    real_run = pipeline.run

    def counting(cfg, **kw):
        calls.append(cfg.task_id)
        return real_run(cfg, **kw)

    monkeypatch.setattr(pipeline, "run", counting)
    real_eval = commands.EvalPlan.evaluate
    state = {"fail": True}

    def flaky(plan, model, tokenizer, fmt, out, **kw):  # the run dies while evaluating task 2, the first time
        if out.path.name == "task_2" and state["fail"]:
            state["fail"] = False
            raise KeyboardInterrupt
        return real_eval(plan, model, tokenizer, fmt, out, **kw)

    monkeypatch.setattr(commands.EvalPlan, "evaluate", flaky)
    cfg = _cfg(synth_dir, target, tmp_path / "c")
    with pytest.raises(KeyboardInterrupt):
        continual(cfg, "1,2")
    rows = read_csv_rows(tmp_path / "c" / "continual.csv")
    assert [r["task"] for r in rows] == ["1"]

    rows = continual(cfg, "1,2")  # resumes at task 2: task 1 is not trained again
    assert calls == [1, 2, 2]
    saved = read_csv_rows(tmp_path / "c" / "continual.csv")
    assert [(r["task"], r["n_unlearned"]) for r in saved] == [("1", "1"), ("2", "2")]
    assert "Model Utility" in saved[0] and "Forget Efficacy" in saved[1]
    assert all(float(r["seconds"]) > 0 for r in saved)  # each task's wall time
    for t in (1, 2):
        summary = json.loads((tmp_path / "c" / f"task_{t}" / "summary.json").read_text())
        assert summary["Forget ROUGE"] is not None
    # only the latest model is kept
    assert not (tmp_path / "c" / "task_1" / "model").exists()
    assert (tmp_path / "c" / "task_2" / "model" / "model.safetensors").exists()
    # task 2's retain set no longer holds task 1's rows but still holds the later tasks'
    data2 = json.loads((tmp_path / "c" / "task_2" / "data.json").read_text())
    data1 = json.loads((tmp_path / "c" / "task_1" / "data.json").read_text())
    assert data1["retain"] - data2["retain"] == data2["forget"]

    continual(cfg, "1,2")  # all done: nothing is trained
    assert calls == [1, 2, 2]
    assert len(read_csv_rows(tmp_path / "c" / "continual.csv")) == 2


def test_fix_ref_model_needs_a_folder(synth_dir, target, tmp_path):
    cfg = dataclasses.replace(_cfg(synth_dir, target, tmp_path / "x"), model="tiny", fix_ref_model=True)
    with pytest.raises(DataError, match="fix-ref-model"):
        continual(cfg, "1")


def test_a_rerun_skips_a_finished_task_whose_model_was_pruned(synth_dir, target, tmp_path, monkeypatch):
    """Without evaluation a task is finished when continual.csv holds its row; only the latest model
    is kept, so an earlier finished task has its config but no model: it is not trained again."""
    from types import SimpleNamespace

    import unlearn.pipeline as pipeline
    from tests.conftest import as_ours
    from unlearn.io import write_csv_rows

    root = as_ours(tmp_path / "c")
    for task, model in ((1, False), (2, True)):
        folder = as_ours(root / f"task_{task}")
        (folder / "config.yaml").write_text("method: GA+GD\n")
        if model:
            (folder / "model").mkdir()
    write_csv_rows(root / "continual.csv", [{"task": 1, "n_unlearned": 1}, {"task": 2, "n_unlearned": 2}])
    calls = []

    def fake_run(cfg, **kw):
        calls.append((cfg.task_id, cfg.model))
        return SimpleNamespace(summary={})

    monkeypatch.setattr(pipeline, "run", fake_run)
    continual(_cfg(synth_dir, target, root, eval=False), "1,2,3")
    assert calls == [(3, str(root / "task_2" / "model"))]
