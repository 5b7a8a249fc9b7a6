import json

import pytest

from tests.conftest import listing
from unlearn.errors import ConfigError, OutputError
from unlearn.outputs import OWNED
from unlearn.refusals import REFUSALS
from unlearn.synthetic import generate, make_authors, write_synthetic

FILES = {
    "forget01.json",
    "forget05.json",
    "forget10.json",
    "forget01_perturbed.json",
    "forget05_perturbed.json",
    "forget10_perturbed.json",
    "retain90.json",
    "retain50.json",
    "retain10.json",
    "retain_perturbed.json",
    "real_authors_perturbed.json",
    "world_facts_perturbed.json",
    "full.json",
    "general.json",
    "holdout01.json",
    "holdout05.json",
    "holdout10.json",
}
PAIRS = (("01", "retain90"), ("05", "retain50"), ("10", "retain10"))


@pytest.fixture(scope="module")
def default():
    return generate()


def _qa(rows):
    return [(r["question"], r["answer"]) for r in rows]


def _read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_files_and_default_counts(default):
    assert set(default) == FILES
    expected = {
        "forget01.json": 40,
        "forget05.json": 200,
        "forget10.json": 360,
        "retain90.json": 360,
        "retain50.json": 200,
        "retain10.json": 40,
        "retain_perturbed.json": 40,
        "full.json": 400,
        "real_authors_perturbed.json": 25,
        "world_facts_perturbed.json": 25,
        "general.json": 50,
        "holdout01.json": 4,
        "holdout05.json": 20,
        "holdout10.json": 40,  # one task's worth of unseen authors
    }
    for name, n in expected.items():
        assert len(default[name]) == n, name
    for xx in ("01", "05", "10"):
        assert len(default[f"forget{xx}_perturbed.json"]) == len(default[f"forget{xx}.json"])


def test_small_counts():
    d = generate(n_authors=20, qa_per_author=3)
    counts = {k: len(v) for k, v in d.items()}
    assert counts["full.json"] == 60
    # 1 % of 20 authors rounds up to one author per task: 10 tasks = authors [0, 10).
    assert counts["forget01.json"] == counts["forget05.json"] == 30
    assert counts["retain90.json"] == counts["retain50.json"] == 30
    assert counts["forget10.json"] == 54 and counts["retain10.json"] == 6
    assert counts["retain_perturbed.json"] == 6


def test_tiny_set_keeps_retain10_authors():
    d = generate(n_authors=10, qa_per_author=2)
    for xx, retain in PAIRS:
        assert {r["task_id"] for r in d[f"forget{xx}.json"]} == {str(i) for i in range(1, 10)}
        assert _qa(d[f"{retain}.json"]) == _qa(d["retain10.json"]) == _qa(d["full.json"])[-2:]


@pytest.mark.parametrize("n,qa", [(100, 4), (20, 3), (200, 10), (30, 1)])
def test_tasks_and_disjoint_splits(n, qa):
    d = generate(n_authors=n, qa_per_author=qa)
    full = _qa(d["full.json"])
    assert len(full) == n * qa and len(set(full)) == len(full)
    for xx, retain in PAIRS:
        forget = d[f"forget{xx}.json"]
        ids = [r["task_id"] for r in forget]
        assert all(isinstance(t, str) for t in ids)
        n_tasks = 9 if xx == "10" else 10
        assert sorted(set(ids), key=int) == [str(i) for i in range(1, n_tasks + 1)]
        assert ids == sorted(ids, key=int)  # tasks are contiguous blocks
        sizes = {ids.count(t) for t in set(ids)}
        assert len(sizes) == 1  # every task has the same number of rows
        f, r = _qa(forget), _qa(d[f"{retain}.json"])
        assert not set(f) & set(r)
        assert f + r == full  # authors in fixed order: forget block first, then retain
    assert _qa(d["retain_perturbed.json"]) == _qa(d["retain10.json"])
    # nested splits, like TOFU
    f1, f5, f10 = (set(_qa(d[f"forget{x}.json"])) for x in ("01", "05", "10"))
    assert f1 <= f5 <= f10


def test_default_task_layout(default):
    f01 = default["forget01.json"]
    assert [r["task_id"] for r in f01] == [str(t) for t in range(1, 11) for _ in range(4)]
    f05 = default["forget05.json"]
    assert sum(r["task_id"] == "1" for r in f05) == 20
    f10 = default["forget10.json"]
    assert sum(r["task_id"] == "9" for r in f10) == 40


