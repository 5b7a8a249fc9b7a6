"""Verdicts (unlearn.evaluation.verdicts): each kind on hand-made numbers, and on tiny runs made to produce it."""

from __future__ import annotations

import json

import pytest

from unlearn.config import Config
from unlearn.evaluation.intervals import Interval
from unlearn.evaluation.verdicts import (
    MIN_STEPS,
    is_refusal,
    print_before_after,
    refusal_share,
    verdict,
    verdict_on,
)
from unlearn.refusals import REFUSALS

BEFORE = {
    "Forget ROUGE": 0.9,
    "Forget Probability": 0.8,
    "Forget Truth Ratio": 0.6,
    "Model Utility": 0.5,
    "Forget Token Entropy": 0.9,
    "Retain Token Entropy": 0.9,
}
BEFORE_IV = {
    "Forget ROUGE": Interval(0.9, 0.85, 0.95),
    "Forget Probability": Interval(0.8, 0.75, 0.85),
    "Forget Truth Ratio": Interval(0.6, 0.55, 0.65),
}
FORGOT = {**BEFORE, "Forget ROUGE": 0.3, "Forget Probability": 0.2, "Forget Truth Ratio": 0.4}


def test_no_measurable_effect_when_every_forget_metric_stays_in_its_interval():
    after = {**BEFORE, "Forget ROUGE": 0.88, "Forget Probability": 0.81}
    v = verdict(BEFORE, after, BEFORE_IV, steps=50)
    assert v.kind == "no measurable effect"
    assert "Forget ROUGE 0.900 -> 0.880" in v.text and "[0.850, 0.950]" in v.text


def test_a_forget_metric_that_rises_is_not_forgetting():
    v = verdict(BEFORE, {**BEFORE, "Forget Truth Ratio": 0.97}, BEFORE_IV, steps=50)
    assert v.kind == "no measurable effect" and "Forget Truth Ratio rose above it" in v.text


def test_one_forget_metric_below_its_interval_is_an_effect():
    v = verdict(BEFORE, {**BEFORE, "Forget ROUGE": 0.5}, BEFORE_IV, steps=50)
    assert v.kind == "forgot and kept" and "Model Utility 0.500 -> 0.500" in v.text


def test_too_few_steps_says_how_many_and_what_to_change():
    v = verdict(BEFORE, BEFORE, BEFORE_IV, steps=1, steps_hint="; raise --epochs")
    assert v.kind == "too few steps"
    assert v.text.startswith("too few steps: 1 optimiser step(s) ran, so the result changed nothing measurable")
    assert v.text.endswith("; raise --epochs")
    assert verdict(BEFORE, FORGOT, BEFORE_IV, steps=MIN_STEPS).kind == "forgot and kept"


def test_a_protocols_own_keys_give_the_same_verdicts():
    """verdict_on (the TOFU standard's, MUSE's keys): forgetting is a forget key below its interval,
    collapse a kept key below half of before; too few steps first."""
    before = {"forget_Q_A_ROUGE": 0.9, "forget_Q_A_Prob": 0.8, "retain_Q_A_ROUGE": 0.7}
    iv = {"forget_Q_A_ROUGE": Interval(0.9, 0.8, 1.0), "forget_Q_A_Prob": Interval(0.8, 0.7, 0.9)}
    forget, keep = ("forget_Q_A_ROUGE", "forget_Q_A_Prob"), ("retain_Q_A_ROUGE",)
    same = verdict_on(before, {**before, "forget_Q_A_ROUGE": 0.85}, iv, forget, keep, steps=50)
    assert same.kind == "no measurable effect" and "forget_Q_A_ROUGE interval before [0.800, 1.000]" in same.text
    gone = {**before, "forget_Q_A_ROUGE": 0.2}
    kept = verdict_on(before, gone, iv, forget, keep, steps=50)
    assert kept.kind == "forgot and kept" and kept.text.endswith("retain_Q_A_ROUGE 0.700 -> 0.700")
    broke = verdict_on(before, {**gone, "retain_Q_A_ROUGE": 0.34}, iv, forget, keep, steps=50)
    assert broke.kind == "forgot but collapsed" and "retain_Q_A_ROUGE fell from 0.700 to 0.340" in broke.text
    assert verdict_on(before, {**gone, "retain_Q_A_ROUGE": 0.36}, iv, forget, keep, steps=50).kind == "forgot and kept"
    few = verdict_on(before, gone, iv, forget, keep, steps=2, steps_hint="; raise --epochs")
    assert few.kind == "too few steps" and few.text.endswith("; raise --epochs")


def test_collapse_when_utility_or_entropy_falls_below_half():
    for key, value in (("Model Utility", 0.2), ("Forget Token Entropy", 0.3), ("Retain Token Entropy", 0.1)):
        v = verdict(BEFORE, {**FORGOT, key: value}, BEFORE_IV, steps=50)
        assert v.kind == "forgot but collapsed" and f"{key} fell from" in v.text
    assert verdict(BEFORE, {**FORGOT, "Model Utility": 0.26}, BEFORE_IV, steps=50).kind == "forgot and kept"


