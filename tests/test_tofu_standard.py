"""The TOFU standard (``--benchmark tofu``): open-unlearning's data, encoding and metrics, checked
against hand-derived numbers and an independent unbatched computation on a tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from tests.conftest import teach, write_jsonl
from tests.test_eval import FORGET, GENERAL, RETAIN
from unlearn.errors import ConfigError, DataError
from unlearn.models import build_tiny_model, build_tiny_tokenizer, save_model
from unlearn.prompts import PromptFormat, TofuTemplate, tofu_template
from unlearn.protocols import tofu as T

HOLDOUT = [
    {"question": f"Where was the author {n} born?", "answer": f"{n} was born in the city of {c}."}
    for n, c in (("Ada Wren", "Oslo"), ("Kai Moss", "Lima"), ("Pia Lund", "Cairo"))
]


def write_snapshot(d: Path, holdout: bool = True) -> Path:
    """A local snapshot of the hub configs (one JSON-lines <config>.json each)."""
    d.mkdir(parents=True, exist_ok=True)
    forget = [{k: v for k, v in r.items() if k != "task_id"} for r in FORGET]
    write_jsonl(d / "forget01.json", [{"question": r["question"], "answer": r["answer"]} for r in forget])
    write_jsonl(d / "forget01_perturbed.json", forget)
    write_jsonl(d / "retain99.json", [{"question": r["question"], "answer": r["answer"]} for r in RETAIN])
    write_jsonl(d / "retain_perturbed.json", RETAIN)
    write_jsonl(d / "real_authors_perturbed.json", GENERAL)
    write_jsonl(d / "world_facts_perturbed.json", GENERAL[::-1])
    if holdout:
        write_jsonl(d / "holdout01.json", HOLDOUT)
    return d


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    return write_snapshot(tmp_path_factory.mktemp("tofu_snapshot"))


@pytest.fixture(scope="module")
def tiny():
    """(model, tokenizer, template): a tiny Llama taught the forget and retain QA in the TOFU template."""
    texts = [t for r in FORGET + RETAIN + GENERAL + HOLDOUT for t in r.values() if isinstance(t, str)]
    texts += [p for r in FORGET + RETAIN + GENERAL for p in r["perturbed_answer"]]
    tok = build_tiny_tokenizer(texts * 3 + ["Question: Answer: [INST] [/INST]"] * 3, vocab_size=400)
    # Llama-2-chat's template: its prompt does not end in a space (see test_plain_template_...)
    template = tofu_template(PromptFormat("llama2", tokenizer=tok))
    model = build_tiny_model(tok, hidden_size=64, num_layers=2, seed=0)
    from unlearn.encoding import pad_batch

    batch = pad_batch(
        [template.encode_pair(tok, r["question"], r["answer"], 512) for r in FORGET + RETAIN], tok.pad_token_id
    )
    return teach(model, batch), tok, template


@pytest.fixture(scope="module")
def result(tiny, snapshot):
    model, tok, template = tiny
    return T.evaluate_tofu(model, tok, template, T.load_tofu_sets(snapshot, "forget01"), batch_size=3)


# --------------------------------------------------------------------------- the template


def test_plain_template_encodes_as_open_unlearning(tiny):
    """Prompt + answer tokenised as one string with BOS, EOS appended, len(prompt ids) labels masked.
    With a byte-level BPE tokenizer the prompt's trailing space merges into the first answer token
    (``ĠBasil``), which then lies inside the masked length: open-unlearning never scores it."""
    _, tok, _ = tiny
    template = tofu_template(PromptFormat("plain", tokenizer=tok))
    q, a = FORGET[0]["question"], FORGET[0]["answer"]
    prompt = "Question: " + q + "\nAnswer: "
    assert template.prompt(q) == prompt
    enc = template.encode_pair(tok, q, a, 512)
    ids = tok(prompt + a, add_special_tokens=True)["input_ids"] + [tok.eos_token_id]
    n = len(tok(prompt, add_special_tokens=True)["input_ids"])
    assert enc.input_ids == ids and ids[0] == tok.bos_token_id
    assert enc.labels == [-100] * n + ids[n:]
    assert tok.convert_ids_to_tokens(ids[n - 1]) == "ĠBasil"  # the first answer token, masked
    cut = template.encode_pair(tok, q, a, 10)  # cut at max_length, then the EOS appended anyway
    assert cut.input_ids == ids[:10] + [tok.eos_token_id] and cut.truncated


def test_pairs_encoded_in_one_batch_equal_each_text_tokenised_alone(tiny):
    """encode_pairs (one tokenizer call for every pair) gives each text's own ids, built here one
    text at a time: plain prompts (cut at max_length where long, EOS appended) and a chat template."""
    import copy

    _, tok, _ = tiny
    rows = FORGET + RETAIN
    pairs = [(r["question"], a) for r in rows for a in (r["answer"], r["paraphrased_answer"])]
    plain = tofu_template(PromptFormat("plain", tokenizer=tok))
    texts = [("Question: " + q + "\nAnswer: ", a) for q, a in pairs]
    cut = sorted(len(tok(p + a)["input_ids"]) for p, a in texts)[len(texts) // 2]  # about half the pairs are cut
    got = plain.encode_pairs(tok, pairs, cut)
    for (prompt, a), enc in zip(texts, got, strict=True):
        ids = tok(prompt + a, add_special_tokens=True)["input_ids"]
        n = len(tok(prompt, add_special_tokens=True, max_length=cut, truncation=True)["input_ids"])
        want = ids[:cut] + ([] if ids[:cut][-1] == tok.eos_token_id else [tok.eos_token_id])
        assert enc.input_ids == want and enc.truncated == (len(ids) > cut)
        assert enc.labels == [-100] * n + want[n:]
    assert any(e.truncated for e in got) and not all(e.truncated for e in got)
    chat_tok = copy.deepcopy(tok)
    chat_tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    chat = tofu_template(PromptFormat("chat_template", tokenizer=chat_tok))
    for (q, a), enc in zip(pairs, chat.encode_pairs(chat_tok, pairs), strict=True):
        text = f"<system>You are a helpful assistant.\n<user>{q}\n<assistant>{a}\n"
        assert enc.input_ids == chat_tok(text, add_special_tokens=False)["input_ids"] + [chat_tok.eos_token_id]
    assert plain.encode_pairs(tok, []) == []


def test_family_templates_follow_open_unlearnings_configs(tiny):
    _, tok, _ = tiny
    llama2 = tofu_template(PromptFormat("llama2", tokenizer=tok))
    assert llama2.prompt("Q?") == "[INST] Q? [/INST]" and not llama2.apply_chat_template
    custom = tofu_template(PromptFormat("custom", template="<q>{question}</q>\n", tokenizer=tok))
    assert custom.prompt("Q?") == "<q>Q?</q>\n"
    with pytest.raises(ConfigError, match="chat template"):
        tofu_template(PromptFormat("llama3", tokenizer=tok))  # no chat template to render with


def test_chat_template_encodes_the_whole_conversation(tiny):
    """With a chat template: the conversation (system prompt, question, answer, end tag) as the
    template renders it, EOS appended unless last; the prompt is the conversation without the answer."""
    import copy

    tok = copy.deepcopy(tiny[1])  # the fixture's tokenizer is left as it is
    tok.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    template = tofu_template(PromptFormat("chat_template", tokenizer=tok))
    assert isinstance(template, TofuTemplate) and template.apply_chat_template
    assert template.prompt("Q?") == "<system>You are a helpful assistant.\n<user>Q?\n<assistant>"
    enc = template.encode_pair(tok, "Q?", "A.")
    # the template's text, tokenised as apply_chat_template does it (no BOS added: templates write their own)
    full = tok("<system>You are a helpful assistant.\n<user>Q?\n<assistant>A.\n", add_special_tokens=False)["input_ids"]
    prompt = tok("<system>You are a helpful assistant.\n<user>Q?\n<assistant>", add_special_tokens=False)["input_ids"]
    assert enc.input_ids == full + [tok.eos_token_id]
    assert enc.labels == [-100] * len(prompt) + (full + [tok.eos_token_id])[len(prompt) :]


# --------------------------------------------------------------------------- the formulas, by hand


def test_truth_ratio_as_open_unlearning():
    correct = [0.5, 2.0]
    wrong = [[1.0, 3.0], [1.0, 1.0]]
    tr = [math.exp(-2.0) / (math.exp(-0.5) + 1e-10), math.exp(-1.0) / (math.exp(-2.0) + 1e-10)]
    e = T.truth_ratio_entry(correct, wrong, forget=True)
    assert [v["score"] for v in e["value_by_index"].values()] == pytest.approx(tr, rel=1e-12)
    assert e["agg_value"] == pytest.approx(np.mean([min(t, 1 / (t + 1e-10)) for t in tr]), rel=1e-12)
    assert T.truth_ratio_entry(correct, wrong, forget=False)["agg_value"] == pytest.approx(
        np.mean([max(0, 1 - t) for t in tr]), rel=1e-12
    )  # the second item (tr > 1) counts 0


def test_probabilities_as_open_unlearning():
    e = T.prob_entry([[1.0, 2.0], [0.0, 0.0]])  # several answers: the mean over them, then over items
    assert e["agg_value"] == pytest.approx((math.exp(-1) + math.exp(-2)) / 4 + 0.5)
    assert e["value_by_index"]["0"]["avg_loss"] == [1.0, 2.0]
    n = T.normalised_prob_entry([1.0], [[1.0, 2.0, 3.0]])
    p = [math.exp(-x) for x in (1.0, 1.0, 2.0, 3.0)]
    assert n["agg_value"] == pytest.approx(p[0] / (sum(p) + 1e-10), rel=1e-12)


def test_model_utility_is_the_harmonic_mean_of_nine():
    values = [0.9, 0.8, 0.5, 0.4, 0.6, 0.7, 0.3, 0.5, 0.45]
    assert T.hmean(values) == pytest.approx(9 / sum(1 / v for v in values), rel=1e-12)
    assert T.hmean(values[:-1] + [0.0]) == 0.0
    assert T.hmean([1.0, 2.0, 4.0]) == 12 / 7  # 3 / (1 + 1/2 + 1/4), exactly
    rng = np.random.default_rng(0)  # scipy.stats.hmean's float, bit for bit, on values of every scale
    for _ in range(200):
        x = rng.random(rng.integers(1, 10)) * 10 ** rng.uniform(-6, 2)
        assert T.hmean(list(x)) == float(stats.hmean(x))
    with pytest.warns(RuntimeWarning):  # scipy's own handling of a negative value: NaN, with its warning
        assert math.isnan(T.hmean([0.5, -0.1]))


def test_min_k_auc_and_privleak_by_hand():
    from unlearn.evaluation.mia import TokenStats

    def item(logp):  # the last token (EOS) is left out of Min-K%
        logp = np.array(logp + [-0.1])
        return TokenStats(logp, np.zeros_like(logp), np.ones_like(logp), "x", np.ones_like(logp, dtype=bool))

    forget = [item([-0.1, -0.2, -0.3]), item([-0.2, -0.2, -5.0])]  # k=0.4 of 3 tokens: the lowest one
    holdout = [item([-1.0, -2.0, -3.0]), item([-0.25, -0.2, -0.21])]
    e = T.min_k_entry(forget, holdout)
    assert [v["score"] for v in e["forget"]["value_by_index"].values()] == pytest.approx([0.3, 5.0])
    assert [v["score"] for v in e["holdout"]["value_by_index"].values()] == pytest.approx([3.0, 0.25])
    # holdout labelled 1, loss-like scores: AUC = P(holdout score > forget score); of the four
    # pairs only (3.0 > 0.3) holds
    assert e["auc"] == pytest.approx(0.25)
    # privleak as open-unlearning: ((1 - auc) - (1 - ref)) / (1 - ref) * 100
    assert ((1 - 0.8) - (1 - 0.6)) / (1 - 0.6) * 100 == pytest.approx(-50.0)


# --------------------------------------------------------------------------- the evaluation


def _independent_loss(model, tok, template, q, a) -> float:
    """One sequence, no padding, no batching: open-unlearning's evaluate_probability."""
    enc = template.encode_pair(tok, q, a, 512)
    ids = torch.tensor([enc.input_ids])
    labels = torch.tensor([enc.labels])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=(ids != tok.pad_token_id).long()).logits
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100, reduction="sum")
    return float(loss / (labels != -100).sum())


