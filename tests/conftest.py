"""Shared fixtures: the shared data folder, a tiny trained-in-process model, small QA files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The suite checks numbers computed on the CPU (float32, one thread): a visible GPU would change
# dtypes ("auto" is bf16 there), devices and float rounding. tests/test_gpu.py runs on the GPU
# when UNLEARN_TEST_GPU=1 (see its docstring); the rest of the suite then still runs on the CPU.
GPU_TESTS = os.environ.get("UNLEARN_TEST_GPU") == "1"
if not GPU_TESTS:
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from intra-op threads, and spinning threads on a shared 2-core machine
# slow every step down by an order of magnitude.
torch.set_num_threads(1)

# Property tests judge values, not speed: a slow first draw (imports, a busy shared machine) is no
# failure. Examples stay derandomised, so a run is reproducible.
settings.register_profile("unlearn", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("unlearn")

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


def teach(model, batch: dict, steps: int = 120, lr: float = 3e-3):
    """Full-batch AdamW on ``batch`` (a padded batch with labels), seeded: a tiny model memorises it."""
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    from unlearn.synthetic import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("synth"), n_authors=20, qa_per_author=3)


def listing(folder) -> list[str]:
    """The names in ``folder``, without the record of what unlearn wrote there (``.unlearn-owned.json``)."""
    from unlearn.outputs import OWNED

    return sorted(p.name for p in Path(folder).iterdir() if p.name != OWNED)


def as_ours(folder) -> Path:
    """Mark a folder a test filled by hand as one unlearn created (as a killed or earlier run leaves it)."""
    from unlearn.io import atomic_write_json
    from unlearn.outputs import OWNED

    Path(folder).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(folder) / OWNED, {"created": True, "names": []})
    return Path(folder)
