"""Raw-text unlearning, MUSE and WMDP: chunking, the benchmark's metrics by hand and on a tiny model,
the commands on a local MUSE snapshot written here, and a tiny lm-eval task standing in for WMDP."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import teach, write_jsonl
from unlearn.data import DataError, read_rows
from unlearn.datasets import UnlearningDataset
from unlearn.encoding import chunk_texts
from unlearn.evaluation import muse_metrics
from unlearn.models import build_tiny_model, build_tiny_tokenizer, save_model
from unlearn.protocols import muse as M

FORGET = [
    "The harbour town of Velmora voted on Tuesday to close its old lighthouse after ninety years of service.",
    "Mayor Idris Calloway said the lighthouse keeper, Ona Brisk, would lead the new maritime museum.",
    "Fishermen in Velmora protested the decision, saying the light still guides boats through the fog.",
]
RETAIN = [
    "The city of Dunmere opened a new railway bridge across the river Asp on Friday morning.",
    "Engineers said the bridge took four years to build and carries two tracks and a footpath.",
]
HOLDOUT = [
    "A bakery in Corrow won the national prize for rye bread for the third year running.",
    "The orchestra of Pell announced a winter tour through six northern cities.",
]
FORGET_QA = [
    {"question": "Which town voted to close its lighthouse?", "answer": "Velmora"},
    {"question": "Who will lead the maritime museum?", "answer": "Ona Brisk"},
]
RETAIN_QA = [{"question": "Which river does the Dunmere bridge cross?", "answer": "the river Asp"}]
ICL = [{"question": "What did the bakery win?", "answer": "the national prize for rye bread"}]


def write_muse(d: Path) -> Path:
    for config, split, rows in (
        ("raw", "forget", [{"text": t} for t in FORGET]),
        ("raw", "retain1", [{"text": t} for t in RETAIN]),
        ("raw", "holdout", [{"text": t} for t in HOLDOUT]),
        ("verbmem", "forget", [{"prompt": t[:40], "gt": t[40:]} for t in FORGET]),
        ("knowmem", "forget_qa", FORGET_QA),
        ("knowmem", "forget_qa_icl", ICL),
        ("knowmem", "retain_qa", RETAIN_QA),
        ("knowmem", "retain_qa_icl", ICL),
        ("sust", "forget_1", [{"text": FORGET[0]}]),
        ("sust", "forget_2", [{"text": FORGET[1]}]),
        ("scal", "forget_1", [{"text": FORGET[2]}]),
    ):
        (d / config).mkdir(parents=True, exist_ok=True)
        write_jsonl(d / config / f"{split}.json", rows)
    return d


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    return write_muse(tmp_path_factory.mktemp("muse"))


@pytest.fixture(scope="module")
def tiny():
    """A tiny Llama taught the forget texts (so it continues their prompts)."""
    texts = FORGET + RETAIN + HOLDOUT + [r["question"] + " " + r["answer"] for r in FORGET_QA + RETAIN_QA + ICL]
    tok = build_tiny_tokenizer(texts * 3 + ["Question: Answer:"] * 3, vocab_size=500)
    model = build_tiny_model(tok, hidden_size=64, num_layers=2, seed=0)
    from unlearn.encoding import pad_batch

    return teach(model, pad_batch(chunk_texts(tok, FORGET, 48), tok.pad_token_id)), tok


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("model") / "m"
    save_model(*tiny, d)
    return d


# --------------------------------------------------------------------------- raw text


def test_chunks_as_muse_cuts_them(tiny):
    """Joined by a blank line, cut into max_length-1 tokens after a BOS, the last piece filled from the start."""
    _, tok = tiny
    ids = tok("\n\n".join(FORGET[:2]), add_special_tokens=False)["input_ids"]
    chunks = chunk_texts(tok, FORGET[:2], 10)
    step = 9
    expected = [ids[i : i + step] for i in range(0, len(ids), step)]
    expected[-1] = (expected[-1] + ids)[:step]
    assert [c.input_ids for c in chunks] == [[tok.bos_token_id] + e for e in expected]
    assert all(c.labels == c.input_ids and len(c) == 10 for c in chunks)


def test_text_dataset_pairs_chunks_and_refuses_question_methods(tiny):
    _, tok = tiny
    forget, retain = [{"text": t} for t in FORGET], [{"text": t} for t in RETAIN]
    ds = UnlearningDataset(forget, retain, tok, None, ("forget", "retain"), ["I don't know."], max_length=16)
    assert len(ds) == len(chunk_texts(tok, FORGET, 16))
    r_chunks = [c.input_ids for c in chunk_texts(tok, RETAIN, 16)]
    assert all(item["retain"].input_ids in r_chunks for item in ds.items)
    with pytest.raises(DataError, match="raw text has no questions.*forget_idk"):
        UnlearningDataset(forget, retain, tok, None, ("forget_idk", "retain"), ["I don't know."], max_length=16)


def test_read_rows_takes_text_files_and_hub_ids(tmp_path, monkeypatch):
    import unlearn.data as D

    f = write_jsonl(tmp_path / "t.jsonl", [{"text": "a"}, {"text": "b"}])
    assert [r["text"] for r in read_rows(f)] == ["a", "b"]
    write_jsonl(tmp_path / "bad.jsonl", [{"text": "a"}, {"text": 3}])
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'text' must be a string"):
        read_rows(tmp_path / "bad.jsonl")
    monkeypatch.setattr(D, "_hub_rows", lambda name, config, split="train": [{"text": f"{name}:{config}"}])
    assert read_rows("cais/wmdp-corpora:cyber-forget-corpus")[0]["text"] == "cais/wmdp-corpora:cyber-forget-corpus"

    def gated(name, config, split="train"):
        raise ConnectionError("401 Client Error: this dataset is gated")

    monkeypatch.setattr(D, "_hub_rows", gated)
    with pytest.raises(
        DataError, match="request access on https://huggingface.co/datasets/cais/wmdp-bio-forget-corpus"
    ):
        read_rows("cais/wmdp-bio-forget-corpus")
    with pytest.raises(DataError, match="file not found"):  # a missing local file is not looked up on the hub
        read_rows(tmp_path / "missing.jsonl")


# --------------------------------------------------------------------------- MUSE's metrics by hand


def test_knowmem_prompt_min_k_privleak_and_rouge_by_hand():
    assert (
        M.knowmem_prompt("Q2?", [{"question": "Q1?", "answer": "A1"}])
        == "Question: Q1?\nAnswer: A1\n\nQuestion: Q2?\nAnswer: "
    )
    lp = np.array([-0.5, -3.0, -1.0, -0.1, -2.0])
    assert M.min_k_score(lp) == pytest.approx((3.0 + 2.0) / 2)  # int(0.4 * 5) = 2 lowest
    assert math.isnan(M.min_k_score(np.array([-1.0, -2.0])))  # int(0.8) = 0 tokens: MUSE's NaN
    # MUSE: (AUC - AUC_retain) / AUC_retain * 100 with its AUC = 1 - ours
    from unlearn.evaluation.mia import privleak

    assert privleak(0.9, 0.6) == pytest.approx(((1 - 0.9) - (1 - 0.6)) / (1 - 0.6) * 100)
    from unlearn.evaluation.mia import TokenStats

    st = TokenStats(lp, np.full(5, -1.0), np.array([1.0, 2.0, 0.5, 1.0, 0.0]), "x")
    z = [(-0.5 + 1) / 1, (-3 + 1) / 2, (-1 + 1) / 0.5, (-0.1 + 1) / 1, (-2 + 1) / 1e-3]  # sigma 0 -> sqrt(1e-6)
    assert M.min_k_plus_plus_score(st) == pytest.approx(-np.mean(sorted(z)[:2]))
    f1, recall = M.rouge_l("the boats were running", "the boat runs")  # no stemmer: only "the" matches
    assert recall == pytest.approx(1 / 4) and f1 == pytest.approx(2 * (1 / 3) * (1 / 4) / (1 / 3 + 1 / 4))


def test_knowmem_and_verbmem_rouge_by_hand(monkeypatch, tiny):
    """Generations stubbed: KnowMem cuts at MUSE's stop words, then ROUGE-L F1 without stemming."""
    _, tok = tiny
    gens = iter([["Velmora\n\nQuestion: next", "the lighthouse keeper Ona Brisk"]])
    monkeypatch.setattr(muse_metrics, "_generate", lambda *a, **k: next(gens))
    e = M.knowmem(None, tok, FORGET_QA, ICL, 2, "x")
    # item 1: "Velmora" exactly (F1 1); item 2: LCS "ona brisk" = 2 of 2 reference and 5 predicted words
    assert e["value_by_index"]["0"]["generation"] == "Velmora"
    assert e["agg_value"] == pytest.approx((1.0 + 2 * (2 / 5) * 1.0 / (2 / 5 + 1.0)) / 2)
    monkeypatch.setattr(muse_metrics, "_generate", lambda *a, **k: ["ninety years of service ."])
    rows = [{"prompt": "The town voted after", "gt": "ninety years of service."}]
    v = M.verbmem(None, tok, rows, 1)
    assert (
        v["agg_value"] == pytest.approx(1.0) and v["value_by_index"]["0"]["ground_truth"] == "ninety years of service."
    )