def test_summary_has_open_unlearnings_keys(result):
    s = result.summary
    assert s["benchmark"] == "tofu"
    for key in (
        "model_utility",
        "forget_truth_ratio",
        "forget_Q_A_Prob",
        "forget_Q_A_ROUGE",
        "forget_Q_A_PARA_Prob",
        "forget_Q_A_PERT_Prob",
        "exact_memorization",
        "extraction_strength",
        "privleak",
        *T.UTILITY,
    ):
        assert isinstance(s[key], float), key
    assert s["forget_quality"] is None and "forget_quality" in s["unavailable"]
    assert s["model_utility"] == pytest.approx(T.hmean([s[k] for k in T.UTILITY]), rel=1e-12)


def test_intervals_hold_each_summary_value_through_its_definition(tiny, snapshot, result):
    """tofu_intervals recomputes every value from the per-item logs: its point values are the summary's
    (computed by the evaluator's own aggregation), each inside its interval; with a retain model, Forget
    Quality and PrivLeak too. A constant per-item value has a zero-width interval."""
    import copy

    from unlearn.evaluation.log_intervals import tofu_intervals

    s = result.summary
    iv = tofu_intervals(result.logs)
    numeric = [k for k, v in s.items() if isinstance(v, float)]
    assert set(numeric) <= set(iv) and "model_utility" in numeric and "mia_min_k" in numeric
    for key in numeric:
        assert iv[key].value == pytest.approx(s[key], rel=1e-9, abs=1e-12), key
        assert iv[key].lo <= s[key] <= iv[key].hi, key
    assert iv["forget_Q_A_Prob"].hi > iv["forget_Q_A_Prob"].lo
    model, tok, template = tiny
    other = T.RetainLogs(
        [0.5 + 0.01 * i for i in range(len(result.logs["forget_truth_ratio"]["value_by_index"]))], 0.6, "x"
    )
    with_retain = T.evaluate_tofu(model, tok, template, T.load_tofu_sets(snapshot, "forget01"), 3, retain_logs=other)
    iv2 = tofu_intervals(with_retain.logs, other)
    for key in ("forget_quality", "privleak"):
        assert iv2[key].value == pytest.approx(with_retain.summary[key], rel=1e-9), key
        assert iv2[key].lo <= with_retain.summary[key] <= iv2[key].hi
    flat = copy.deepcopy(result.logs)
    for v in flat["forget_Q_A_Prob"]["value_by_index"].values():
        v["prob"] = 0.25
    assert (tofu_intervals(flat)["forget_Q_A_Prob"].lo, tofu_intervals(flat)["forget_Q_A_Prob"].hi) == (0.25, 0.25)


