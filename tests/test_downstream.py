"""General-ability evaluation through lm-eval, offline, on a tiny in-process Llama and local tasks."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import write_jsonl
from unlearn.errors import ConfigError, DependencyError
from unlearn.evaluation.downstream import PAPER_TASKS, _task_scores, parse_tasks, run_downstream, summary_entries

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

FIXTURE = Path(__file__).parent / "fixtures" / "lm_eval_task"
MC, QA = "unlearn_tiny_mc", "unlearn_tiny_qa"


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """The fixture tasks with absolute ``data_files`` (``datasets`` resolves relative ones against
    the working directory) and a private ``datasets`` cache."""
    pytest.importorskip("lm_eval")
    return prepare_tasks(tmp_path_factory.mktemp("lm_eval_task"))


def prepare_tasks(root: Path) -> Path:
    """The fixture tasks copied into ``root``, made runnable from any working directory."""
    for src in FIXTURE.iterdir():
        shutil.copy(src, root / src.name)
    for yml in root.glob("*.yaml"):
        cfg = yaml.safe_load(yml.read_text(encoding="utf-8"))
        kw = cfg["dataset_kwargs"]
        kw["data_files"] = {split: str(root / name) for split, name in kw["data_files"].items()}
        kw["cache_dir"] = str(root / "hf_datasets_cache")
        yml.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def tiny():
    from unlearn.models import build_tiny_model, build_tiny_tokenizer

    rows = [json.loads(line) for line in (FIXTURE / "tiny_mc.jsonl").read_text().splitlines()]
    texts = [r["question"] + " " + " ".join(r["choices"]) for r in rows]
    tok = build_tiny_tokenizer(texts, vocab_size=400)
    return build_tiny_model(tok, hidden_size=32), tok


# ------------------------------------------------------------------------- no lm-eval needed


def test_parse_tasks_expands_paper_and_dedups():
    assert parse_tasks("mmlu, paper,,gsm8k") == ["mmlu", "arc_challenge", "truthfulqa_mc1", "triviaqa", "gsm8k"]
    with pytest.raises(ConfigError, match="no task"):
        parse_tasks(" , ")


def test_paper_metric_is_picked_from_lm_eval_results():
    res = {
        "results": {
            "gsm8k": {
                "alias": "gsm8k",
                "exact_match,strict-match": 0.1,
                "exact_match_stderr,strict-match": "N/A",
                "exact_match,flexible-extract": 0.25,
            }
        },
        "groups": {"mmlu": {"alias": "mmlu", "acc,none": 0.4, "acc_stderr,none": 0.01}},
    }
    assert _task_scores("gsm8k", res) == ({"exact_match,flexible-extract": 0.25}, 0.25)
    assert _task_scores("mmlu", res) == ({"acc": 0.4}, 0.4)  # a group's aggregate
    with pytest.raises(ValueError, match="acc_norm"):
        _task_scores("arc_challenge", {"results": {"arc_challenge": {"acc,none": 0.3}}})
    down = {"gsm8k": {"exact_match,flexible-extract": 0.25}, "mmlu": {"acc": 0.4}, "average": 0.325}
    assert summary_entries(down) == {"Downstream gsm8k": 0.25, "Downstream mmlu": 0.4, "Downstream Average": 0.325}
    assert set(PAPER_TASKS) == {"arc_challenge", "mmlu", "truthfulqa_mc1", "triviaqa", "gsm8k"}


def test_missing_lm_eval_gives_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # makes `import lm_eval` fail
    with pytest.raises(DependencyError, match=r"pip install 'unlearn-llm\[downstream\]'"):
        run_downstream(None, None, [MC], tmp_path)


# ----------------------------------------------------------------------------------- lm-eval


def test_run_downstream_on_local_tasks(tiny, task_dir, tmp_path):
    model, tok = tiny
    out = run_downstream(model, tok, [MC, QA], tmp_path, batch_size=4, include_path=task_dir)
    assert set(out[MC]) == {"acc", "acc_norm"}
    assert set(out[QA]) == {"exact_match,remove_whitespace"}
    for value in [*out[MC].values(), *out[QA].values()]:
        assert 0.0 <= value <= 1.0
    # the headline of a custom task is its first metric: acc here
    assert math.isclose(out["average"], (out[MC]["acc"] + out[QA]["exact_match,remove_whitespace"]) / 2)
    assert json.loads((tmp_path / "downstream.json").read_text()) == out
    # lm-eval's standard error of a mean of 0/1 scores over n items: sqrt(p (1 - p) / (n - 1)), by hand
    n = len((FIXTURE / "tiny_mc.jsonl").read_text().splitlines())
    p = out[MC]["acc"]
    assert out["stderr"][MC] == pytest.approx(math.sqrt(p * (1 - p) / (n - 1)), rel=1e-9)
    errs = [out["stderr"][MC], out["stderr"][QA]]
    assert out["stderr"]["average"] == pytest.approx(math.sqrt(sum(e * e for e in errs)) / 2)
    from unlearn.evaluation.downstream import add_intervals, normal_interval
    from unlearn.evaluation.intervals import read_intervals

    add_intervals(tmp_path / "intervals.json", out, by_task=True)
    iv = read_intervals(tmp_path)
    want = normal_interval(p, out["stderr"][MC])
    assert (
        (iv[f"Downstream {MC}"].lo, iv[f"Downstream {MC}"].hi)
        == (want["lo"], want["hi"])
        == (
            max(0.0, p - 1.959963984540054 * out["stderr"][MC]),
            min(1.0, p + 1.959963984540054 * out["stderr"][MC]),
        )
    )
    assert iv[MC] == iv[f"Downstream {MC}"] and iv["Downstream Average"].value == out["average"]


def test_cli_run_writes_downstream_and_merges_summary(task_dir, tmp_path):
    from unlearn.__main__ import main

    rows = [{"question": f"What is fact {i}?", "answer": f"Fact {i} is number {i}."} for i in range(4)]
    forget = write_jsonl(tmp_path / "forget.jsonl", rows[:2])
    retain = write_jsonl(tmp_path / "retain.jsonl", rows[2:])
    out = tmp_path / "out"
    code = main(
        [
            "run",
            "--model",
            "tiny",
            "--forget",
            str(forget),
            "--retain",
            str(retain),
            "--method",
            "GA",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
            "--dtype",
            "float32",
            "--no-eval",
            "--downstream",
            MC,
            "--downstream-include",
            str(task_dir),
            "--downstream-limit",
            "3",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    down = json.loads((out / "downstream.json").read_text())
    assert 0.0 <= down[MC]["acc"] <= 1.0 and down["average"] == down[MC]["acc"]

    # A run with an evaluation: its summary.json gains the downstream entries.
    from unlearn.evaluation.downstream import downstream_after_unlearning
    from unlearn.models import load_model
    from unlearn.rundir import RunDir

    (out / "summary.json").write_text(json.dumps({"Model Utility": 0.5}))
    model, tok = load_model(str(out / "model"))
    downstream_after_unlearning(model, tok, RunDir(out), [MC], batch_size=8, limit=2, include_path=str(task_dir))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["Model Utility"] == 0.5
    assert summary["Downstream Average"] == summary[f"Downstream {MC}"]
    intervals = json.loads((out / "intervals.json").read_text())
    assert set(intervals["intervals"]) >= {f"Downstream {MC}", "Downstream Average"} and intervals["downstream"]


def test_cli_unknown_task_fails_before_training(task_dir, tmp_path, capsys, monkeypatch):
    from unlearn.__main__ import main
    from unlearn.evaluation import downstream

    # keep lm-eval's ~10 s scan of its built-in tasks out of this test
    monkeypatch.setattr(downstream, "_task_manager", _local_only_manager)
    row = {"question": "q?", "answer": "a."}
    f = write_jsonl(tmp_path / "f.jsonl", [row])
    code = main(
        [
            "run",
            "--model",
            "tiny",
            "--forget",
            str(f),
            "--retain",
            str(f),
            "--no-eval",
            "--downstream",
            "unlearn_tiny_mcq",
            "--downstream-include",
            str(task_dir),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "unlearn_tiny_mcq" in err and "did you mean unlearn_tiny_mc" in err
    assert not (tmp_path / "out" / "model").exists()


def _local_only_manager(tasks, include_path):
    from lm_eval.tasks import TaskManager

    from unlearn.evaluation.downstream import _check_known

    manager = TaskManager(include_path=include_path, include_defaults=False)
    _check_known(tasks, manager, include_path)
    return manager


def test_real_world_run_with_eval_and_downstream(task_dir, shared_data, tmp_path):
    """The real-world scenario end to end on a slice of the official files: unlearn, the paper's
    evaluation (Retain = neighbours, Forget = forget set, golden answers) and lm-eval downstream."""
    from unlearn.__main__ import main

    rw = tmp_path / "real_world"
    rw.mkdir()
    for name, n in (("forget", 4), ("forget_perturbed", 4), ("neighbor", 6), ("neighbor_perturbed", 6)):
        rows = [json.loads(x) for x in (shared_data / "real_world" / f"{name}.json").read_text().splitlines()[:n]]
        write_jsonl(rw / f"{name}.json", rows)
    out = tmp_path / "run"
    code = main(
        [
            "run",
            "--model",
            "tiny",
            "--data",
            str(rw),
            "--task-id",
            "1",
            "--method",
            "ME+GD",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
            "--max-length",
            "96",
            "--nli",
            "none",
            "--eval-batch-size",
            "4",
            "--downstream",
            MC,
            "--downstream-include",
            str(task_dir),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {"Retain ROUGE", "Forget ROUGE", "Model Utility", "Forget Efficacy"} <= set(summary)
    assert not any(k.startswith(("Real Authors", "Real World")) for k in summary)  # TOFU-only sets
    assert 0.0 <= summary[f"Downstream {MC}"] <= 1.0 and "Downstream Average" in summary
    assert (out / "downstream.json").exists() and (out / "eval_Retain.jsonl").exists()
