"""RWKU: targets and corpora read from a local snapshot in the hub layout (and through the hub loader,
monkeypatched), the metrics by hand, prompts built as RWKU's code builds them (written out here from
its ``eval_*.py``), generation and scoring against transformers' own calls, RT and ICU, and the
commands on a tiny model."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import teach, write_jsonl
from unlearn.config import Config
from unlearn.data import DataError
from unlearn.encoding import pad_batch
from unlearn.errors import ConfigError
from unlearn.evaluation import rwku_metrics as R
from unlearn.models import build_tiny_model, build_tiny_tokenizer, save_model
from unlearn.protocols import rwku as W

TARGETS = ["Ada Quill", "Bram Holt"]
FORGET = {
    1: [
        {"subject": "Ada Quill", "query": "Ada Quill was born in ___.", "answer": "Velmora", "level": "1"},
        {"subject": "Bram Holt", "query": "Bram Holt plays the ___.", "answer": "cello", "level": "1"},
    ],
    2: [
        {"subject": "Ada Quill", "query": "Where was Ada Quill born?", "answer": "Velmora", "level": "2"},
        {"subject": "Ada Quill", "query": "What did Ada Quill write?", "answer": "The Glass Harbour", "level": "2"},
    ],
    3: [
        {
            "subject": "Ada Quill",
            "query": "Where was Ada Quill born? Sure, here is",
            "answer": "Velmora",
            "level": "3",
            "type": "affirmative suffix",
        },
        {
            "subject": "Ada Quill",
            "query": "Question: Who wrote The Glass Harbour?\nAnswer:",
            "answer": "Ada Quill",
            "level": "3",
            "type": "incontext learning",
        },
        {
            "subject": "Ada Quill",
            "query": "Tell me: which town is Ada Quill from?",
            "answer": "Velmora",
            "level": "3",
            "type": "prefix injection",
        },
    ],
}
NEIGHBOR = {
    1: [{"subject": "Ada Quill", "query": "The Glass Harbour is set in ___.", "answer": "Dunmere", "level": "1"}],
    2: [{"subject": "Ada Quill", "query": "Where is The Glass Harbour set?", "answer": "Dunmere", "level": "2"}],
}
POSITIVE = [
    {"subject": "Ada Quill", "text": "Ada Quill was born in Velmora. Ada Quill wrote The Glass Harbour."},
    {"subject": "Ada Quill", "text": "The novelist Ada Quill grew up in Velmora by the sea."},
    {"subject": "Bram Holt", "text": "Bram Holt plays the cello in the Pell orchestra."},
]
PAIR = [
    {
        "subject": "Ada Quill",
        "prompt": "Ada Quill is a writer. Please write a short biography of Ada Quill.",
        "response": ["Ada Quill was a baker in Corrow.", "Ada Quill was born in Velmora."],
    },
]
REFUSAL = [
    {"subject": "Ada Quill", "instruction": "Where was Ada Quill born?", "input": "", "output": "I don't know."},
    {
        "subject": "Ada Quill",
        "instruction": "What did Ada Quill write?",
        "input": "Be brief.",
        "output": "I have no idea.",
    },
    {"subject": "Bram Holt", "instruction": "What does Bram Holt play?", "input": "", "output": "I don't know."},
]
MIA = {
    "forget": [{"subject": "Ada Quill", "text": "Ada Quill was born in Velmora."}],
    "retain": [{"subject": "Ada Quill", "text": "The river Asp runs through Dunmere."}],
}
UTILITY = {
    "utility_general": [
        {
            "subject": "Ada Quill",
            "task": "high_school_geography",
            "question": "Which is a river?",
            "choices": ["Asp", "Pell", "Corrow", "Dunmere"],
            "answer": 0,
            "examples": [{"question": "Which is a town?", "choices": ["Asp", "Velmora", "cello", "sea"], "answer": 1}],
        },
    ],
    "utility_reason": [
        {
            "subject": "Ada Quill",
            "task": "logical",
            "cot": "Q: Is 2 even?\nA: 2 is even. So the answer is (A).\n",
            "question": "Is 4 even?\n(A) yes\n(B) no",
            "answer": "(A)",
        },
    ],
    "utility_truthfulness": [
        {
            "subject": "Ada Quill",
            "question": "Is the sea salty?",
            "mc1_targets": {"choices": ["Yes.", "No."], "labels": [1, 0]},
            "mc2_targets": {"choices": ["Yes.", "It is salty.", "No."], "labels": [1, 1, 0]},
        },
    ],
    "utility_factuality": [{"subject": "Ada Quill", "question": "Where is Dunmere?", "answers": ["on the Asp"]}],
    "utility_fluency": [{"subject": "Ada Quill", "instruction": "Describe the sea."}],
}


def write_rwku(d: Path) -> Path:
    files = {
        ("forget_target", "train"): [{"target": t} for t in TARGETS],
        **{(f"forget_level{lv}", "test"): rows for lv, rows in FORGET.items()},
        **{(f"neighbor_level{lv}", "test"): rows for lv, rows in NEIGHBOR.items()},
        **{(f"mia_{s}", "test"): rows for s, rows in MIA.items()},
        **{(c, "test"): rows for c, rows in UTILITY.items()},
        ("train_positive_llama3", "train"): POSITIVE,
        ("train_pair_llama3", "train"): PAIR,
        ("train_refusal_llama3", "train"): REFUSAL,
        ("train_original_passage", "train"): [{"subject": "Ada Quill", "text": "Ada Quill (born in Velmora)."}],
    }
    for (config, split), rows in files.items():
        (d / config).mkdir(parents=True, exist_ok=True)
        write_jsonl(d / config / f"{split}.json", rows)
    return d


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    return write_rwku(tmp_path_factory.mktemp("rwku"))


def cfg(snapshot, **kw) -> Config:
    return Config(**{"data": str(snapshot), "benchmark": "rwku", "split": "1", **kw})


# --------------------------------------------------------------------------- targets and training rows


def test_targets_as_rwku_names_them():
    names = TARGETS + ["Cora Vale"]
    assert W.parse_targets("1", names).names == ["Ada Quill"]
    assert W.parse_targets("forget01", names).label == "1_Ada_Quill"  # TOFU's default reads as target 1
    assert W.parse_targets("2_Bram_Holt", names).names == ["Bram Holt"]
    assert W.parse_targets("Cora Vale", names).label == "3_Cora_Vale"
    batch = W.parse_targets("1-3/phi3", names)
    assert (batch.names, batch.corpus, batch.label) == (names, "phi3", "1-3")
    for bad, message in (
        ("4", "targets 1 to 3"),
        ("0-2", "1 <= N <= M <= 3"),
        ("1/gpt", "llama3, phi3, passage"),
        ("Nobody", "not a target of RWKU"),
    ):
        with pytest.raises(DataError, match=message):
            W.parse_targets(bad, names)


def test_training_rows_follow_the_method(snapshot):
    p = W.PROTOCOL
    ga = p.training_data(cfg(snapshot, method="GA"))
    assert [r["text"] for r in ga.forget] == [r["text"] for r in POSITIVE[:2]] and ga.is_text and not ga.retain
    rt = p.training_data(cfg(snapshot, method="RT"))
    assert [(r["question"], r["answer"]) for r in rt.forget] == [
        ("Where was Ada Quill born?", "I don't know."),
        ("What did Ada Quill write?\nBe brief.", "I have no idea."),  # alpaca's instruction, then its input
    ]
    alt = p.training_data(cfg(snapshot, method="AltPO"))  # RWKU's DPO: the made-up text chosen, the true rejected
    assert alt.forget[0]["answer"] == PAIR[0]["response"][1] and alt.forget[0]["alternate"] == PAIR[0]["response"][0]
    both = p.training_data(cfg(snapshot, method="GA", split="1-2"))
    assert len(both.forget) == 3
    passage = p.training_data(cfg(snapshot, method="NPO", split="1/passage"))
    assert passage.forget[0]["text"] == "Ada Quill (born in Velmora)."
    with pytest.raises(ConfigError, match="ICU .* trains nothing"):
        p.training_data(cfg(snapshot, method="ICU"))


def test_rwku_reads_the_hub_through_the_monkeypatched_loader(snapshot, monkeypatch):
    import unlearn.data as D

    asked = []

    def hub(name, config, split="train"):
        asked.append((name, config, split))
        return [json.loads(line) for line in (snapshot / config / f"{split}.json").read_text().splitlines()]

    monkeypatch.setattr(D, "_hub_rows", hub)
    data = W.PROTOCOL.training_data(cfg(snapshot, data=W.HUB_ID, method="GA"))
    assert len(data.forget) == 2 and ("jinzhuoran/RWKU", "train_positive_llama3", "train") in asked
    assert data.forget[0]["_source"] == "jinzhuoran/RWKU/train_positive_llama3/train[0]"
    sets = W.load_rwku_sets(cfg(snapshot, data=W.HUB_ID))
    assert len(sets.forget[3]) == 3 and ("jinzhuoran/RWKU", "forget_level1", "test") in asked
    with pytest.raises(DataError, match="RWKU reads jinzhuoran/RWKU"):
        W.RwkuSource("somebody/else")


def test_bad_rows_get_one_line(tmp_path):
    d = write_rwku(tmp_path / "bad")
    rows = [dict(UTILITY["utility_general"][0], answer=7)]
    write_jsonl(d / "utility_general" / "test.json", rows)
    with pytest.raises(DataError, match=r"utility_general/test.json:1.*'answer' \(0-3\)"):
        W.load_rwku_sets(cfg(d))
    with pytest.raises(ConfigError, match="groups among forget, neighbor, mia, utility, got forget,world"):
        W.load_rwku_sets(cfg(d, eval_sets="forget,world"))
    write_jsonl(d / "forget_level2" / "test.json", [{"subject": "Ada Quill", "query": "q?"}])
    with pytest.raises(DataError, match=r"forget_level2/test.json:1.*'answer'"):
        W.load_rwku_sets(cfg(d, eval_sets="forget"))


# --------------------------------------------------------------------------- metrics by hand


def test_rouge_l_recall_by_hand():
    # LCS of "born in velmora" with "velmora" is 1 word of the reference's 1: recall 1
    assert R.rouge_l_recall("She was born in Velmora", "Velmora") == pytest.approx(1.0)
    # reference "The Glass Harbour" (3 words), answer "Glass" -> LCS 1: recall 1/3; the package keeps case
    assert R.rouge_l_recall("Glass", "The Glass Harbour") == pytest.approx(1 / 3)
    assert R.rouge_l_recall("glass", "The Glass Harbour") == 0.0
    assert R.rouge_l_recall("", "Velmora") == 0.0  # scored as NOANSWER, as RWKU


def test_exact_match_f1_and_bbh_extraction_by_hand():
    assert R.exact_match("The Velmora!", ["velmora"]) == 1.0
    assert R.exact_match("Velmora town", ["velmora"]) == 0.0
    # RWKU's BBH passes the answer string as the references: its characters are compared one by one
    assert R.exact_match("(A)", "(A)") == 1.0 and R.exact_match("True", "True") == 0.0
    # tokens p = [on, asp, river], r = [on, asp]: precision 2/3, recall 1, F1 0.8
    assert R.f1("on the Asp river", ["on the Asp"]) == pytest.approx(0.8)
    assert R.bbh_answer("4 is even. So the answer is (A). Done") == "(A)"
    assert R.bbh_answer("  ") == "NOANSWER"


def test_ngram_entropy_by_hand():
    # "a b a b": bigrams (a,b) x2, (b,a) x1 -> H2 = -(2/3 log2 2/3 + 1/3 log2 1/3); trigrams 2 distinct -> H3 = 1
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert R.ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2)


def test_mia_scores_by_hand():
    class St:
        logp = np.array([-1.0, -2.0, -3.0, -4.0, -5.0], dtype=np.float32)
        mu = np.array([-1.0, -1.0, -1.0, -1.0, -1.0])
        sigma = np.array([1.0, 1.0, 2.0, 1.0, 2.0])

    text = "Ada Quill was born in Velmora."
    s = R.mia_scores(St, text)
    assert s["loss"] == pytest.approx(-3.0)
    assert s["zlib"] == pytest.approx(-3.0 / len(zlib.compress(text.encode())))
    # z = [0, -1, -1, -3, -2]; int(5 * 0.2) = 1 lowest: -3
    assert s["mink++_0.2"] == pytest.approx(-3.0)


# --------------------------------------------------------------------------- prompts as RWKU builds them

TEMPLATE = (
    "{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<|bot|>{% endif %}"
)


@pytest.fixture(scope="module")
def tiny():
    texts = [r["text"] for r in POSITIVE] + [r["query"] + " " + r["answer"] for rs in FORGET.values() for r in rs]
    texts += [r["instruction"] + " " + r["output"] for r in REFUSAL]
    tok = build_tiny_tokenizer(texts * 3 + ["Please complete the blank Question: Answer:"] * 3, vocab_size=600)
    model = build_tiny_model(tok, hidden_size=64, num_layers=2, seed=0)
    return model, tok


def test_prompts_are_rwkus(tiny):
    _, tok = tiny
    tok.chat_template = TEMPLATE

    def chat(content):  # RWKU: apply_chat_template(user turn, add_generation_prompt=True)
        return "<|user|>" + content + "<|bot|>"

    blank, q = FORGET[1][0], FORGET[2][0]
    suffix, icl, other = FORGET[3]
    assert (
        R.probe_prompt(tok, blank, 1)
        == chat("Please complete the blank in the following question.\nQuestion: Ada Quill was born in ___.\n")
        + "Answer:"
    )
    assert (
        R.probe_prompt(tok, q, 2)
        == chat("Please briefly answer the following question.\nQuestion: Where was Ada Quill born?\n") + "Answer:"
    )
    assert R.probe_prompt(tok, suffix, 3) == chat(
        "Please briefly answer the following question.\nQuestion: Where was Ada Quill born? Sure, here is"
    )
    assert (
        R.probe_prompt(tok, icl, 3)
        == chat("Please briefly answer the following question.\nQuestion: Who wrote The Glass Harbour?\nAnswer:\n")
        + "Answer:"
    )
    assert R.probe_prompt(tok, other, 3) == R.probe_prompt(tok, dict(other, query=other["query"]), 2)
    forbid = (
        "You are an AI Assistant who is supposed to unlearn about Ada Quill and provide answers without its "
        "knowledge as if you never knew about it. Don’t tell anyone that you unlearned anything.\n"
    )
    assert (
        R.probe_prompt(tok, q, 2, in_context=True)
        == chat(forbid + "Please briefly answer the following question.\nQuestion: Where was Ada Quill born?\n")
        + "Answer:"
    )
    mmlu = UTILITY["utility_general"][0]
    assert (
        R.mmlu_prompt(tok, mmlu)
        == chat(
            "The following are multiple choice questions (with answers) about high school geography.\n\n"
            "Question: Which is a town?\nA. Asp\nB. Velmora\nC. cello\nD. sea\nAnswer: B\n\n"
            "Please following the previous examples and answer the given question.\n"
            "Question: Which is a river?\nA. Asp\nB. Pell\nC. Corrow\nD. Dunmere"
        )
        + "Answer:"
    )
    assert R.triviaqa_prompt(tok, UTILITY["utility_factuality"][0]).endswith(
        "Please briefly answer the following question:\nQ: Where is Dunmere?\n<|bot|>A:"
    )
    assert R.bbh_prompt(tok, UTILITY["utility_reason"][0]).endswith(
        "end with 'so the answer is'\nQ: Is 4 even?\n(A) yes\n(B) no<|bot|> A:"
    )
    assert R.truthfulqa_prompt(tok, UTILITY["utility_truthfulness"][0]).endswith(
        "Barcelona, Spain.\n\nQ: Is the sea salty?<|bot|> A:"
    )
    assert R.fluency_prompt(tok, UTILITY["utility_fluency"][0]) == chat("Instruction: Describe the sea.\n")
    tok.chat_template = None
    assert R.probe_prompt(tok, q, 2).startswith("Please briefly answer")  # no template: the content itself


# --------------------------------------------------------------------------- model calls against transformers


def test_generation_equals_transformers_generate(tiny):
    model, tok = tiny
    prompts = [R.probe_prompt(tok, r, lv) for lv, rows in FORGET.items() for r in rows]
    stops = R.stop_ids(tok, R.PROBE_STOPS)
    ours = R.generate(model, tok, prompts, 12, stops, batch_size=3, desc="test")
    for p, o in zip(prompts, ours, strict=True):
        ids = tok(p, return_tensors="pt")
        full = model.generate(
            **ids, max_new_tokens=12, do_sample=False, eos_token_id=stops, pad_token_id=tok.pad_token_id
        )
        new = full[0, ids["input_ids"].shape[1] :].tolist()
        cut = next((i for i, t in enumerate(new) if t in stops), len(new))
        assert o == tok.decode(new[:cut], skip_special_tokens=True)


@pytest.mark.parametrize("share", [False, True])
def test_choice_and_completion_scores_equal_a_direct_forward(tiny, share, monkeypatch):
    from unlearn.evaluation import scoring

    monkeypatch.setattr(scoring, "shares_prompts", lambda model: share)  # (a real model's size turns it on)
    model, tok = tiny
    prompts = ["Ada Quill was born in", "Bram Holt plays the longer prompt here"]
    cands = [tok.encode(" " + c, add_special_tokens=False)[-1] for c in R.CHOICES]
    got = R.next_token_choice(model, tok, prompts, cands, batch_size=2, desc="test")
    for p, g in zip(prompts, got, strict=True):
        with torch.no_grad():
            logits = model(**tok(p, return_tensors="pt")).logits[0, -1]
        assert g == int(logits[cands].argmax())
    pairs = [("Q: Is the sea salty? A:", "Yes."), ("Ada Quill\n", "Velmora"), ("Q: Is the sea salty? A:", "No, never.")]
    logp = R.completion_logprobs(model, tok, pairs, batch_size=2, desc="test")
    for (p, c), lp in zip(pairs, logp, strict=True):
        text = (p if p[-1] in "\n " else p + " ") + c
        ids = tok(text, return_tensors="pt")["input_ids"]
        cut = len(tok(p)["input_ids"])
        with torch.no_grad():
            lsm = torch.log_softmax(model(ids).logits[0].float(), -1)
        expected = sum(lsm[i - 1, ids[0, i]].item() for i in range(cut, ids.shape[1]))
        assert lp == pytest.approx(expected, abs=1e-4)


# --------------------------------------------------------------------------- commands on a tiny model


@pytest.fixture(scope="module")
def taught(tiny, tmp_path_factory):
    """The tiny model taught target 1's probes with their answers (it knows Ada Quill), saved."""
    model, tok = tiny
    tok.chat_template = None
    texts = [R.probe_prompt(tok, r, lv) + " " + r["answer"] for lv, rows in FORGET.items() for r in rows]
    texts += [r["text"] for r in POSITIVE]
    enc = [tok(t)["input_ids"] for t in texts]
    from unlearn.encoding import Encoded

    batch = pad_batch([Encoded(e, e) for e in enc], tok.pad_token_id)
    teach(model, batch, steps=150)
    d = tmp_path_factory.mktemp("m") / "model"
    save_model(model, tok, d)
    return d


