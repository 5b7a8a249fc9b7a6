"""Why RMU's default steering coefficient does nothing on SmolLM2: the scale of layer ``layer``'s
activations on the forget set, RMU's two terms at the target, and how far each RMU run moved.

    python experiments/smollm2/rmu_scale.py [RUNS] > experiments/results/smollm2/rmu_scale.md

RUNS is the experiment's run folder (default experiments/runs/smollm2; it needs the target model and
the data, so it runs after the ``data`` and ``target`` stages). Each RMU run found in
``new_methods/method-RMU`` and ``rmu_scaled/`` is measured too: its forget term and retain
distance (RMU's own ``activation_distance`` on the answer tokens, the control vector drawn from the
run's seed as training draws it) and the relative change of the weights it trained.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import yaml

from unlearn.data import read_records
from unlearn.encoding import encode_pair, pad_batch, pad_id
from unlearn.losses import activation_distance
from unlearn.methods import FORGET_TERMS, BatchView, hidden_states
from unlearn.methods.terms import _rmu_vector
from unlearn.models import load_model
from unlearn.prompts import detect_prompt_format


def batch(tok, fmt, rows: list[dict]) -> dict:
    return pad_batch([encode_pair(tok, fmt, r["question"], r["answer"], 192) for r in rows], pad_id(tok))


def main(argv: list[str]) -> int:
    torch.set_num_threads(2)
    runs = Path(argv[0] if argv else "experiments/runs/smollm2")
    target = runs / "target" / "model"
    model, tok = load_model(str(target), dtype="float32")
    model.eval()
    fmt = detect_prompt_format(tok, str(target))
    forget = [r for r in read_records(runs / "data" / "forget01.json") if str(r.get("task_id")) == "1"]
    retain = read_records(runs / "data" / "retain90.json")[:40]
    fb, rb = batch(tok, fmt, forget), batch(tok, fmt, retain)
    layer = FORGET_TERMS["RMU"].args["layer"]  # every run here uses RMU's default layer
    with torch.no_grad():
        hf = hidden_states(model, fb["input_ids"], fb["attention_mask"], layer)
        hr = hidden_states(model, rb["input_ids"], rb["attention_mask"], layer)
    x = hf[fb["labels"] != -100].float()
    top = x.abs().mean(0).topk(3)
    share = float(x[:, top.indices].pow(2).sum() / x.pow(2).sum())
    print(f"## Layer {layer} of the target, on forget01 task 1 ({len(forget)} QA, answer tokens)\n")
    print(
        "| per-token L2 norm (mean) | RMS per element | largest element | 3 largest dimensions (mean abs) "
        "| their share of the squared norm |"
    )
    print("|---|---|---|---|---|")
    dims = ", ".join(f"{int(i)}: {float(v):.1f}" for v, i in zip(top.values, top.indices, strict=False))
    print(
        f"| {float(x.norm(dim=-1).mean()):.1f} | {float(x.pow(2).mean().sqrt()):.2f} | {float(x.abs().max()):.1f} "
        f"| {dims} | {share:.2f} |\n"
    )
    zero = float(activation_distance(hf, torch.zeros(hf.shape[-1]), fb["labels"]))
    print(f"RMU's forget term with a zero control vector: {zero:.2f} (the mean squared activation).\n")
    print("## Each RMU run\n")
    print(
        "| run | c | alpha | lr | forget term: target → unlearned | retain distance after (× alpha) "
        "| activations moved (relative L2): forget / retain | down_proj weights changed (relative, per trained layer) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in ("new_methods/method-RMU", "rmu_scaled/method-RMU__lr-5e-05", "rmu_scaled/method-RMU__lr-0.001"):
        folder = runs / name
        if not (folder / "model" / "config.json").is_file():
            continue
        cfg = yaml.safe_load((folder / "config.yaml").read_text())
        args = {k.split(".")[-1]: v for k, v in (cfg.get("method_args") or {}).items()}  # RMU.alpha -> alpha
        assert int(args["layer"]) == layer, f"{name}: RMU at layer {args['layer']}, not {layer}"
        # the control vector as training draws it: from the run's seed
        c = _rmu_vector(BatchView(None, {}, None, int(cfg["seed"])), hf.shape[-1], float(args["steering_coeff"]), hf)
        after, _ = load_model(str(folder / "model"), dtype="float32")
        after.eval()
        with torch.no_grad():
            hf2 = hidden_states(after, fb["input_ids"], fb["attention_mask"], layer)
            hr2 = hidden_states(after, rb["input_ids"], rb["attention_mask"], layer)
        before_f = float(activation_distance(hf, c, fb["labels"]))
        after_f = float(activation_distance(hf2, c, fb["labels"]))
        kept = float(activation_distance(hr2, hr, rb["labels"]))
        moved = float((hf2 - hf)[fb["labels"] != -100].norm() / x.norm())
        y = hr[rb["labels"] != -100]
        moved_r = float((hr2 - hr)[rb["labels"] != -100].norm() / y.norm())
        changes = []
        for i in (int(x) for x in str(args["layers"]).split(",")):
            a, b = (
                model.model.layers[i].mlp.down_proj.weight.detach(),
                after.model.layers[i].mlp.down_proj.weight.detach(),
            )
            changes.append(f"{float((a - b).norm() / a.norm()):.1e}")
        print(
            f"| {name} | {args['steering_coeff']:g} | {args['alpha']:g} | {float(cfg['lr']):g} "
            f"| {before_f:.2f} → {after_f:.2f} "
            f"| {kept:.2e} ({kept * float(args['alpha']):.3f}) | {moved:.3f} / {moved_r:.3f} | {' / '.join(changes)} |"
        )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