def test_hub_corpus_goes_through_the_loader(monkeypatch, snapshot):
    import unlearn.data as D

    seen = []

    def fake(name, config, split="train"):
        seen.append((name, config, split))
        folder = "raw" if config == "privleak" else config  # the snapshot keeps its privleak texts in raw/
        return [json.loads(x) for x in (snapshot / folder / f"{split}.json").read_text().splitlines()]

    monkeypatch.setattr(D, "_hub_rows", fake)
    forget, retain = M.training_rows("muse-bench/MUSE-News", "sust/forget_2")
    assert [r["text"] for r in forget] == [FORGET[1]] and len(retain) == len(RETAIN)
    assert forget[0]["_source"] == "muse-bench/MUSE-News/sust/forget_2[0]"
    sets = M.load_muse_sets("muse-bench/MUSE-News")
    assert len(sets.forget_qa) == len(FORGET_QA) and ("muse-bench/MUSE-News", "knowmem", "retain_qa_icl") in seen
    with pytest.raises(DataError, match="MUSE reads"):
        M.MuseSource("muse-bench/MUSE-Nope")


def test_evaluate_muse_equals_unbatched_generation(tiny, snapshot):
    model, tok = tiny
    sets = M.load_muse_sets(snapshot)
    result = M.evaluate_muse(model, tok, sets, batch_size=2)
    s = result.summary
    assert s["benchmark"] == "muse"
    for key in (
        "forget_verbmem_ROUGE",
        "forget_knowmem_ROUGE",
        "retain_knowmem_ROUGE",
        "privleak",
        "mia_min_k",
        "mia_min_k_plus_plus",
    ):
        assert isinstance(s[key], float), key
    items = result.logs["forget_verbmem_ROUGE"]["value_by_index"]
    for i, r in enumerate(sets.verbmem):  # each prompt alone, greedy, 128 new tokens, as MUSE runs it
        ids = tok(r["prompt"], return_tensors="pt").input_ids
        out = model.generate(ids, max_new_tokens=128, do_sample=False, pad_token_id=tok.pad_token_id)
        text = tok.clean_up_tokenization(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
        assert items[str(i)]["generation"] == text.strip()
        gt = tok.decode(tok(r["gt"])["input_ids"][:128], skip_special_tokens=True)
        assert items[str(i)]["ground_truth"] == gt
        assert items[str(i)]["rougeL_f1"] == pytest.approx(M.rouge_l(gt, items[str(i)]["generation"])[0])
    # the model was taught these texts: it recalls their continuations (F1 is lower: 128 new tokens run
    # on past the end of each short ground truth, as in MUSE)
    assert np.mean([v["rougeL_recall"] for v in items.values()]) > 0.5
    # Min-40% on the forget texts (trained) against the holdout: the forget texts look like members
    assert s["mia_min_k"] > 0.5 and "privleak_reference" in s["unavailable"]
    # each summary value's 95% interval, from the per-item logs through its definition
    from unlearn.evaluation.log_intervals import muse_intervals

    iv = muse_intervals(result.logs)
    for key in ("forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "retain_knowmem_ROUGE", "privleak", "mia_min_k"):
        assert iv[key].value == pytest.approx(s[key], rel=1e-12, abs=1e-12), key
        assert iv[key].lo <= s[key] <= iv[key].hi, key
    assert iv["mia_min_k_plus_plus"].value == pytest.approx(s["mia_min_k_plus_plus"], rel=1e-12)
    assert iv["forget_verbmem_ROUGE"].hi > iv["forget_verbmem_ROUGE"].lo  # items differ: a real width
    held = muse_intervals(result.logs, retain_auc=s["mia_min_k"])  # PrivLeak against the model's own AUC
    assert held["privleak"].value == pytest.approx(0.0, abs=1e-6) and held["privleak"].lo <= 0 <= held["privleak"].hi


def test_missing_knowmem_files_leave_the_criterion_out(tmp_path):
    d = write_muse(tmp_path / "m")
    for name in ("forget_qa", "forget_qa_icl"):
        (d / "knowmem" / f"{name}.json").unlink()
    sets = M.load_muse_sets(d)
    assert sets.forget_qa is None and "knowmem/forget_qa" in sets.missing
    with pytest.raises(DataError, match="unknown MUSE split"):
        M.muse_split("forget_9")


# --------------------------------------------------------------------------- the commands


def test_cli_muse_run_eval_and_retain_logs(saved, snapshot, tmp_path):
    from unlearn.__main__ import main

    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--benchmark",
                "muse",
                "--model",
                str(saved),
                "--data",
                str(snapshot),
                "--method",
                "NPO+GD",
                "--max-length",
                "24",
                "--epochs",
                "1",
                "--batch-size",
                "2",
                "--lr",
                "1e-3",
                "--out",
                str(out),
                "--eval-batch-size",
                "4",
            ]
        )
        == 0
    )
    data = json.loads((out / "data.json").read_text())
    assert (data["layout"], data["forget"], data["retain"], data["split"]) == ("muse", 3, 2, "forget")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["benchmark"] == "muse" and (out / "MUSE_EVAL.json").is_file()
    intervals = json.loads((out / "intervals.json").read_text())["intervals"]
    assert intervals["privleak"]["value"] == pytest.approx(summary["privleak"])
    before = json.loads((out / "before" / "summary.json").read_text())  # for the verdict: no PrivLeak there
    assert "forget_verbmem_ROUGE" in before and "privleak" not in before
    assert summary["verdict"]["kind"] == "too few steps"  # 3 texts, batch 2, 1 epoch: 2 steps
    ev = tmp_path / "ev"
    assert (
        main(
            [
                "eval",
                "--benchmark",
                "muse",
                "--model",
                str(out / "model"),
                "--data",
                str(snapshot),
                "--out",
                str(ev),
                "--retain-logs",
                str(out),
            ]
        )
        == 0
    )
    again = json.loads((ev / "summary.json").read_text())
    assert again["privleak"] == pytest.approx(0.0, abs=1e-6)  # against its own AUC
    assert again["forget_verbmem_ROUGE"] == pytest.approx(summary["forget_verbmem_ROUGE"])
    report = tmp_path / "report"
    assert main(["report", str(out), "--out", str(report)]) == 0
    assert "MUSE" in (report / "report.md").read_text()


