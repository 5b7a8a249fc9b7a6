"""Paired comparison of two runs (unlearn.evaluation.compare, unlearn report --compare)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unlearn.evaluation.compare import compare

KEYS = {"ROUGE": "rouge", "Probability": "probability"}


def _records(rouge, prob) -> dict[str, dict]:
    return {
        f"q{i}": {"question": f"q{i}", "rouge": r, "probability": p}
        for i, (r, p) in enumerate(zip(rouge, prob, strict=True))
    }


def test_a_run_against_itself_differs_by_nothing():
    recs = {"Forget": _records(np.linspace(0, 1, 12), np.linspace(0.2, 0.4, 12))}
    for d in compare(recs, recs, KEYS):
        assert d.diff.value == 0 and d.diff.lo == d.diff.hi == 0 and d.p_value == 1.0
        assert not d.distinguishable


def test_a_shift_on_every_item_is_distinguishable_with_the_exact_sign_flip_p():
    """B = A − 0.5 on each of 10 items: difference −0.5 exactly (every resample agrees), and the
    paired sign-flip test over all 2^10 flips gives p = 2 / 1024."""
    a = _records([0.9] * 10, [0.5] * 10)
    b = _records([0.4] * 10, [0.5] * 10)
    diffs = {d.key: d for d in compare({"Forget": a}, {"Forget": b}, KEYS)}
    rouge = diffs["Forget ROUGE"]
    assert rouge.diff.value == pytest.approx(-0.5) and rouge.diff.hi == pytest.approx(-0.5)
    assert rouge.distinguishable and rouge.n == 10
    assert rouge.p_value == pytest.approx(2 / 1024)
    assert not diffs["Forget Probability"].distinguishable


def test_items_are_matched_by_question_and_composites_are_compared():
    a = {"Forget": _records([1, 0, 1, 0], [0.5] * 4), "Retain": _records([0.8] * 4, [0.6] * 4)}
    b_forget = {q: dict(r) for q, r in reversed(list(_records([1, 0, 1, 0], [0.5] * 4).items()))}  # another order
    b = {"Forget": b_forget, "Retain": _records([0.4] * 4, [0.6] * 4)}
    diffs = {d.key: d for d in compare(a, b, KEYS, lambda m: {"Utility": m["Retain"]["ROUGE"]})}
    assert diffs["Forget ROUGE"].diff.value == 0  # same answers, whatever the order
    assert diffs["Utility"].diff.value == pytest.approx(-0.4) and diffs["Utility"].p_value is None


def _own_files(tmp_path):
    from tests.conftest import write_jsonl

    rows = [
        {"question": f"What does author {i} write?", "answer": f"Author {i} writes poems about the sea."}
        for i in range(8)
    ]
    return write_jsonl(tmp_path / "forget.jsonl", rows[:4]), write_jsonl(tmp_path / "retain.jsonl", rows[4:])


def test_unlearn_report_compare_on_two_runs(tmp_path, capsys):
    from unlearn.__main__ import main

    forget, retain = _own_files(tmp_path)
    common = ["--model", "tiny", "--forget", str(forget), "--retain", str(retain), "--nli", "none"]
    assert main(["eval", *common, "--out", str(tmp_path / "a")]) == 0
    assert main(["eval", *common, "--out", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    out = tmp_path / "cmp"
    assert main(["report", "--compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    saved = json.loads((out / "compare.json").read_text())["differences"]
    assert saved["Forget ROUGE"]["difference"] == 0 and not saved["Forget ROUGE"]["distinguishable"]
    assert "Model Utility" in saved and "Forget Efficacy" in saved
    assert "not distinguishable" in (out / "compare.md").read_text()
    assert main(["report", "--out", str(out)]) == 2  # neither folders nor --compare
    # the report of several runs: each against the reference run (--against, or the highest FE)
    rep = tmp_path / "rep"
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(rep), "--against", "b"]) == 0
    md = (rep / "report.md").read_text()
    assert "### Against the reference run" in md and "Each run minus the reference run, b (FE" in md
    section = md.split("### Against the reference run", 1)[1]
    row = next(line for line in section.splitlines() if line.startswith("| a |"))
    assert row.count("+0.000 \\[+0.000, +0.000\\]") == 3 and row.count("n.d.") == 3 and ", p 1 n.d." in row
    capsys.readouterr()
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(rep), "--against", "c"]) == 2
    assert "--against c: not one of the evaluated runs of this report (a, b)" in capsys.readouterr().err


def test_a_few_items_cannot_make_a_difference_distinguishable():
    """Four items all shifted: the interval excludes 0, but the exact sign-flip test cannot go below
    2/16 = 0.125: not distinguishable."""
    a, b = _records([0.9] * 4, [0.5] * 4), _records([0.1] * 4, [0.5] * 4)
    rouge = next(d for d in compare({"Forget": a}, {"Forget": b}, KEYS) if d.key == "Forget ROUGE")
    assert not rouge.diff.covers(0) and rouge.p_value == pytest.approx(0.125) and not rouge.distinguishable