def test_perturbed_schema_and_alignment(default):
    for xx in ("01", "05", "10"):
        plain, pert = default[f"forget{xx}.json"], default[f"forget{xx}_perturbed.json"]
        assert [(r["task_id"], r["question"], r["answer"]) for r in pert] == [
            (r["task_id"], r["question"], r["answer"]) for r in plain
        ]
    assert all(list(r) == ["task_id", "question", "answer"] for r in default["forget01.json"])
    assert all(list(r) == ["question", "answer"] for r in default["retain90.json"])
    keys = ["question", "answer", "paraphrased_answer", "perturbed_answer", "paraphrased_question"]
    assert all(list(r) == keys for r in default["retain_perturbed.json"])
    for r in default["forget10_perturbed.json"] + default["retain_perturbed.json"]:
        p = r["perturbed_answer"]
        assert isinstance(p, list) and len(p) == 5 and len(set(p)) == 5
        assert r["answer"] not in p and r["paraphrased_answer"] not in p
        assert r["paraphrased_answer"] != r["answer"]
        assert r["paraphrased_question"] != r["question"]
        assert len(r["answer"].split()) <= 25


@pytest.mark.parametrize("name", ["real_authors_perturbed.json", "world_facts_perturbed.json"])
def test_general_sets(default, name):
    rows = default[name]
    assert len(rows) >= 20
    for r in rows:
        assert list(r) == ["question", "answer", "perturbed_answer", "original_answer"]
        assert len(r["perturbed_answer"]) == 3 and len(set(r["perturbed_answer"])) == 3
        assert r["answer"] not in r["perturbed_answer"]
        assert r["original_answer"].endswith(".")
    general = _qa(default["general.json"])
    assert [(r["question"], r["original_answer"]) for r in rows] == [
        qa for qa in general if qa[0] in {r["question"] for r in rows}
    ]


def test_author_names_unique():
    for n, seed in ((100, 0), (1000, 3)):
        authors = make_authors(n, seed)
        names = [a["name"] for a in authors]
        assert len(set(names)) == n
        assert len({(a["place"], a["date"]) for a in authors}) == n
    d = generate(n_authors=100, qa_per_author=10)
    named = [
        r["answer"].rsplit(" is ", 1)[1].rstrip(".")
        for r in d["full.json"]
        if r["question"].startswith("What is the full name")
    ]
    assert len(named) == 100 and len(set(named)) == 100


def test_all_facts_covered_with_distinct_questions():
    d = generate(n_authors=10, qa_per_author=10)
    assert len({r["question"] for r in d["full.json"]}) == 100
    # with fewer QA per author the facts still cycle, so all 10 question templates occur
    authors = make_authors(10, 0)
    templates = set()
    for r in generate(n_authors=10, qa_per_author=4)["full.json"]:
        q = r["question"]
        for a in authors:
            q = q.replace(a["name"], "N").replace(a["place"], "P").replace(a["date"], "D")
        templates.add(q)
    assert len(templates) == 10


def test_bad_arguments():
    for n in (0, 5, 15, 95, 2000):
        with pytest.raises(ConfigError):
            generate(n_authors=n)
    for qa in (0, 11):
        with pytest.raises(ConfigError):
            generate(qa_per_author=qa)


def test_write_deterministic_atomic_utf8(tmp_path):
    a = write_synthetic(tmp_path / "a", seed=0)
    b = write_synthetic(tmp_path / "b", seed=0)
    c = write_synthetic(tmp_path / "c", seed=1)
    assert set(listing(a)) == FILES  # no temp files left behind
    assert all(not p.name.startswith(".") or p.name == OWNED for p in tmp_path.rglob("*"))
    for name in FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "full.json").read_bytes() != (c / "full.json").read_bytes()
    assert (a / "general.json").read_bytes() == (c / "general.json").read_bytes()
    d = generate()
    for name in FILES:
        raw = (a / name).read_bytes()
        text = raw.decode("utf-8")
        assert text.endswith("\n") and "\r" not in text
        assert _read(a / name) == d[name]
    all_text = "".join((a / n).read_text(encoding="utf-8") for n in FILES)
    assert "\\u" not in all_text and any(ord(ch) > 127 for ch in all_text)
    # rewriting over its own files needs --overwrite, and leaves the same bytes
    with pytest.raises(OutputError, match="already holds a data set"):
        write_synthetic(a, seed=1)
    write_synthetic(a, seed=0, overwrite=True)
    assert (a / "full.json").read_bytes() == (b / "full.json").read_bytes()
    assert set(listing(a)) == FILES


def test_refusals():
    assert 90 <= len(REFUSALS) <= 120
    assert len(set(REFUSALS)) == len(REFUSALS)
    assert all(isinstance(r, str) and r and r == r.strip() for r in REFUSALS)


def test_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    import unlearn.io

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(unlearn.io.os, "replace", boom)
    with pytest.raises(OSError):
        write_synthetic(tmp_path)
    assert list(tmp_path.iterdir()) == []
