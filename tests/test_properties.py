"""Property tests of the data loaders and the encoding, on arbitrary input (hypothesis).

The loaders either return rows or raise DataError (one line naming the file and line), never
another exception; valid rows round-trip. Encoding keeps labels aligned with ids, masks exactly
the prompt, ends every sequence with one EOS and respects ``max_length``. (The metrics'
properties are in test_metrics.py.)
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unlearn.data import DataError, read_records
from unlearn.encoding import IGNORE_INDEX, encode_prompt, encode_qa, pad_batch

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Objects that look like records: the two fields present or not, of any type.
record_like = st.dictionaries(st.sampled_from(["question", "answer", "task_id", "x"]), json_values, max_size=4)


def _write(data: bytes) -> Path:
    fh = tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False)
    with fh:
        fh.write(data)
    return Path(fh.name)


def _read(data: bytes):
    path = _write(data)
    try:
        return read_records(path)
    finally:
        path.unlink()


@SETTINGS
@given(st.lists(record_like | json_values, max_size=6), st.booleans())
def test_any_json_gives_rows_or_a_data_error(items, as_array):
    data = json.dumps(items) if as_array else "\n".join(json.dumps(i) for i in items)
    try:
        rows = _read(data.encode("utf-8"))
    except DataError as e:
        assert "\n" not in str(e) and ".jsonl" in str(e)
        return
    assert rows and all(isinstance(r["question"], str) and isinstance(r["answer"], str) for r in rows)


@SETTINGS
@given(st.binary(max_size=200))
def test_any_bytes_give_rows_or_a_data_error(data):
    try:
        rows = _read(data)
    except DataError as e:
        assert "\n" not in str(e)
        return
    assert all(isinstance(r["question"], str) and isinstance(r["answer"], str) for r in rows)


@SETTINGS
@given(st.text(max_size=60))
def test_any_text_gives_rows_or_a_data_error(text):
    try:
        _read(text.encode("utf-8"))
    except DataError:
        pass


def test_deeply_nested_json_is_a_data_error():
    with pytest.raises(DataError):
        _read(b"[" * 100_000)


valid_rows = st.lists(
    st.fixed_dictionaries(
        {"question": st.text(max_size=40), "answer": st.text(max_size=40)},
        optional={"task_id": st.integers(1, 10), "extra": json_values},
    ),
    min_size=1,
    max_size=6,
)


@SETTINGS
@given(valid_rows, st.lists(st.booleans(), min_size=6, max_size=6), st.booleans())
def test_valid_rows_round_trip_with_their_line_numbers(rows, blank_before, as_array):
    if as_array:
        data = json.dumps(rows, ensure_ascii=False)
    else:
        lines = []
        for r, blank in zip(rows, blank_before, strict=False):
            if blank:
                lines.append("   ")
            lines.append(json.dumps(r, ensure_ascii=False))
        data = "\n".join(lines) + "\n"
    path = _write(data.encode("utf-8"))
    try:
        got = read_records(path)
    finally:
        path.unlink()
    assert [{k: v for k, v in g.items() if k != "_source"} for g in got] == rows
    if as_array:
        assert [g["_source"] for g in got] == [f"{path}: item {i}" for i in range(1, len(rows) + 1)]
    else:
        numbers = [int(g["_source"].rsplit(":", 1)[1]) for g in got]
        assert numbers == [i + 1 for i, line in enumerate(data.split("\n")) if line.strip()]


# ------------------------------------------------------------------------------------ encoding


@pytest.fixture(scope="module")
def tok():
    from unlearn.models import build_tiny_tokenizer

    return build_tiny_tokenizer(
        ["Who wrote the book? The author wrote it.", "Question: Answer: café ÆØÅ"], vocab_size=300
    )


texts = st.text(max_size=80)


@SETTINGS
@given(question=texts, answer=texts, mask=st.booleans(), max_length=st.none() | st.integers(1, 40))
def test_encode_qa_invariants(tok, question, answer, mask, max_length):
    """The official encoding: prompt + answer as one string, one EOS; a sequence cut at max_length
    keeps no EOS; the encoded prompt's length is masked."""
    prompt = f"Question: {question}\nAnswer: "
    e = encode_qa(tok, prompt, answer, max_length, mask_question=mask)
    eos = tok.eos_token_id
    joint = list(tok(prompt + answer)["input_ids"])
    assert len(e.input_ids) == len(e.labels) >= 1
    assert e.truncated == (max_length is not None and len(joint) > max_length)
    if max_length is None or len(joint) < max_length:
        assert e.input_ids == joint + [eos] and e.labels[-1] == eos  # the answer ends with one EOS
    else:
        assert e.input_ids == joint[:max_length]  # cut at the limit: no EOS
    n_prompt = min(len(encode_prompt(tok, prompt)), len(e.input_ids))
    if mask:
        assert e.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt  # a masked prefix, then the answer
        assert e.labels[n_prompt:] == e.input_ids[n_prompt:]
    else:
        assert e.labels == e.input_ids


@SETTINGS
@given(st.lists(st.tuples(texts, texts), min_size=1, max_size=5), st.sampled_from(["right", "left"]))
def test_pad_batch_pads_to_the_longest_only(tok, pairs, side):
    seqs = [encode_qa(tok, f"Question: {q}\nAnswer: ", a, 64) for q, a in pairs]
    pad = tok.pad_token_id
    b = pad_batch(seqs, pad, side)
    width = max(len(s) for s in seqs)
    assert b["input_ids"].shape == b["labels"].shape == b["attention_mask"].shape == (len(seqs), width)
    for row, s in enumerate(seqs):
        n = len(s)
        real = slice(0, n) if side == "right" else slice(width - n, width)
        assert b["attention_mask"][row].sum().item() == n
        assert b["input_ids"][row, real].tolist() == s.input_ids
        assert b["labels"][row, real].tolist() == s.labels
        pad_part = slice(n, width) if side == "right" else slice(0, width - n)
        assert set(b["labels"][row, pad_part].tolist()) <= {IGNORE_INDEX}
        assert set(b["input_ids"][row, pad_part].tolist()) <= {pad}