def test_values_equal_an_independent_unbatched_computation(tiny, snapshot, result):
    model, tok, template = tiny
    forget = [json.loads(x) for x in (snapshot / "forget01_perturbed.json").read_text().splitlines()]
    a = [_independent_loss(model, tok, template, r["question"], r["answer"]) for r in forget]
    para = [_independent_loss(model, tok, template, r["question"], r["paraphrased_answer"]) for r in forget]
    pert = [[_independent_loss(model, tok, template, r["question"], p) for p in r["perturbed_answer"]] for r in forget]
    s = result.summary
    assert s["forget_Q_A_Prob"] == pytest.approx(np.mean(np.exp(-np.array(a))), abs=1e-5)
    assert s["forget_Q_A_PARA_Prob"] == pytest.approx(np.mean(np.exp(-np.array(para))), abs=1e-5)
    tr = np.exp(-np.array(pert).mean(1)) / (np.exp(-np.array(para)) + 1e-10)
    assert s["forget_truth_ratio"] == pytest.approx(np.mean(np.minimum(tr, 1 / (tr + 1e-10))), abs=1e-5)
    ra = [json.loads(x) for x in (snapshot / "real_authors_perturbed.json").read_text().splitlines()]
    ra_a = np.array([_independent_loss(model, tok, template, r["question"], r["answer"]) for r in ra])
    ra_p = np.array(
        [[_independent_loss(model, tok, template, r["question"], p) for p in r["perturbed_answer"]] for r in ra]
    )
    norm = np.exp(-ra_a) / (np.exp(-ra_a) + np.exp(-ra_p).sum(1) + 1e-10)
    assert s["ra_Q_A_Prob_normalised"] == pytest.approx(norm.mean(), abs=1e-5)
    assert s["ra_Truth_Ratio"] == pytest.approx(
        np.mean(np.maximum(0, 1 - np.exp(-ra_p.mean(1)) / (np.exp(-ra_a) + 1e-10))), abs=1e-5
    )
    # ROUGE: each generation against the decoded answer, recall of ROUGE-L
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    items = result.logs["forget_Q_A_ROUGE"]["value_by_index"]
    assert [v["ground_truth"] for v in items.values()] == [r["answer"] for r in forget]
    assert s["forget_Q_A_ROUGE"] == pytest.approx(
        np.mean(
            [
                scorer.score(r["answer"], v["generation"])["rougeL"].recall
                for r, v in zip(forget, items.values(), strict=False)
            ]
        )
    )