def test_utility_is_compared_over_the_same_sets(capsys):
    """A run's before-model is evaluated on Forget and Retain only (its Model Utility is the Retain
    part); the final model on every set: their Model Utility differ by definition (SmolLM2 NPO+GD: 0.719
    before, 0.446 after, with the Retain part at 0.592), so the Retain part is what is compared."""
    before = {**BEFORE, "Retain ROUGE": 0.8, "Model Utility": 0.7, "Model Utility Retain": 0.7}
    after = {**FORGOT, "Retain ROUGE": 0.6, "Real Authors ROUGE": 0.2, "Real World ROUGE": 0.4,
             "Model Utility": 0.333, "Model Utility Retain": 0.6}  # fmt: skip
    v = verdict(before, after, BEFORE_IV, steps=50)
    assert v.kind == "forgot and kept" and v.text.endswith("Model Utility Retain 0.700 -> 0.600")
    broke = verdict(before, {**after, "Model Utility Retain": 0.3}, BEFORE_IV, steps=50)
    assert broke.kind == "forgot but collapsed" and "Model Utility Retain fell from 0.700 to 0.300" in broke.text
    full = {**before, "Real Authors ROUGE": 0.3, "Real World ROUGE": 0.5}  # both on every set: Model Utility
    assert verdict(full, after, BEFORE_IV, steps=50).kind == "forgot but collapsed"
    print_before_after(before, after, {}, {})
    shown = capsys.readouterr().out
    assert "Model Utility Retain" in shown and "0.333" not in shown  # the full MU is not set beside the Retain one
    print_before_after(full, after, {}, {})
    assert "0.333" in capsys.readouterr().out


def test_over_refusal_from_the_retain_answers():
    v = verdict(BEFORE, FORGOT, BEFORE_IV, steps=50, refusals_before=0.0, refusals_after=0.8)
    assert v.kind == "over-refuses" and "80% of Retain answers are refusals (0% before)" in v.text
    assert verdict(BEFORE, FORGOT, BEFORE_IV, steps=50, refusals_before=0.9, refusals_after=0.8).kind != "over-refuses"


def test_refusals_are_recognised_whatever_the_case_and_punctuation():
    assert is_refusal("i DON'T know the answer to that", REFUSALS)
    assert is_refusal("Well... I really couldn't say!", REFUSALS)
    assert not is_refusal("Paris is the capital of France.", REFUSALS) and not is_refusal("", REFUSALS)
    assert refusal_share(["I can't tell you that.", "Paris."], REFUSALS) == 0.5
    assert refusal_share([], REFUSALS) is None


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Eight question/answer rows (4 to forget, 4 to keep) and a tiny model that learnt them."""
    from tests.conftest import write_jsonl
    from unlearn.pipeline import finetune

    root = tmp_path_factory.mktemp("verdicts")
    rows = [
        {"question": f"What does author {i} write?", "answer": f"Author {i} writes {w} about the sea."}
        for i, w in enumerate(("poems", "novels", "plays", "essays", "songs", "letters", "fables", "sagas"))
    ]
    forget, retain = write_jsonl(root / "forget.jsonl", rows[:4]), write_jsonl(root / "retain.jsonl", rows[4:])
    cfg = Config(
        model="tiny",
        out=str(root / "target"),
        epochs=60,
        lr=3e-3,
        batch_size=4,
        grad_accum=1,
        warmup=3,
        seed=3,
        weight_decay=0,
        max_length=64,
    )
    return finetune(cfg, [str(forget), str(retain)]), forget, retain


def _run(small, out, *flags) -> dict:
    from unlearn.__main__ import main

    target, forget, retain = small
    args = [
        "run",
        "--model",
        str(target),
        "--forget",
        str(forget),
        "--retain",
        str(retain),
        "--nli",
        "none",
        "--max-length",
        "64",
        "--out",
        str(out),
        *flags,
    ]
    assert main(args) == 0
    return json.loads((out / "summary.json").read_text())


def test_runs_made_to_produce_each_verdict(small, tmp_path, capsys):
    """The defaults on a small forget set (one step); lr 0 over enough steps; a huge learning rate."""
    few = _run(small, tmp_path / "few", "--method", "NPO+GD")
    assert few["verdict"]["kind"] == "too few steps"
    assert (tmp_path / "few" / "before" / "summary.json").is_file()  # the model before, kept beside
    assert "verdict: too few steps" in capsys.readouterr().out

    steps = ["--epochs", "12", "--batch-size", "1", "--grad-accum", "1"]
    still = _run(small, tmp_path / "still", "--method", "GA+GD", "--lr", "0", *steps)
    assert still["verdict"]["kind"] == "no measurable effect"

    broken = _run(small, tmp_path / "broken", "--method", "GA", "--lr", "0.05", *steps)
    assert broken["verdict"]["kind"] == "forgot but collapsed", broken["verdict"]
    printed = capsys.readouterr().out
    assert "Before and after unlearning" in printed and "verdict: forgot but collapsed" in printed


def test_forget_efficacy_decides_when_it_has_an_interval():
    """Forget Efficacy (one minus the forget metrics' mean) is the measure of forgetting: one metric
    falling while another rises does not make a run forget."""
    before = {**BEFORE, "Forget Efficacy": 0.3}
    iv = {**BEFORE_IV, "Forget Efficacy": Interval(0.3, 0.25, 0.35)}
    mixed = {**BEFORE, "Forget Probability": 0.1, "Forget Truth Ratio": 0.99, "Forget Efficacy": 0.1}
    v = verdict(before, mixed, iv, steps=50)
    assert v.kind == "no measurable effect" and "Forget Efficacy fell below it (remembered more" in v.text
    assert verdict(before, {**FORGOT, "Forget Efficacy": 0.6}, iv, steps=50).kind == "forgot and kept"
    assert verdict(before, {**FORGOT, "Forget Efficacy": 0.34}, iv, steps=50).kind == "no measurable effect"
