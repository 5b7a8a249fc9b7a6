"""The floor for ``unlearn run --method GA+GD``: a bare PyTorch loop doing the same optimisation.

Same model folder, same data (one TOFU-layout task; item ``i`` paired with the retain example
that ``unlearn`` pairs it with), same epoch order, batch size, AdamW, linear warm-up schedule,
dynamic padding, and the model saved at the end. No progress bar, no log file, no checks.
It imports nothing from ``unlearn`` and prints its per-step losses as one JSON line, so the
benchmark can check that both processes did the same optimisation.

    python perf/bare_loop.py MODEL_DIR DATA_DIR OUT_DIR --split forget05 --task 1
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def encode(tok, question: str, answer: str) -> tuple[list[int], list[int]]:
    prompt = tok("Question: " + question + "\nAnswer: ")["input_ids"]
    ans = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return prompt + ans, [-100] * len(prompt) + ans


def pad(seqs, pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in seqs)
    ids = torch.full((len(seqs), width), pad_id)
    labels = torch.full((len(seqs), width), -100)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, (i, lab) in enumerate(seqs):
        ids[r, : len(i)], labels[r, : len(lab)], mask[r, : len(i)] = torch.tensor(i), torch.tensor(lab), 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--split", default="forget05")
    ap.add_argument("--retain-file", default="retain50")
    ap.add_argument("--task", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=1001)
    ap.add_argument("--n-refusals", type=int, required=True, help="size of the refusal list (drawn first)")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    data = Path(args.data)
    split = rows(data / f"{args.split}.json")
    forget = [r for r in split if int(r["task_id"]) == args.task]
    retain = rows(data / f"{args.retain_file}.json") + [r for r in split if int(r["task_id"]) != args.task]
    items = []
    for i, r in enumerate(forget):
        rng = random.Random(f"{args.seed}:{i}")
        rng.randrange(args.n_refusals)  # the refusal, unused by GA+GD
        partner = retain[rng.randrange(len(retain))]
        items.append((encode(tok, r["question"], r["answer"]), encode(tok, partner["question"], partner["answer"])))

    steps_per_epoch = math.ceil(len(items) / args.batch_size)
    total = steps_per_epoch * args.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = steps_per_epoch if steps_per_epoch > 1 else 0  # linear warm-up, then linear decay to 0
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: s / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup))
    )
    model.train()
    losses = []
    for epoch in range(args.epochs):
        g = torch.Generator().manual_seed(random.Random(f"{args.seed}:{epoch}").getrandbits(63))
        order = torch.randperm(len(items), generator=g).tolist()
        for start in range(0, len(order), args.batch_size):
            idx = order[start : start + args.batch_size]
            f = pad([items[i][0] for i in idx], tok.pad_token_id)
            r = pad([items[i][1] for i in idx], tok.pad_token_id)
            loss = -model(**f).loss + model(**r).loss  # GA on the forget answers + GD on the retain answers
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            losses.append(loss.item())
    model.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    print(json.dumps({"losses": losses}))


if __name__ == "__main__":
    main()