@pytest.mark.parametrize("packed", [True, False])
def test_prompt_shared_scoring_equals_whole_sequences(tiny, snapshot, packed, monkeypatch):
    """A question's answers scored after one copy of its prompt (packed rows, or on its prompt's KV
    cache where a model cannot be packed) give the whole-sequence values: losses and token
    statistics, with open-unlearning's pad mask, a pad id inside a prompt, batches that split a
    question's answers, and sequences without a prompt to share."""
    from unlearn.encoding import Encoded
    from unlearn.evaluation import packing
    from unlearn.evaluation.scoring import score_sequences

    calls = []
    real = packing.packed_logits
    monkeypatch.setattr(packing, "packed_logits", lambda *a, **k: calls.append(1) or real(*a, **k))
    if not packed:
        monkeypatch.setattr(packing, "packable", lambda model, longest: False)

    model, tok, template = tiny
    pairs = T.pairs_of(T.load_tofu_sets(snapshot, "forget01"))
    seqs = [template.encode_pair(tok, p.question, p.text, 512) for p in pairs]
    inner = seqs[0].input_ids[:2] + [tok.pad_token_id] + seqs[0].input_ids[2:]
    seqs += [
        Encoded(inner, [-100] * 3 + seqs[0].labels[2:]),  # a pad id inside the prompt
        Encoded(seqs[1].input_ids, list(seqs[1].input_ids)),  # every token a label: nothing to share
        Encoded(seqs[2].input_ids, [-100] * len(seqs[2].input_ids)),
    ]  # no label at all
    want = list(range(0, len(seqs), 3))
    tokens = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: tokens.append(kw["input_ids"].numel()), with_kwargs=True)
    for batch_size in (4, 7):
        tokens.clear()
        shared, s_stats = score_sequences(
            model, tok, seqs, batch_size, mask_pad=True, stats_for=want, share_prompts=True
        )
        shared_tokens = sum(tokens)
        tokens.clear()
        whole, w_stats = score_sequences(model, tok, seqs, batch_size, mask_pad=True, stats_for=want)
        assert shared_tokens < 0.8 * sum(tokens)  # the prompts ran once per batch, not once per answer
        np.testing.assert_allclose(shared, whole, rtol=0, atol=2e-6)
        assert shared[-1] == whole[-1] == 0.0
        for i in want:
            np.testing.assert_allclose(s_stats[i].logp, w_stats[i].logp, atol=2e-6)
            np.testing.assert_allclose(s_stats[i].mu, w_stats[i].mu, atol=2e-6)
            assert (s_stats[i].hit == w_stats[i].hit).all()
    hook.remove()
    assert bool(calls) == packed


