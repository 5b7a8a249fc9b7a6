"""The measurement scripts' own arithmetic (perf/; nothing here is timed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

PERF = Path(__file__).resolve().parents[1] / "perf"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, PERF / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prompt_lookup_replay_counts_steps_by_hand():
    """Context [1 2 3], answer [1 2 3 1 2 3], 3-gram lookup drafting 3: step 1 finds no earlier n-gram
    (one token: 1); step 2 finds [1] at position 0 and drafts [2 3 1], all accepted, plus one (2);
    step 3 finds [3 1 2] at 2, drafts [3 1 2], the answer's last token 3 accepted: 3 steps."""
    replay = _script("prompt_lookup_replay")
    assert replay.steps_for([1, 2, 3], [1, 2, 3, 1, 2, 3], ngram=3, draft=3) == 3
    assert replay.steps_for([1], [2, 3, 4], ngram=3, draft=3) == 3  # nothing repeats: one token a step
    # no earlier 8: one token (5); then the earlier 5 drafts 6 7 8, all accepted
    assert replay.steps_for([5, 6, 7, 8], [5, 6, 7, 8], ngram=1, draft=8) == 2
