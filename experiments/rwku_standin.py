"""A stand-in RWKU snapshot with the benchmark's per-target sizes, to time the pipeline where the hub
cannot be reached (the numbers it gives mean nothing: its people and facts are made up).

Sizes per target, from RWKU's paper (Table 5 and its datasheet): 16 fill-in-the-blank, 14 question and
35 adversarial forget probes, 29 + 28 neighbour probes, 31 forget and 37 retain MIA texts of about 140
words, and the utility set's 171 MMLU (5-shot), 81 BBH (3-shot chain of thought), 50 TruthfulQA, 100
TriviaQA and 50 fluency items; ``--texts`` synthetic training texts of about 300 words.

    python experiments/rwku_standin.py OUT_DIR [--targets 1] [--texts 32]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

TYPES = ("prefix injection", "affirmative suffix", "role playing", "multiple choice", "reverse query",
         "synonym manipulation", "background hint", "incontext learning", "cross lingual")  # fmt: skip
WORDS = ("harbour lighthouse novel river orchestra museum winter bridge railway garden library festival "
         "mountain village painter letter journey island bakery theatre").split()  # fmt: skip


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def text(rng: random.Random, words: int) -> str:
    return " ".join(sentence(rng, 12) for _ in range(words // 12))


def write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def probes(rng: random.Random, who: str, n: int, level: int) -> list[dict]:
    return [
        {
            "subject": who,
            "query": f"{who} {sentence(rng, 8)[:-1]} ___.",
            "answer": rng.choice(WORDS),
            "level": str(level),
        }
        for _ in range(n)
    ]


def choice_row(rng: random.Random) -> dict:
    return {"question": sentence(rng, 10), "choices": [rng.choice(WORDS) for _ in range(4)], "answer": rng.randrange(4)}


def target_rows(rng: random.Random, who: str, n_texts: int) -> dict[str, list[dict]]:
    """One target's rows of every config, at RWKU's per-target sizes."""
    cot = "\n\n".join(f"Q: {sentence(rng, 30)}\nA: {text(rng, 90)} So the answer is (A)." for _ in range(3))
    truthful = {
        "mc1_targets": {"choices": [sentence(rng, 8) for _ in range(5)], "labels": [1, 0, 0, 0, 0]},
        "mc2_targets": {"choices": [sentence(rng, 8) for _ in range(8)], "labels": [1, 1, 1, 0, 0, 0, 0, 0]},
    }
    pair = [text(rng, 120), text(rng, 120)]
    mmlu = [{"task": "miscellaneous", **choice_row(rng), "examples": [choice_row(rng) for _ in range(5)]}]
    rows = {
        "forget_level1": probes(rng, who, 16, 1),
        "forget_level2": probes(rng, who, 14, 2),
        "forget_level3": [dict(r, type=TYPES[i % 9]) for i, r in enumerate(probes(rng, who, 35, 3))],
        "neighbor_level1": probes(rng, who, 29, 1),
        "neighbor_level2": probes(rng, who, 28, 2),
        "mia_forget": [{"text": text(rng, 140)} for _ in range(31)],
        "mia_retain": [{"text": text(rng, 140)} for _ in range(37)],
        "utility_general": mmlu * 171,
        "utility_reason": [{"task": "logic", "cot": cot, "question": sentence(rng, 40), "answer": "(A)"}] * 81,
        "utility_truthfulness": [{"question": sentence(rng, 10), **truthful} for _ in range(50)],
        "utility_factuality": [{"question": sentence(rng, 10), "answers": [rng.choice(WORDS)]} for _ in range(100)],
        "utility_fluency": [{"instruction": sentence(rng, 12)} for _ in range(50)],
        "train_positive_llama3": [{"text": text(rng, 300)} for _ in range(n_texts)],
        "train_pair_llama3": [{"prompt": f"Please write a short biography of {who}.", "response": pair}] * n_texts,
        "train_refusal_llama3": [
            {"instruction": sentence(rng, 10) + "?", "input": "", "output": "I do not know the answer."}
        ]
        * n_texts,
    }
    return {config: [{"subject": who, **r} for r in rs] for config, rs in rows.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--targets", type=int, default=1)
    ap.add_argument("--texts", type=int, default=32, help="training texts per target (about 300 words each)")
    args = ap.parse_args()
    rng, out = random.Random(0), Path(args.out)
    names = [f"Person {i + 1}" for i in range(args.targets)]
    sets: dict[str, list[dict]] = {"forget_target": [{"target": n} for n in names]}
    for who in names:
        for config, rows in target_rows(rng, who, args.texts).items():
            sets.setdefault(config, []).extend(rows)
    for config, rows in sets.items():
        split = "train" if config.startswith(("train_", "forget_target")) else "test"
        write(out / config / f"{split}.json", rows)
    print(out)


if __name__ == "__main__":
    main()