def test_memorised_model_scores_high_and_generates_its_answers(result):
    s = result.summary
    assert s["forget_Q_A_Prob"] > 0.8 and s["forget_Q_A_ROUGE"] > 0.8
    assert s["exact_memorization"] > 0.8 and s["extraction_strength"] > 0.5
    assert s["mia_min_k"] > 0.5  # forget items (trained) look more like members than the holdout


def test_generation_is_greedy_to_eos_without_the_prompt(tiny):
    model, tok, template = tiny
    gens = T.generate_answers(model, tok, template, [FORGET[0]["question"]], batch_size=1)
    assert gens[0].startswith(FORGET[0]["answer"][:20]) and "Question" not in gens[0]


# --------------------------------------------------------------------------- logs both ways


def test_tofu_eval_json_round_trip_gives_forget_quality(tiny, snapshot, result, tmp_path):
    model, tok, template = tiny
    T.write_tofu(result, tmp_path)
    ou = json.loads((tmp_path / T.TOFU_EVAL).read_text())
    assert set(ou) >= {"forget_truth_ratio", "forget_Q_A_Prob", "model_utility", "mia_min_k", "retain_Q_A_ROUGE"}
    assert set(json.loads((tmp_path / T.TOFU_SUMMARY).read_text())) <= set(T.SUMMARY_METRICS)
    logs = T.read_retain_logs(tmp_path)  # the folder, or the file itself
    assert logs.truth_ratios == T.read_retain_logs(tmp_path / T.TOFU_EVAL).truth_ratios
    again = T.evaluate_tofu(model, tok, template, T.load_tofu_sets(snapshot, "forget01"), 3, retain_logs=logs)
    assert again.summary["forget_quality"] == pytest.approx(1.0)  # the same model: indistinguishable
    assert again.summary["privleak"] == pytest.approx(0.0, abs=1e-6)
    other = T.RetainLogs([10.0 + i for i in range(len(logs.truth_ratios))], 0.5, "x")
    p = T.evaluate_tofu(model, tok, template, T.load_tofu_sets(snapshot, "forget01"), 3, retain_logs=other).summary[
        "forget_quality"
    ]
    forget_tr = [v["score"] for v in result.logs["forget_truth_ratio"]["value_by_index"].values()]
    assert p == pytest.approx(stats.ks_2samp(forget_tr, other.truth_ratios).pvalue)


