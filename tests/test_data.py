import pytest
import torch

from tests.conftest import write_jsonl
from unlearn.data import DataError, load_hub_tofu, load_real_world, load_tofu, load_unlearning_data, read_records
from unlearn.datasets import UnlearningDataset
from unlearn.encoding import IGNORE_INDEX, encode_qa, pad_batch


def _key(r):
    return (r["question"], r["answer"])


@pytest.mark.parametrize(
    "split,retain_file,n_forget,n_total",
    [("forget01", "retain90", 40, 4000), ("forget05", "retain50", 200, 4000), ("forget10", "retain10", 400, 4000)],
)
def test_tofu_retain_derivation(shared_data, split, retain_file, n_forget, n_total):
    d = load_tofu(shared_data / "tofu", split, task_id=1)
    assert len(d.forget) == n_forget
    assert len(d.forget) + len(d.retain) == n_total
    assert not {_key(r) for r in d.forget} & {_key(r) for r in d.retain}
    assert d.info["retain_file"] == retain_file
    # Continual: rows of tasks already unlearned leave the retain set.
    d3 = load_tofu(shared_data / "tofu", split, task_id=3, unlearned=[1, 2])
    assert len(d3.forget) + len(d3.retain) == n_total - 2 * n_forget
    assert not {_key(r) for r in d.forget} & {_key(r) for r in d3.retain}


def test_real_world_layout(shared_data):
    d = load_unlearning_data(str(shared_data / "real_world"), task_id=None)
    assert d.layout == "real_world" and len(d.forget) == 400 and len(d.retain) == 400
    assert len(load_real_world(shared_data / "real_world", task_id=2).forget) == 20


def test_hub_loader_is_monkeypatchable(monkeypatch):
    calls = []

    def fake(name, config, split="train"):
        calls.append((name, config))
        return [{"question": f"{config} q{i}", "answer": "a"} for i in range(3)]

    monkeypatch.setattr("unlearn.data._hub_rows", fake)
    d = load_unlearning_data("locuslab/TOFU", split="forget05")
    assert calls == [("locuslab/TOFU", "forget05"), ("locuslab/TOFU", "retain95")]
    assert d.layout == "hub" and len(d.forget) == 3
    with pytest.raises(DataError, match="unknown split"):
        load_hub_tofu("forget07")


@pytest.mark.parametrize(
    "content,message",
    [
        ('{"question": "q", "answer": "a"}\n{"question": "q2"\n', ":2: not valid JSON"),
        ('{"question": "q", "answer": "a"}\n{"question": "q2"}\n', ":2: missing field 'answer'"),
        ('{"question": "q", "answer": 3}\n', ":1: field 'answer' must be a string"),
        ("", "the file is empty"),
        ("[1, 2]", "item 1: expected a JSON object"),
    ],
)
def test_bad_records(tmp_path, content, message):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(DataError) as e:
        read_records(p)
    assert str(p) in str(e.value) and message in str(e.value)


def test_non_utf8(tmp_path):
    p = tmp_path / "latin.json"
    p.write_bytes(b'{"question": "q", "answer": "a"}\n{"question": "caf\xe9", "answer": "a"}\n')
    with pytest.raises(DataError, match=r":2: not UTF-8"):
        read_records(p)


def test_task_without_rows(shared_data):
    with pytest.raises(DataError, match="no rows with task_id 42"):
        load_tofu(shared_data / "tofu", "forget01", task_id=42)
    with pytest.raises(DataError, match="unknown split"):
        load_tofu(shared_data / "tofu", "forget02", task_id=1)


class _Tok:
    """A character tokenizer: enough to check masking and padding by hand."""

    eos_token_id, pad_token_id = 1, 0

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([2] if add_special_tokens else []) + [ord(c) for c in text]}


def test_encode_masks_question_and_appends_eos():
    e = encode_qa(_Tok(), "Q:", "ab")
    assert e.input_ids == [2, ord("Q"), ord(":"), ord("a"), ord("b"), 1]
    assert e.labels == [IGNORE_INDEX] * 3 + [ord("a"), ord("b"), 1]
    unmasked = encode_qa(_Tok(), "Q:", "ab", mask_question=False)
    assert unmasked.labels == unmasked.input_ids
    t = encode_qa(_Tok(), "Q:", "abcdef", max_length=5)  # cut at the limit: no EOS (as officially)
    assert t.truncated and t.input_ids == [2, ord("Q"), ord(":"), ord("a"), ord("b")]
    assert t.labels == [IGNORE_INDEX] * 3 + [ord("a"), ord("b")]
    exact = encode_qa(_Tok(), "Q:", "ab", max_length=5)  # fills the limit: no room for the EOS either
    assert not exact.truncated and exact.input_ids[-1] == ord("b")


