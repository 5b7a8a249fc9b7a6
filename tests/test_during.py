"""Evaluation while unlearning: eval_log rows, --keep best, collapse warnings, resume, the report's plot."""

import json

import pytest

from tests.conftest import write_jsonl
from unlearn.__main__ import main
from unlearn.evaluation.during import best_row, collapse, select_sets

FORGET = [
    {"question": f"What did author {n} write?", "answer": f"{n} wrote the novel {b}."}
    for n, b in [
        ("Ilsa Varn", "Grey Harbour"),
        ("Oren Pask", "Salt Lanterns"),
        ("Mira Tol", "Iron Orchard"),
        ("Bede Lorne", "Quiet Atlas"),
    ]
]
RETAIN = [
    {"question": f"Where was {n} born?", "answer": f"{n} was born in {c}."}
    for n, c in [
        ("Ana Rell", "Porto"),
        ("Tomas Evr", "Riga"),
        ("Leni Oss", "Bergen"),
        ("Kai Dunmore", "Cork"),
        ("Suri Vale", "Quito"),
        ("Per Ahlm", "Umea"),
    ]
]


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    root = tmp_path_factory.mktemp("during")
    forget, retain = write_jsonl(root / "forget.jsonl", FORGET), write_jsonl(root / "retain.jsonl", RETAIN)
    assert (
        main(
            [
                "finetune",
                "--model",
                "tiny",
                "--train",
                str(forget),
                str(retain),
                "--out",
                str(root / "target"),
                "--epochs",
                "60",
                "--lr",
                "3e-3",
                "--batch-size",
                "5",
                "--grad-accum",
                "1",
                "--warmup",
                "5",
                "--weight-decay",
                "0",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    return root, forget, retain


def _run(target, out, *extra):
    root, forget, retain = target
    return main(
        [
            "run",
            "--model",
            str(root / "target" / "model"),
            "--forget",
            str(forget),
            "--retain",
            str(retain),
            "--out",
            str(out),
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
            "--nli",
            "none",
            "--seed",
            "1",
            *extra,
        ]
    )


def _log(out):
    return [json.loads(x) for x in (out / "eval_log.jsonl").read_text().splitlines()]


def test_best_row_and_collapse_by_hand():
    rows = [
        {"step": 0, "Model Utility": 0.8, "Forget Efficacy": 0.1},
        {"step": 2, "Model Utility": 0.78, "Forget Efficacy": 0.5},
        {"step": 4, "Model Utility": 0.70, "Forget Efficacy": 0.9},  # under 0.9 x 0.8 = 0.72
        {"step": 6, "Model Utility": 0.75, "Forget Efficacy": 0.5},
    ]  # ties with step 2: the earlier wins
    assert best_row(rows, 0.9)["step"] == 2
    assert best_row(rows, 0.85)["step"] == 4  # 0.70 >= 0.85 x 0.8
    assert best_row([], 0.9) is None
    start = {"Retain ROUGE": 0.9, "Forget Token Entropy": 0.8}
    assert collapse({"Retain ROUGE": 0.85, "Forget Token Entropy": 0.7}, start) == []
    fell = collapse({"Retain ROUGE": 0.2, "Forget Token Entropy": 0.1}, start)
    assert len(fell) == 2 and fell[0].startswith("Retain ROUGE 0.200")


def test_eval_every_writes_a_row_per_evaluation(target, tmp_path):
    out = tmp_path / "ga"
    assert (
        _run(
            target,
            out,
            "--method",
            "GA+GD",
            "--epochs",
            "4",
            "--lr",
            "1e-3",
            "--eval-every",
            "2",
            "--eval-sets",
            "forget",
        )
        == 0
    )
    rows = _log(out)
    steps = len((out / "train_log.jsonl").read_text().splitlines())  # 4 epochs x 2 batches = 8
    assert [r["step"] for r in rows] == list(range(0, steps + 1, 2))
    assert rows[0]["epoch"] == 0.0 and rows[-1]["epoch"] == pytest.approx(4.0)
    assert "Forget ROUGE" in rows[0] and "Retain ROUGE" not in rows[0]  # only the sets asked for
    assert rows[-1]["Forget ROUGE"] < rows[0]["Forget ROUGE"]  # it forgets as it trains
    summary = json.loads((out / "summary.json").read_text())  # the final evaluation, every set
    assert summary["Forget ROUGE"] == pytest.approx(rows[-1]["Forget ROUGE"])
    assert not (out / "kept.json").exists() and not list(out.glob(".best-*"))
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    assert "Evaluated while unlearning: Forget; no utility set" in (tmp_path / "report" / "report.md").read_text()


def test_the_last_evaluation_while_training_is_not_done_twice(target, tmp_path, monkeypatch):
    """When the last step is evaluated, the final evaluation takes those sets' records instead of scoring
    them again, and its numbers are those of evaluating the saved model afresh."""
    import unlearn.evaluation.six_metrics as suites

    scored, real = [], suites._evaluate_set
    monkeypatch.setattr(
        suites, "_evaluate_set", lambda model, tok, fmt, s, *a: scored.append(s.name) or real(model, tok, fmt, s, *a)
    )
    root, forget, retain = target
    out = tmp_path / "ga"
    assert (
        _run(
            target,
            out,
            "--method",
            "GA+GD",
            "--epochs",
            "4",
            "--lr",
            "1e-3",
            "--eval-every",
            "2",
            "--eval-sets",
            "forget",
        )
        == 0
    )  # 8 steps: evaluated at 0 (the run's evaluation before unlearning, taken as step 0), 2, 4, 6, 8
    assert scored.count("Forget") == 5 and scored.count("Retain") == 2  # Retain: before and after only
    assert (
        main(
            [
                "eval",
                "--model",
                str(out / "model"),
                "--forget",
                str(forget),
                "--retain",
                str(retain),
                "--out",
                str(tmp_path / "again"),
                "--nli",
                "none",
            ]
        )
        == 0
    )
    summary, again = (json.loads((d / "summary.json").read_text()) for d in (out, tmp_path / "again"))
    for key, value in again.items():
        if isinstance(value, float):
            assert summary[key] == pytest.approx(value, abs=1e-6), key
    assert (out / "eval_Forget.jsonl").read_text() == (tmp_path / "again" / "eval_Forget.jsonl").read_text()
    scored.clear()
    assert (
        _run(
            target,
            tmp_path / "every3",
            "--method",
            "GA+GD",
            "--epochs",
            "4",
            "--lr",
            "1e-3",
            "--eval-every",
            "3",
            "--eval-sets",
            "forget",
        )
        == 0
    )  # evaluated at 0, 3, 6: step 8 is not, so the final one scores it
    assert scored.count("Forget") == 4


def test_a_plans_own_before_evaluation_is_step_0(target, tmp_path, monkeypatch):
    """The demo evaluates its target once and names it the runs' before-evaluation (``plan.before``): a
    run evaluating while it trains takes that folder's per-item records as step 0 instead of scoring
    the same weights again, and its step-0 row is that evaluation's numbers."""
    import unlearn.evaluation.six_metrics as suites
    from unlearn import pipeline
    from unlearn.config import Config
    from unlearn.protocols.plan import plan_evaluation

    root, forget, retain = target
    before = tmp_path / "target_eval"
    model = str(root / "target" / "model")
    common = ["--forget", str(forget), "--retain", str(retain), "--nli", "none"]
    assert main(["eval", "--model", model, *common, "--out", str(before)]) == 0
    scored, real = [], suites._evaluate_set
    monkeypatch.setattr(
        suites, "_evaluate_set", lambda model, tok, fmt, s, *a: scored.append(s.name) or real(model, tok, fmt, s, *a)
    )
    cfg = Config(
        model=model, forget=str(forget), retain=str(retain), out=str(tmp_path / "ga"), method="GA+GD", epochs=4,
        lr=1e-3, batch_size=2, grad_accum=1, nli="none", seed=1, eval_every=2, eval_sets="forget",
    )  # fmt: skip
    plan = plan_evaluation(cfg)
    plan.before = str(before)
    pipeline.run(cfg, plan=plan)
    assert scored.count("Forget") == 4 and scored.count("Retain") == 1  # steps 2, 4, 6, 8; the final one
    start, saved = _log(tmp_path / "ga")[0], json.loads((before / "summary.json").read_text())
    assert start["step"] == 0
    for key in ("Forget ROUGE", "Forget Probability", "Forget Truth Ratio", "Forget Efficacy"):
        assert start[key] == pytest.approx(saved[key], abs=1e-12), key


def test_keep_best_saves_the_best_evaluated_weights(target, tmp_path, monkeypatch):
    """The kept weights are the best evaluated ones; the evaluation after training takes the best
    step's records instead of scoring Forget and Retain again (their numbers: those of the kept row)."""
    import unlearn.evaluation.six_metrics as suites

    scored, real = [], suites._evaluate_set
    monkeypatch.setattr(
        suites, "_evaluate_set", lambda model, tok, fmt, s, *a: scored.append(s.name) or real(model, tok, fmt, s, *a)
    )
    out = tmp_path / "best"
    assert (
        _run(
            target,
            out,
            "--method",
            "GA+GD",
            "--epochs",
            "6",
            "--lr",
            "3e-3",
            "--eval-every",
            "2",
            "--keep",
            "best",
            "--mu-floor",
            "0.9",
        )
        == 0
    )
    rows = _log(out)
    kept = json.loads((out / "kept.json").read_text())
    expected = best_row(rows, 0.9)
    assert kept["step"] == expected["step"]
    summary = json.loads((out / "summary.json").read_text())  # the saved model is the kept one
    assert summary["Forget Efficacy"] == pytest.approx(expected["Forget Efficacy"], abs=1e-6)
    assert summary["Model Utility"] == pytest.approx(expected["Model Utility"], abs=1e-6)
    assert not list(out.glob(".best-*"))  # cleaned up once saved
    assert expected["step"] != rows[-1]["step"]  # (the case this checks: not the last step)
    assert scored.count("Forget") == len(rows)  # before (step 0), then each evaluation; not again after


def test_collapse_is_said(target, tmp_path, caplog):
    out = tmp_path / "collapse"
    with caplog.at_level("WARNING", logger="unlearn"):
        assert _run(target, out, "--method", "GA", "--epochs", "6", "--lr", "2e-2", "--eval-every", "3") == 0
    rows = _log(out)
    assert any(r.get("collapse") for r in rows)
    assert "may be collapsing" in caplog.text
    healthy = tmp_path / "healthy"
    caplog.clear()
    with caplog.at_level("WARNING", logger="unlearn"):
        assert _run(target, healthy, "--method", "ME+GD", "--epochs", "1", "--lr", "1e-4", "--eval-every", "1") == 0
    assert not any(r.get("collapse") for r in _log(healthy)) and "collapsing" not in caplog.text
    report = tmp_path / "report"
    assert main(["report", str(out), str(healthy), "--out", str(report)]) == 0
    text = (report / "report.md").read_text()
    assert "While unlearning" in text and "Collapse:" in text and (report / "trajectory.png").stat().st_size > 1000


@pytest.mark.slow  # (make test keeps the training-time evaluation's other checks)
def test_resume_cuts_the_log_back_and_keeps_the_best(target, tmp_path, monkeypatch):
    import unlearn.train_setup

    args = ["--method", "GA+GD", "--epochs", "6", "--lr", "3e-3", "--eval-every", "2", "--keep", "best"]
    whole = tmp_path / "whole"
    assert _run(target, whole, *args) == 0
    out = tmp_path / "resumed"
    real = unlearn.train_setup.append_jsonl

    def die_after_step_9(path, row):
        real(path, row)
        if row.get("step") == 9 and path.name == "train_log.jsonl":
            raise KeyboardInterrupt

    monkeypatch.setattr(unlearn.train_setup, "append_jsonl", die_after_step_9)
    assert _run(target, out, *args, "--save-every", "4") == 130  # checkpoint at step 8, evaluated up to 8
    monkeypatch.undo()
    assert [r["step"] for r in _log(out)] == [0, 2, 4, 6, 8]
    assert _run(target, out, *args, "--resume") == 0
    assert [r["step"] for r in _log(out)] == [r["step"] for r in _log(whole)]
    for a, b in zip(_log(out), _log(whole), strict=False):
        assert a["Forget Efficacy"] == pytest.approx(b["Forget Efficacy"], abs=1e-5)
    assert json.loads((out / "kept.json").read_text())["step"] == json.loads((whole / "kept.json").read_text())["step"]


def test_bad_settings_are_refused_before_training(target, tmp_path, capsys):
    cases = [
        (["--keep", "best"], "add --eval-every"),
        (["--eval-sets", "forget"], "add --eval-every"),
        (["--eval-every", "2", "--eval-sets", "forgot"], "no set 'forgot'"),
        (["--eval-every", "2", "--keep", "best", "--eval-sets", "forget"], "must include"),
        (["--eval-every", "2", "--keep", "worst"], "--keep"),
        (["--eval-every", "2", "--no-eval"], "needs evaluation data"),
    ]
    for extra, message in cases:
        assert _run(target, tmp_path / "x", "--method", "GA+GD", *extra) == 2, extra
        assert message in capsys.readouterr().err, extra
        assert not (tmp_path / "x" / "model").exists()


def test_select_sets_names():
    from unlearn.evaluation.sets import EvalSet

    sets = [EvalSet(n, [], k) for n, k in (("Retain", "retain"), ("Real Authors", "general"), ("Forget", "forget"))]
    assert [s.name for s in select_sets(sets, "forget, real-authors")] == ["Forget", "Real Authors"]
    assert select_sets(sets, None) == sets