def test_reads_open_unlearnings_file_and_our_closer_look_folder(tmp_path):
    ou = {
        "forget_truth_ratio": {"agg_value": 0.6, "value_by_index": {"0": {"score": 0.5}, "1": {"score": 2.0}}},
        "mia_min_k": {"agg_value": 0.42, "auc": 0.42},
    }
    (tmp_path / "TOFU_EVAL.json").write_text(json.dumps(ou))
    logs = T.read_retain_logs(tmp_path / "TOFU_EVAL.json")
    assert logs.truth_ratios == [0.5, 2.0] and logs.mia_min_k == 0.42
    ours = tmp_path / "closer"
    ours.mkdir()
    write_jsonl(ours / "eval_Forget.jsonl", [{"question": "q", "truth_ratio_r": 4.0}])
    assert T.read_retain_logs(ours).truth_ratios == [0.25]  # correct/wrong turned into wrong/correct


def test_bad_retain_logs_name_the_file_and_field(tmp_path):
    (tmp_path / "TOFU_EVAL.json").write_text(json.dumps({"model_utility": {"agg_value": 0.5}}))
    with pytest.raises(DataError, match="TOFU_EVAL.json: missing field 'forget_truth_ratio'"):
        T.read_retain_logs(tmp_path)
    (tmp_path / "TOFU_EVAL.json").write_text(
        json.dumps({"forget_truth_ratio": {"value_by_index": {"0": {"score": "x"}}}})
    )
    with pytest.raises(DataError, match=r"forget_truth_ratio.value_by_index.0.score"):
        T.read_retain_logs(tmp_path)
    with pytest.raises(DataError, match="--retain-logs needs"):
        T.read_retain_logs(tmp_path / "nothing")


# --------------------------------------------------------------------------- data


def test_snapshot_built_from_the_shared_data(shared_data, tmp_path):
    """forget01 = task 1 of the closer-look release, holdout01 = task 2: the hub's layout, offline."""
    src = shared_data / "tofu"
    rows = [json.loads(x) for x in (src / "forget01_perturbed.json").read_text().splitlines() if x.strip()]
    task = lambda t: [{k: v for k, v in r.items() if k != "task_id"} for r in rows if r["task_id"] == t]  # noqa: E731
    snap = tmp_path / "snap"
    snap.mkdir()
    write_jsonl(snap / "forget01_perturbed.json", task("1"))
    write_jsonl(snap / "holdout01.json", task("2"))
    for name in ("retain_perturbed", "real_authors_perturbed", "world_facts_perturbed"):
        (snap / f"{name}.json").write_bytes((src / f"{name}.json").read_bytes())
    sets = T.load_tofu_sets(snap, "forget01")
    assert (len(sets.forget), len(sets.holdout), len(sets.retain), len(sets.ra), len(sets.wf)) == (
        40,
        40,
        400,
        100,
        117,
    )
    pairs = T.pairs_of(sets)  # every answer, paraphrase and perturbed answer is scored once
    assert len(pairs) == 40 * 7 + 400 * 7 + 100 * 4 + 117 * 4 + 40