def test_pad_batch_dynamic():
    a, b = encode_qa(_Tok(), "Q", "a"), encode_qa(_Tok(), "Q", "abc")
    batch = pad_batch([a, b], pad_id=0)
    assert batch["input_ids"].shape == (2, len(b))
    assert batch["attention_mask"][0].tolist() == [1] * len(a) + [0] * (len(b) - len(a))
    assert batch["labels"][0, len(a) :].eq(IGNORE_INDEX).all()
    left = pad_batch([a, b], pad_id=0, side="left")
    assert left["attention_mask"][0].tolist() == [0] * (len(b) - len(a)) + [1] * len(a)


class _Fmt:
    add_special_tokens, answer_prefix = True, ""

    def prompt(self, q):
        return q + "?"


def test_pairing_is_deterministic_per_item():
    forget = [{"question": f"f{i}", "answer": "x"} for i in range(5)]
    retain = [{"question": f"r{i}", "answer": "y"} for i in range(50)]
    parts = ("forget", "forget_idk", "retain", "retain_idk")
    ds1 = UnlearningDataset(forget, retain, _Tok(), _Fmt(), parts, ["no", "nope"])
    ds2 = UnlearningDataset(forget, retain, _Tok(), _Fmt(), parts, ["no", "nope"])
    assert [d["retain"].input_ids for d in ds1] == [d["retain"].input_ids for d in ds2]
    partners = {tuple(ds1[i]["retain"].input_ids) for i in range(5)}
    assert len(partners) > 1  # not always the same partner
    # retain and retain_idk share the question; forget_idk answers with a refusal
    for i in range(5):
        item = ds1[i]
        assert item["retain"].input_ids[:3] == item["retain_idk"].input_ids[:3]
        text = "".join(chr(c) for c in item["forget_idk"].input_ids[1:-1])
        assert text.endswith("no") or text.endswith("nope")


def test_pairing_is_the_official_codes_draw_for_draw():
    """The official TextForgetDatasetQA: torch.manual_seed(idx); retain partner
    (idx + randint(0, len(retain))) % len(retain); refusal randint(0, len(idk)); the mismatched
    answer is the partner's. Expected values derived with the global generator, as it does."""
    forget = [{"question": f"f{i}", "answer": "x"} for i in range(6)]
    retain = [{"question": f"r{i}", "answer": f"a{i}"} for i in range(37)]
    refusals = [f"no{k}" for k in range(11)]
    parts = ("forget_idk", "retain", "forget_mismatch")
    ds = UnlearningDataset(forget, retain, _Tok(), _Fmt(), parts, refusals)
    text = lambda e: "".join(chr(c) for c in e.input_ids[1:-1])  # noqa: E731 (without BOS and EOS)
    for idx in range(6):
        torch.manual_seed(idx)
        partner = (idx + torch.randint(0, len(retain), (1,)).item()) % len(retain)
        refusal = torch.randint(0, len(refusals), (1,)).item()
        assert text(ds[idx]["retain"]) == f"r{partner}?a{partner}"
        assert text(ds[idx]["forget_idk"]) == f"f{idx}?no{refusal}"
        assert text(ds[idx]["forget_mismatch"]) == f"f{idx}?a{partner}"  # LLMU: the partner's answer
    # the refusal (a forget-side sequence) does not depend on the retain set
    other = UnlearningDataset(forget, retain[:5], _Tok(), _Fmt(), parts, refusals)
    assert [text(other[i]["forget_idk"]) for i in range(6)] == [text(ds[i]["forget_idk"]) for i in range(6)]


def test_retain_required(tmp_path):
    with pytest.raises(DataError, match="needs a retain set"):
        UnlearningDataset([{"question": "q", "answer": "a"}], [], _Tok(), _Fmt(), ("forget", "retain"), ["no"])
    rows = load_unlearning_data(None, forget=str(write_jsonl(tmp_path / "f.jsonl", [{"question": "q", "answer": "a"}])))
    assert rows.layout == "files" and rows.retain == []
