"""``unlearn forget`` end to end on a tiny model that learned its records: the stopping rule, the goal met
(stops early, keeps that checkpoint, audits, reports, ships a model card), records never learned,
a budget that cannot meet the goal (exit 3), the refuse style, resume after a kill, and bad input
refused before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import write_jsonl
from unlearn.__main__ import main


def _records():
    from unlearn.synthetic import generate

    full = generate(20, 3, seed=0)["full.json"]
    known = {r["question"] for r in full}
    other = [r for r in generate(20, 3, seed=7)["full.json"] if r["question"] not in known]  # never trained on
    pick = lambda rows: [{"question": r["question"], "answer": r["answer"]} for r in rows]  # noqa: E731
    return pick(full[:6]), pick(full[6:18]), pick(other[:6])


FORGET, RETAIN, HOLDOUT = _records()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("records")
    return {name: write_jsonl(d / f"{name}.jsonl", rows) for name, rows in
            (("forget", FORGET), ("retain", RETAIN), ("holdout", HOLDOUT), ("train", FORGET + RETAIN))}  # fmt: skip


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """An untrained tiny model whose tokenizer knows every record's words."""
    from unlearn.models import save_model
    from unlearn.presets import build_tiny_model, build_tiny_tokenizer

    tok = build_tiny_tokenizer([r["question"] + " " + r["answer"] for r in FORGET + RETAIN + HOLDOUT])
    return save_model(build_tiny_model(tok), tok, tmp_path_factory.mktemp("base") / "model")