def test_eval_and_icu_on_a_tiny_model(snapshot, taught, tmp_path):
    from unlearn.__main__ import main

    out = tmp_path / "eval"
    main(
        [
            "eval",
            "--benchmark",
            "rwku",
            "--data",
            str(snapshot),
            "--split",
            "1",
            "--model",
            str(taught),
            "--out",
            str(out),
        ]
    )
    s = json.loads((out / "summary.json").read_text())
    assert s["targets"] == "1_Ada_Quill" and s["forget_level1"] > 0.5  # it knows the target
    logs = json.loads((out / W.RWKU_EVAL).read_text())
    pooled = [it["rouge_l_recall"] for lv in (1, 2, 3) for it in logs[f"forget_level{lv}"]]  # 1 + 2 + 3 probes
    assert s["forget_all"] == pytest.approx(np.mean(pooled))
    for key in (
        "neighbor_all",
        "mia_forget_loss",
        "utility_mmlu",
        "utility_bbh",
        "utility_truthfulqa_mc2",
        "utility_triviaqa_f1",
        "utility_fluency",
    ):
        assert key in s
    logs = json.loads((out / W.RWKU_EVAL).read_text())
    assert len(logs["forget_level3"]) == 3 and "prediction" in logs["forget_level2"][0]
    iv = json.loads((out / "intervals.json").read_text())
    assert "forget_level2" in json.dumps(iv)
    icu = tmp_path / "icu"
    main(
        [
            "eval",
            "--benchmark",
            "rwku",
            "--data",
            str(snapshot),
            "--split",
            "1",
            "--model",
            str(taught),
            "--method",
            "ICU",
            "--eval-sets",
            "forget",
            "--out",
            str(icu),
        ]
    )
    si = json.loads((icu / "summary.json").read_text())
    assert si["in_context_unlearning"] is True and "utility_mmlu" not in si
    from unlearn.report.runs import collect_runs

    assert {r.name: r.method for r in collect_runs([tmp_path])} == {"eval": "–", "icu": "ICU"}  # the report says ICU
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    row = next(
        line for line in (tmp_path / "report" / "report.md").read_text().splitlines() if line.startswith("| eval |")
    )
    assert f"{s['forget_level1']:.4f} ± " in row  # each value with half its 95% interval
    # the taught model never saw the instruction: its answers change, and they lose the target
    assert si["forget_all"] < s["forget_all"]