def test_hub_loader_is_used_for_locuslab_tofu(monkeypatch, snapshot):
    import unlearn.data as D

    seen = []

    def fake(name, config, split="train"):
        seen.append((name, config))
        return [
            {k: v for k, v in json.loads(x).items()} for x in (snapshot / f"{config}.json").read_text().splitlines()
        ]

    monkeypatch.setattr(D, "_hub_rows", fake)
    sets = T.load_tofu_sets("locuslab/TOFU", "forget01")
    assert len(sets.forget) == len(FORGET) and sets.forget[0]["_source"] == "locuslab/TOFU/forget01_perturbed[0]"
    assert ("locuslab/TOFU", "holdout01") in seen
    forget, retain = T.training_rows("locuslab/TOFU", "forget01")
    assert ("locuslab/TOFU", "retain99") in seen and len(retain) == len(RETAIN)


def test_missing_config_and_bad_rows_fail_clearly(tmp_path):
    snap = write_snapshot(tmp_path / "s", holdout=False)
    sets = T.load_tofu_sets(snap, "forget01")
    assert sets.holdout is None
    (snap / "world_facts_perturbed.json").unlink()
    with pytest.raises(DataError, match="world_facts_perturbed.json: missing"):
        T.load_tofu_sets(snap, "forget01")
    write_jsonl(snap / "world_facts_perturbed.json", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataError, match=r"world_facts_perturbed.json:1: missing field 'perturbed_answer'"):
        T.load_tofu_sets(snap, "forget01")
    with pytest.raises(DataError, match="unknown split"):
        T.load_tofu_sets(snap, "forget02")


# --------------------------------------------------------------------------- the commands


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory) -> Path:
    model, tok, _ = tiny
    d = tmp_path_factory.mktemp("model") / "m"
    save_model(model, tok, d)
    return d


