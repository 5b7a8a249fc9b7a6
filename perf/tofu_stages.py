"""The TOFU standard's two expensive stages on one model, each way of running them side by side in
one process (docs/performance.md, "TOFU standard against open-unlearning"):

    python perf/tofu_stages.py --data WORK/locuslab/TOFU [--model smollm2-135m] [--stage prefill,decode,scoring]

* ``prefill``: the prompts' pass of generation (every answer cut to 1 new token) over all the
  questions in one batch, its prompts run in groups of 220 (one pass), 128 and 32 rows;
* ``decode``: the whole generation (200 new tokens, open-unlearning's stop and mask) in batches of
  128 and 256 prompts; the answers must be the same;
* ``scoring``: the 1,220 answer, paraphrase and perturbed-answer NLLs of every set, packed
  (:mod:`unlearn.evaluation.packing`) against each question's answers on its prompt's KV cache; the
  largest difference is printed.

WORK is a ``perf/tofu_parity.py --work`` folder (its data snapshot). One thread; run it alone.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from unlearn.evaluation import generation, packing, scoring
from unlearn.evaluation import open_unlearning as ou
from unlearn.models import load_model
from unlearn.presets import smollm2_path
from unlearn.prompts import PromptFormat, tofu_template
from unlearn.protocols.tofu import load_tofu_sets


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a locuslab/TOFU snapshot folder (perf/tofu_parity.py builds one)")
    p.add_argument("--model", default="smollm2-135m", help="smollm2-135m or a model folder")
    p.add_argument("--stage", default="prefill,decode,scoring")
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args()
    torch.set_num_threads(1)
    path = smollm2_path() if args.model == "smollm2-135m" else Path(args.model)
    model, tok = load_model(str(path))
    model.eval()
    template = tofu_template(PromptFormat("chat_template" if tok.chat_template else "plain", tokenizer=tok))
    sets = load_tofu_sets(Path(args.data), "forget01")
    questions = [r["question"] for name in ("forget", "retain", "ra", "wf") for r in sets.of(name)]
    stop = ou.generation_stop(model)
    stages = args.stage.split(",")

    def generate(rows: int, new: int):
        return generation.generate(
            model, tok, template, questions, batch_size=rows, max_new_tokens=new, stop=stop, mask_pad=True
        )

    if "prefill" in stages:
        for rows in (len(questions), 128, 32):
            generation.PREFILL_ROWS = rows
            _, seconds = _timed(lambda: generate(256, 1))
            print(f"prefill: {len(questions)} prompts in groups of {rows} rows: {seconds:.1f} s", flush=True)
        generation.PREFILL_ROWS = 32
    if "decode" in stages:
        answers = {}
        for rows in (128, 256):
            answers[rows], seconds = _timed(lambda rows=rows: generate(rows, ou.MAX_NEW_TOKENS))
            print(f"decode: {len(questions)} answers, {rows} prompts a batch: {seconds:.1f} s", flush=True)
        print("decode: the same answers" if answers[128] == answers[256] else "decode: ANSWERS DIFFER")
    if "scoring" in stages:
        pairs = ou.pairs_of(sets)
        seqs = [template.encode_pair(tok, q.question, q.text, ou.MAX_LENGTH) for q in pairs]
        want = [i for i, q in enumerate(pairs) if q.kind == "answer" and q.set in ("forget", "holdout")]

        def score():
            return scoring.score_sequences(
                model, tok, seqs, args.batch_size, mask_pad=True, stats_for=want, share_prompts=True
            )

        (packed, _), seconds = _timed(score)
        rows = packing.pack_rows(seqs)
        print(f"scoring: {len(seqs)} sequences packed in {len(rows)} rows: {seconds:.1f} s", flush=True)
        real = packing.packable
        packing.packable = lambda model, longest: False
        (cached, _), seconds = _timed(score)
        packing.packable = real
        print(f"scoring: the same on each prompt's KV cache: {seconds:.1f} s", flush=True)
        print(f"scoring: largest NLL difference {np.abs(packed - cached).max():.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