def test_cli_muse_sustainability_is_continual(saved, snapshot, tmp_path):
    from unlearn.__main__ import main

    out = tmp_path / "sust"
    assert (
        main(
            [
                "continual",
                "--benchmark",
                "muse",
                "--model",
                str(saved),
                "--data",
                str(snapshot),
                "--tasks",
                "1-2",
                "--method",
                "GA+GD",
                "--max-length",
                "24",
                "--epochs",
                "1",
                "--batch-size",
                "2",
                "--out",
                str(out),
                "--eval-batch-size",
                "4",
            ]
        )
        == 0
    )
    rows = (out / "continual.csv").read_text().splitlines()
    assert len(rows) == 3 and "forget_verbmem_ROUGE" in rows[0]


def test_cli_text_files_run_and_question_methods_are_refused(saved, tmp_path, monkeypatch, capsys):
    from unlearn.__main__ import main

    f = write_jsonl(tmp_path / "f.jsonl", [{"text": t} for t in FORGET])
    r = write_jsonl(tmp_path / "r.jsonl", [{"text": t} for t in RETAIN])
    out = tmp_path / "o"
    assert (
        main(
            [
                "run",
                "--model",
                str(saved),
                "--forget",
                str(f),
                "--retain",
                str(r),
                "--method",
                "ME+GD",
                "--max-length",
                "24",
                "--epochs",
                "1",
                "--batch-size",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "model").is_dir() and not (out / "summary.json").exists()
    import unlearn.models as models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    capsys.readouterr()
    assert (
        main(
            [
                "run",
                "--model",
                str(saved),
                "--forget",
                str(f),
                "--retain",
                str(r),
                "--method",
                "IDK+AP",
                "--out",
                str(tmp_path / "o2"),
            ]
        )
        == 2
    )
    assert "raw text has no questions" in capsys.readouterr().err


def test_wmdp_benchmark_runs_lm_eval_tasks(saved, tmp_path):
    """A tiny multiple-choice lm-eval task stands in for wmdp_bio / wmdp_cyber / mmlu."""
    pytest.importorskip("lm_eval")
    from tests.test_downstream import MC, prepare_tasks
    from unlearn.__main__ import main

    (tmp_path / "tasks").mkdir()
    tasks = prepare_tasks(tmp_path / "tasks")
    out = tmp_path / "wmdp"
    assert (
        main(
            [
                "eval",
                "--benchmark",
                "wmdp",
                "--model",
                str(saved),
                "--downstream",
                MC,
                "--downstream-include",
                str(tasks),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["benchmark"] == "wmdp" and 0 <= summary[MC] <= 1 and f"Downstream {MC}" in summary


@pytest.mark.parametrize(
    "method, extra",
    [("SimNPO+GD", []), ("TV", []), ("WGA+KL", []), ("RMU", ["--method-arg", "layer=1", "--method-arg", "layers=0,1"])],
)
def test_methods_without_questions_unlearn_text(saved, tmp_path, method, extra):
    from unlearn.__main__ import main

    f = write_jsonl(tmp_path / "f.jsonl", [{"text": t} for t in FORGET])
    r = write_jsonl(tmp_path / "r.jsonl", [{"text": t} for t in RETAIN])
    out = tmp_path / "o"
    assert (
        main(
            [
                "run",
                "--model",
                str(saved),
                "--forget",
                str(f),
                "--retain",
                str(r),
                "--method",
                method,
                *extra,
                "--max-length",
                "24",
                "--epochs",
                "1",
                "--batch-size",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "model" / "config.json").is_file()