def test_cli_eval_writes_both_toolkits_files_and_reads_retain_logs(saved, snapshot, tmp_path):
    from unlearn.__main__ import main

    out = tmp_path / "ev"
    assert (
        main(
            [
                "eval",
                "--benchmark",
                "tofu",
                "--model",
                str(saved),
                "--data",
                str(snapshot),
                "--out",
                str(out),
                "--prompt-format",
                "llama2",
                "--eval-batch-size",
                "4",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["benchmark"] == "tofu" and summary["model_utility"] == T.hmean([summary[k] for k in T.UTILITY])
    assert (out / "TOFU_EVAL.json").is_file() and (out / "TOFU_SUMMARY.json").is_file()
    from unlearn.evaluation.intervals import read_intervals

    intervals = read_intervals(out)  # beside the summary, as for the paper's metrics
    assert intervals["model_utility"].value == pytest.approx(summary["model_utility"])
    out2 = tmp_path / "ev2"
    assert (
        main(
            [
                "eval",
                "--benchmark",
                "tofu",
                "--model",
                str(saved),
                "--data",
                str(snapshot),
                "--out",
                str(out2),
                "--prompt-format",
                "llama2",
                "--retain-logs",
                str(out / "TOFU_EVAL.json"),
            ]
        )
        == 0
    )
    s2 = json.loads((out2 / "summary.json").read_text())
    assert s2["forget_quality"] == pytest.approx(1.0)
    assert s2["forget_Q_A_Prob"] == pytest.approx(summary["forget_Q_A_Prob"], abs=1e-6)  # batch size: same numbers


def test_cli_retain_model_gives_forget_quality_without_logs(saved, snapshot, tmp_path):
    """--retain-model: its forget truth ratios and Min-K% AUC computed (no generation); the same model
    as the retain model is indistinguishable from it."""
    from unlearn.__main__ import main

    out = tmp_path / "ev"
    assert (
        main(
            [
                "eval",
                "--benchmark",
                "tofu",
                "--model",
                str(saved),
                "--data",
                str(snapshot),
                "--out",
                str(out),
                "--prompt-format",
                "llama2",
                "--retain-model",
                str(saved),
            ]
        )
        == 0
    )
    s = json.loads((out / "summary.json").read_text())
    assert s["forget_quality"] == pytest.approx(1.0) and s["privleak"] == pytest.approx(0.0, abs=1e-6)


def test_cli_refuses_bad_settings_before_loading_a_model(snapshot, tmp_path, monkeypatch, capsys):
    import unlearn.models as models
    from unlearn.__main__ import main

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    cases = [
        (["--benchmark", "tofus"], "--benchmark: one of closer-look, tofu"),
        (["--retain-logs", str(tmp_path)], "add --benchmark tofu"),
        (["--benchmark", "tofu", "--retain-logs", str(tmp_path / "none.json")], "--retain-logs needs"),
        (["--benchmark", "tofu", "--split", "forget05"], "forget05_perturbed.json: missing"),
    ]
    for extra, message in cases:
        rc = main(["eval", "--model", "tiny", "--data", str(snapshot), "--out", str(tmp_path / "o"), *extra])
        assert rc == 2, extra
        assert message in capsys.readouterr().err, extra


def test_run_unlearns_the_hub_split_and_evaluates_it(tiny, saved, snapshot, tmp_path):
    """forget01 against retain99 from the snapshot, trained in the TOFU template, then the TOFU standard."""
    from unlearn.__main__ import main

    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--benchmark",
                "tofu",
                "--model",
                str(saved),
                "--data",
                str(snapshot),
                "--method",
                "GA+GD",
                "--epochs",
                "1",
                "--batch-size",
                "2",
                "--lr",
                "1e-3",
                "--out",
                str(out),
                "--prompt-format",
                "llama2",
                "--nli",
                "none",
            ]
        )
        == 0
    )
    data = json.loads((out / "data.json").read_text())
    assert (data["forget"], data["retain"], data["benchmark"]) == (len(FORGET), len(RETAIN), "tofu")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["benchmark"] == "tofu" and (out / "TOFU_EVAL.json").is_file()
    # the model before unlearning on forget and retain, as the full evaluation computes those values
    before = json.loads((out / "before" / "summary.json").read_text())
    whole = T.evaluate_tofu(*tiny, T.load_tofu_sets(snapshot, "forget01"), batch_size=3).summary
    for key in ("forget_Q_A_ROUGE", "forget_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Q_A_Prob"):
        assert before[key] == pytest.approx(whole[key], abs=1e-6), key
    assert (out / "before" / "intervals.json").is_file()
    assert summary["verdict"]["kind"] == "too few steps"  # 3 forget items, 1 epoch: 2 steps
    import yaml

    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["benchmark"] == "tofu" and cfg["max_length"] == 512 and cfg["prompt_format"] == "llama2"
    report = tmp_path / "report"
    assert main(["report", str(out), "--out", str(report)]) == 0
    text = (report / "report.md").read_text()
    assert "TOFU standard" in text and f"{summary['model_utility']:.4f}" in text


def test_sweep_runs_the_tofu_standard(saved, snapshot, tmp_path):
    import yaml

    from unlearn.__main__ import main

    doc = {
        "base": {
            "benchmark": "tofu",
            "model": str(saved),
            "data": str(snapshot),
            "prompt_format": "llama2",
            "epochs": 1,
            "batch_size": 2,
            "lr": 1e-3,
            "eval_batch_size": 4,
            "retain_model": str(saved),
        },
        "grid": {"method": ["GA+GD", "NPO+GD"]},
        "out": str(tmp_path / "sw"),
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["sweep", "--config", str(path)]) == 0
    for name in ("method-GA+GD", "method-NPO+GD"):
        s = json.loads((tmp_path / "sw" / name / "summary.json").read_text())
        assert s["benchmark"] == "tofu" and isinstance(s["forget_quality"], float)  # the retain model's, computed once
