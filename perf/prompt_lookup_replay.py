"""How many tokens prompt-lookup speculative decoding would accept per step, replayed on the greedy
answers of a TOFU-standard evaluation (docs/performance.md, "TOFU standard against open-unlearning").

    python perf/prompt_lookup_replay.py WORK/ours/TOFU_EVAL.json [--model smollm2-135m] [--ngram 3]

At each step the draft is the ``k`` tokens that followed the latest earlier occurrence of the last
``--ngram`` tokens (failing that, of fewer, down to one) in the prompt and the answer so far; the
step keeps the drafted tokens as long as they equal the greedy answer's, plus the one token the
checking pass computes anyway. Checking ``k`` drafted tokens costs a pass over ``k + 1`` tokens:
where a step's time is its arithmetic (a CPU), drafting pays only when the tokens accepted per step
exceed what the longer pass costs. The texts are tokenized again from ``TOFU_EVAL.json``
(``input``: the prompt as decoded, ``generation``: the answer).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transformers import AutoTokenizer

from unlearn.presets import smollm2_path


def steps_for(context: list[int], answer: list[int], ngram: int, draft: int) -> int:
    """Decoding steps that produce ``answer`` after ``context`` with prompt-lookup drafts."""
    seq = list(context)
    done = steps = 0
    while done < len(answer):
        proposal: list[int] = []
        for n in range(ngram, 0, -1):  # the longest n-gram that occurred before, as transformers does
            key = seq[-n:]
            for start in range(len(seq) - n - 1, -1, -1):
                if seq[start : start + n] == key:
                    proposal = seq[start + n : start + n + draft]
                    break
            if proposal:
                break
        accepted = 0
        left = answer[done:]
        while accepted < min(len(proposal), len(left)) and proposal[accepted] == left[accepted]:
            accepted += 1
        advance = min(accepted + 1, len(answer) - done)
        seq.extend(answer[done : done + advance])
        done += advance
        steps += 1
    return steps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("eval_json", type=Path, help="TOFU_EVAL.json of an `unlearn eval --benchmark tofu` run")
    p.add_argument("--model", default="smollm2-135m", help="whose tokenizer")
    p.add_argument("--ngram", type=int, default=3)
    args = p.parse_args()
    tok = AutoTokenizer.from_pretrained(smollm2_path() if args.model == "smollm2-135m" else args.model)
    results = json.loads(args.eval_json.read_text())
    pairs = []
    for key, value in results.items():
        if key.endswith("_ROUGE"):
            for item in value["value_by_index"].values():
                prompt = tok(item["input"], add_special_tokens=False)["input_ids"]
                answer = tok(item["generation"], add_special_tokens=False)["input_ids"]
                if answer:
                    pairs.append((prompt, answer))
    tokens = sum(len(a) for _, a in pairs)
    print(f"{len(pairs)} greedy answers, {tokens} tokens")
    for draft in range(3, 9):
        steps = sum(steps_for(c, a, args.ngram, draft) for c, a in pairs)
        print(f"{args.ngram}-gram lookup drafting {draft} tokens: {tokens / steps:.2f} tokens accepted per step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
