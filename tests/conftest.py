"""Shared fixtures: the shared data folder, a tiny trained-in-process model, small QA files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from intra-op threads, and spinning threads on a shared 2-core machine
# slow every step down by an order of magnitude.
torch.set_num_threads(1)

SHARED_DATA = Path(os.environ.get("UNLEARN_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def one_thread():
    """For tests that compare with subprocesses run under OMP_NUM_THREADS=1: float sums must be
    reduced in the same order. The whole suite already runs on one thread (set above)."""
    assert torch.get_num_threads() == 1
    yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "tofu").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set UNLEARN_SHARED_DATA)")
    return SHARED_DATA


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    from unlearn.synthetic import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("synth"), n_authors=20, qa_per_author=3)