@pytest.fixture(scope="module")
def target(files, base, tmp_path_factory):
    """The base model fine-tuned on the forget and retain records (it recalls them; the holdout it never saw)."""
    out = tmp_path_factory.mktemp("target") / "t"
    args = ["finetune", "--model", str(base), "--train", str(files["train"]), "--epochs", "25", "--lr", "3e-3",
            "--batch-size", "6", "--grad-accum", "1", "--weight-decay", "0", "--max-length", "48", "--seed", "0",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    return out / "model"


def forget_args(files, model, out, *extra):
    sets = ["--forget", str(files["forget"]), "--retain", str(files["retain"]), "--holdout", str(files["holdout"])]
    return ["forget", "--model", str(model), *sets, "--nli", "none", "--max-length", "48", "--out", str(out), *extra]


def test_the_goal_rule():
    """Forgotten: forget means at most the holdout's upper 95% bound (without a holdout: half of before);
    kept: Retain ROUGE at least (1 - keep_within) x before; step 0 is the model before unlearning."""
    from unlearn.forget.goal import Goal

    def items(forget, holdout):
        return {
            "Forget": [{"rouge": v, "probability": v / 2} for v in forget],
            "Holdout": [{"rouge": v, "probability": v / 2} for v in holdout],
        }

    def row(step, forget, holdout, retain):
        f = sum(forget) / len(forget)
        return {"step": step, "Forget ROUGE": f, "Forget Probability": f / 2, "Retain ROUGE": retain,
                "Retain Probability": retain, "Holdout ROUGE": sum(holdout) / len(holdout)}  # fmt: skip

    h = [0.2, 0.3, 0.25]
    goal = Goal(keep_within=0.1, holdout=True)
    assert not goal(row(0, [0.9, 1.0, 0.95], h, 0.9), items([0.9, 1.0, 0.95], h))
    assert goal.checks[0]["kept"] and not goal.checks[0]["forgotten"]
    assert goal(row(5, [0.3, 0.2, 0.25], h, 0.85), items([0.3, 0.2, 0.25], h))
    # the holdout's upper bound (its largest resampled mean is 0.3): 0.29 passes, 0.31 does not
    assert goal(row(6, [0.29] * 3, h, 0.85), items([0.29] * 3, h))
    assert not goal(row(7, [0.31] * 3, h, 0.85), items([0.31] * 3, h))
    # the retain set fell below 90% of its start (0.81)
    assert not goal(row(8, [0.1] * 3, h, 0.80), items([0.1] * 3, h))
    assert goal.checks[8]["forgotten"] and not goal.checks[8]["kept"]
    # without a holdout: half of the values before
    weak = Goal(keep_within=0.1, holdout=False)
    weak(row(0, [0.9, 1.0, 0.95], h, 0.9), {})
    assert weak(row(3, [0.47] * 3, h, 0.9), {}) and not weak(row(4, [0.49] * 3, h, 0.9), {})


def test_goal_met_stops_early_audits_reports_and_ships(files, target, tmp_path, capsys, monkeypatch):
    """The stopping mechanics, with the goal made to hold from step 4 on (the rule is tested above)."""
    from unlearn.forget.goal import Goal

    real = Goal.__call__
    monkeypatch.setattr(Goal, "__call__", lambda self, row, items: real(self, row, items) or row["step"] >= 4)
    out = tmp_path / "f"
    assert main(forget_args(files, target, out, "--eval-every", "2")) == 0
    said = capsys.readouterr().out
    assert "unlearn forget — the plan:" in said and "rough time estimate" in said
    result = json.loads((out / "forget.json").read_text())
    assert result["verdict"]["code"] == "forgotten and kept" and result["verdict"]["exit status"] == 0
    kept = json.loads((out / "kept.json").read_text())
    assert kept == {"step": 4, "goal met": True} and result["steps"] == 4 < result["plan"]["steps"]
    log = [json.loads(x) for x in (out / "eval_log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["goal met"]) for r in log] == [(0, False), (2, False), (4, True)]
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 4  # no step after the goal
    assert set(result["goal"]) == {"0", "2", "4"} and result["before"]["Holdout"]["ROUGE"] is not None
    assert (out / "audit" / "audit.json").is_file() and result["audit"]["findings"]
    first = (out / "report.md").read_text().splitlines()[:3]
    assert first[0].startswith("# unlearn forget") and first[2].startswith("Forgotten and kept: after 4 steps")
    card = (out / "model" / "README.md").read_text()
    assert "6 records" in card and result["records"]["forget"]["sha256 of the set"] in card
    assert FORGET[0]["answer"] not in card  # counts and hashes, never the records
    assert (out / "model" / "model.safetensors").is_file() and (out / "report.html").is_file()


def test_records_the_model_never_learned_need_no_unlearning(files, base, tmp_path, capsys):
    """The untrained model recalls the forget records no better than the holdout: met at step 0."""
    out = tmp_path / "n"
    assert main(forget_args(files, base, out, "--attacks", "memorization")) == 0
    result = json.loads((out / "forget.json").read_text())
    assert result["verdict"]["code"] == "nothing to forget" and result["steps"] == 0
    assert "Nothing to forget" in capsys.readouterr().out


def test_a_budget_that_cannot_meet_the_goal_exits_3(files, target, tmp_path, capsys):
    out = tmp_path / "f"
    assert main(forget_args(files, target, out, "--max-steps", "1", "--attacks", "memorization")) == 3
    said = capsys.readouterr().out
    assert "NOT met within the budget of 1 steps" in said
    result = json.loads((out / "forget.json").read_text())
    assert result["verdict"]["exit status"] == 3 and result["plan"]["steps"] == 1


def test_refuse_style_and_resume_after_a_kill(files, target, tmp_path, monkeypatch, capsys):
    import unlearn.train_setup

    real = unlearn.train_setup.append_jsonl

    def die_at_step_2(path, row):
        real(path, row)
        if Path(path).name == "train_log.jsonl" and row["step"] == 2:
            raise KeyboardInterrupt

    out = tmp_path / "r"
    args = forget_args(files, target, out, "--style", "refuse", "--attacks", "memorization", "--eval-every", "1",
                       "--max-steps", "4")  # fmt: skip
    monkeypatch.setattr(unlearn.train_setup, "append_jsonl", die_at_step_2)
    assert main(args) == 130
    monkeypatch.undo()
    assert (out / "checkpoint").is_dir() and not (out / "model").exists()
    assert main(args + ["--resume"]) in (0, 3)
    result = json.loads((out / "forget.json").read_text())
    assert result["plan"]["method"] == "IDK+AP" and result["plan"]["style"] == "refuse"
    steps = [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, len(steps) + 1))  # the resumed log goes on where it stopped
    assert (out / "report.md").is_file() and (out / "model" / "README.md").is_file()


def test_bad_input_is_refused_before_any_model_loads(files, target, tmp_path, monkeypatch, capsys):
    import unlearn.models

    monkeypatch.setattr(unlearn.models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    out = tmp_path / "o"
    cases = [
        (["--forget", str(bad)], "bad.jsonl:1: missing field 'answer'"),
        (["--style", "nope"], "--style: choose forget or refuse"),
        (["--keep-within", "1.5"], "--keep-within"),
        (["--holdout", str(tmp_path / "none.jsonl")], "none.jsonl: file not found"),
    ]
    for extra, said in cases:
        assert main(forget_args(files, target, out, *extra)) == 2
        assert said in capsys.readouterr().err
    assert not out.exists()