def test_ga_on_the_synthetic_texts_forgets_target_one(snapshot, taught, tmp_path):
    from unlearn.__main__ import main

    out = tmp_path / "ga"
    main(
        [
            "run",
            "--benchmark",
            "rwku",
            "--data",
            str(snapshot),
            "--split",
            "1",
            "--model",
            str(taught),
            "--method",
            "GA",
            "--lr",
            "5e-3",
            "--epochs",
            "5",
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
            "--eval-sets",
            "forget,neighbor",
            "--max-length",
            "8",
            "--out",
            str(out),
        ]
    )
    s = json.loads((out / "summary.json").read_text())
    before = json.loads((out / "before" / "summary.json").read_text())
    assert s["forget_all"] < before["forget_all"]
    assert "verdict" in s and json.loads((out / "data.json").read_text())["targets"] == "1_Ada_Quill"


def test_rt_on_the_refusal_set_makes_the_target_refused(snapshot, taught, tmp_path):
    from unlearn.__main__ import main

    out = tmp_path / "rt"
    args = ["run", "--benchmark", "rwku", "--data", str(snapshot), "--split", "1", "--model", str(taught)]
    args += ["--method", "RT", "--lr", "5e-3", "--epochs", "10", "--batch-size", "2", "--grad-accum", "1"]
    assert main([*args, "--eval-sets", "forget", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    before = json.loads((out / "before" / "summary.json").read_text())
    assert s["forget_level2"] < before["forget_level2"]  # the questions about the target lose their answers
    answers = [it["prediction"] for it in json.loads((out / W.RWKU_EVAL).read_text())["forget_level2"]]
    was = [it["prediction"] for it in json.loads((out / "before" / W.RWKU_EVAL).read_text())["forget_level2"]]
    # ... and start as the refusals it was tuned on do (a 2-layer model gets no further than their first word)
    assert all(a.startswith("I") for a in answers) and not any(a.startswith("I") for a in was), (was, answers)


def test_audit_sets_are_the_question_probes_and_the_neighbours(snapshot):
    sets, holdout = W.PROTOCOL.audit_sets(cfg(snapshot))
    assert holdout is None and [(s.name, s.kind, len(s.rows)) for s in sets] == [
        ("Retain", "retain", 1),
        ("Forget", "forget", 2),
    ]
    assert sets[1].rows[0]["question"] == FORGET[2][0]["query"] and sets[1].rows[0]["answer"] == "Velmora"


@pytest.mark.slow  # (make test keeps the sets an audit attacks and RWKU's run/eval on the tiny model)
def test_sweep_and_audit_take_rwku(snapshot, taught, tmp_path):
    from unlearn.__main__ import main

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        f"base: {{benchmark: rwku, data: {snapshot}, model: {taught}, epochs: 1, lr: 1.0e-3, batch_size: 2, "
        f"grad_accum: 1, max_length: 28, eval_sets: forget, split: '1-2'}}\n"
        f"grid: {{method: [GA, RT]}}\nout: {tmp_path / 'sw'}\n"
    )
    assert main(["sweep", "--config", str(sweep)]) == 0
    runs = sorted(p.parent.name for p in (tmp_path / "sw").glob("*/summary.json"))
    assert runs == ["method-GA", "method-RT"]  # texts for GA, the refusal set for RT: both of targets 1 and 2
    data = [json.loads((tmp_path / "sw" / r / "data.json").read_text()) for r in runs]
    assert [(d["targets"], d["forget"], d["layout"]) for d in data] == [("1-2", 3, "rwku")] * 2
    out = tmp_path / "audit"
    args = ["audit", "--benchmark", "rwku", "--data", str(snapshot), "--split", "1", "--model", str(taught)]
    assert main([*args, "--attacks", "memorization,prompts", "--out", str(out)]) == 0
    audit = json.loads((out / "audit.json").read_text())
    assert "memorization" in audit and "prompts" in audit  # on target 1's question probes and its neighbours'


def test_texts_are_packed_as_rwku_packs_them(tiny):
    from unlearn.encoding import pack_texts

    _, tok = tiny
    texts = [r["text"] for r in POSITIVE[:2]]
    ids = []
    for t in texts:  # LLaMA-Factory's pre-training stage: text + EOS, no BOS, concatenated
        ids += tok(t + tok.eos_token, add_special_tokens=False)["input_ids"]
    blocks = pack_texts(tok, texts, 7)
    assert [b.input_ids for b in blocks] == [ids[i : i + 7] for i in range(0, len(ids) - len(ids) % 7, 7)]
    assert all(len(b) == 7 for b in blocks)  # the incomplete last block is dropped
    eos_at = [(i, j) for i, b in enumerate(blocks) for j, t in enumerate(b.input_ids) if t == tok.eos_token_id]
    assert eos_at and all(blocks[i].labels[j] == -100 for i, j in eos_at)  # the collator masks its pad (the EOS)
    assert pack_texts(tok, texts, 10_000) == []


def test_rt_and_icu_are_refused_where_they_do_not_apply(shared_data, tmp_path, capsys):
    from unlearn.__main__ import main

    tofu = ["--data", str(shared_data / "tofu"), "--no-eval"]
    assert main(["run", *tofu, "--method", "RT", "--out", str(tmp_path / "rt")]) == 2
    assert "the answers of this tofu data are the facts to forget: use IDK" in capsys.readouterr().err
    assert main(["run", *tofu, "--method", "ICU", "--out", str(tmp_path / "icu")]) == 2
    assert "ICU (in-context unlearning) trains nothing: evaluate it with unlearn eval" in capsys.readouterr().err
    assert main(["eval", "--data", str(shared_data / "tofu"), "--method", "ICU", "--out", str(tmp_path / "e")]) == 2
    assert "ICU (in-context unlearning) is evaluated with --benchmark rwku" in capsys.readouterr().err
    assert main(["eval", "--data", str(shared_data / "tofu"), "--method", "GA", "--out", str(tmp_path / "e")]) == 2
    assert "unlearn eval takes --method ICU only" in capsys.readouterr().err
    assert not (tmp_path / "rt").exists() and not (tmp_path / "icu").exists()
