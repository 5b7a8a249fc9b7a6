"""Parity with open-unlearning's TOFU evaluator: the same model and data through both toolkits,
every shared metric side by side, the largest difference, and both wall times.

    python perf/tofu_parity.py --ou PATH/TO/open-unlearning --ou-python PATH/TO/venv/bin/python \\
        --model tiny            # or smollm2-135m, or a model folder

open-unlearning is an external reference: a local checkout given by path, run with its own Python
(a virtual environment with its requirements; see docs/parity.md "TOFU standard" for the offline
setup). Nothing of it is vendored or installed by ``make``. The data is built offline from the
closer-look release (``../shared/data`` or ``--data``): ``forget01_perturbed`` = task 1 of
``forget01_perturbed.json``, ``holdout01`` = task 2, and the three utility sets as they are; the same
JSON-lines files serve both toolkits (open-unlearning reads them as a local ``locuslab/TOFU``
dataset folder).

Both evaluations run in subprocesses with the same thread count; the wall times include loading.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("forget01_perturbed", "holdout01", "retain_perturbed", "real_authors_perturbed", "world_facts_perturbed")
OU_METRICS = (
    "forget_Truth_Ratio",
    "forget_quality",
    "forget_Q_A_Prob",
    "forget_Q_A_ROUGE",
    "model_utility",
    "privleak",
    "extraction_strength",
    "exact_memorization",
)


def build_snapshot(shared: Path, dest: Path, retain_rows: int | None = None) -> Path:
    """``dest/locuslab/TOFU``: one JSON-lines file per config and the README that lists them
    (``retain_rows``: only the first rows of each utility set, for a quicker run)."""
    src = shared / "tofu"
    folder = dest / "locuslab" / "TOFU"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(x) for x in (src / "forget01_perturbed.json").read_text().splitlines() if x.strip()]

    def task(t):
        return [{k: v for k, v in r.items() if k != "task_id"} for r in rows if str(r["task_id"]) == t]

    def write(name, items):
        (folder / f"{name}.json").write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")

    write("forget01_perturbed", task("1"))
    write("holdout01", task("2"))
    for name in CONFIGS[2:]:
        write(name, [json.loads(x) for x in (src / f"{name}.json").read_text().splitlines() if x.strip()][:retain_rows])
    header = ["---", "configs:"]
    for name in CONFIGS:
        header += [f"- config_name: {name}", "  data_files:", "  - split: train", f"    path: {name}.json"]
    (folder / "README.md").write_text("\n".join(header + ["---", ""]), encoding="utf-8")
    return folder


def tiny_model(snapshot: Path, dest: Path) -> Path:
    """A tiny Llama taught the forget set a little (so that the numbers are not those of noise)."""
    import torch

    from unlearn.encoding import pad_batch
    from unlearn.models import build_tiny_model, build_tiny_tokenizer, save_model
    from unlearn.prompts import PromptFormat, tofu_template

    texts = []
    for name in CONFIGS:
        for line in (snapshot / f"{name}.json").read_text().splitlines():
            r = json.loads(line)
            texts += [v for v in r.values() if isinstance(v, str)] + list(r.get("perturbed_answer", []))
    tok = build_tiny_tokenizer(texts + ["Question: Answer:"] * 3, vocab_size=1024)
    model = build_tiny_model(tok, hidden_size=64, num_layers=2, seed=0)
    template = tofu_template(PromptFormat("plain", tokenizer=tok))
    forget = [json.loads(x) for x in (snapshot / "forget01_perturbed.json").read_text().splitlines()]
    batch = pad_batch([template.encode_pair(tok, r["question"], r["answer"], 512) for r in forget], tok.pad_token_id)
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_model(model.eval(), tok, dest)
    return dest


def ou_copy(model: Path, dest: Path) -> Path:
    """The model folder as transformers 4.45 (open-unlearning's pin) reads it: the tokenizer class
    named ``PreTrainedTokenizerFast``, the chat template inlined and the RoPE base as ``rope_theta``
    (transformers 5 writes ``rope_parameters``, which 4.45 ignores: it would fall back to 10,000);
    weights unchanged."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(model, dest)
    cfg_path = dest / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    jinja = dest / "chat_template.jinja"
    if jinja.is_file():
        cfg["chat_template"] = jinja.read_text()
    cfg_path.write_text(json.dumps(cfg, indent=1))
    model_cfg_path = dest / "config.json"  # transformers 5 writes RoPE settings as rope_parameters
    model_cfg = json.loads(model_cfg_path.read_text())
    rope = model_cfg.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" not in model_cfg:
        model_cfg["rope_theta"] = rope.get("rope_theta", 10000.0)
        if rope.get("rope_type", "default") != "default":
            model_cfg["rope_scaling"] = rope
    model_cfg_path.write_text(json.dumps(model_cfg, indent=1))
    return dest


def _ou_eval_config(work: Path) -> Path:
    """An extra config folder: open-unlearning's ``eval/tofu.yaml`` with exact_memorization added."""
    folder = work / "ou-configs"
    (folder / "eval").mkdir(parents=True, exist_ok=True)
    lines = ["# @package eval.tofu", "defaults:", "  - tofu_metrics:"] + [f"    - {m}" for m in OU_METRICS]
    lines += [
        "handler: TOFUEvaluator",
        "output_dir: ${paths.output_dir}",
        "metrics: {}",
        "overwrite: false",
        "forget_split: forget10",
        "holdout_split: holdout10",
        "retain_logs_path: null",
        'question_key: "question"',
        "batch_size: 32",
        "",
    ]
    (folder / "eval" / "tofu_parity.yaml").write_text("\n".join(lines))
    return folder


def run_ou(args, model: Path, work: Path, chat: bool) -> tuple[Path, float]:
    name = "parity"
    out = work / "saves" / "eval" / name
    if out.exists():
        shutil.rmtree(out)
    overrides = [
        "--config-name=eval.yaml",
        f"--config-dir={_ou_eval_config(work)}",
        "model=phi-1_5",
        f"model.model_args.pretrained_model_name_or_path={model}",
        f"model.tokenizer_args.pretrained_model_name_or_path={model}",
        "model.model_args.device_map=cpu",
        "eval.tofu.forget_split=forget01",
        "eval.tofu.holdout_split=holdout01",
        f"eval.tofu.batch_size={args.batch_size}",
        f"task_name={name}",
        "eval=tofu_parity",
    ]
    if chat:  # open-unlearning's configs of chat models: the chat template with this system prompt
        overrides += [
            "model.template_args.apply_chat_template=true",
            "+model.template_args.system_prompt='You are a helpful assistant.'",
            "+model.template_args.date_string='10 Apr 2025'",
        ]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(work / "hf_home"),
        "OMP_NUM_THREADS": str(args.threads),
        "CUDA_VISIBLE_DEVICES": "",
    }
    shutil.rmtree(work / "hf_home", ignore_errors=True)  # the datasets cache key ignores where files came from
    start = time.perf_counter()
    subprocess.run(
        [args.ou_python, str(Path(args.ou) / "src" / "eval.py"), *overrides],
        cwd=work,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL if not args.verbose else None,
    )
    return out, time.perf_counter() - start


def run_ours(args, model: Path, snapshot: Path, work: Path) -> tuple[Path, float]:
    out = work / "ours"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads), "CUDA_VISIBLE_DEVICES": ""}
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "unlearn",
            "eval",
            "--benchmark",
            "tofu",
            "--model",
            str(model),
            "--data",
            str(snapshot),
            "--split",
            "forget01",
            "--out",
            str(out),
            "--overwrite",
            "--eval-batch-size",
            str(args.batch_size),
        ],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL if not args.verbose else None,
    )
    return out, time.perf_counter() - start


def compare(ours: dict, theirs: dict) -> list[tuple[str, float, float, float, str]]:
    """``(metric, ours, open-unlearning's, |difference|, note)`` for every metric both computed."""
    rows = []
    for key in sorted(set(ours) & set(theirs)):
        a, b = ours[key].get("agg_value"), theirs[key].get("agg_value")
        if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
            continue
        note = ""
        if key.endswith("_ROUGE"):
            mine, other = ours[key]["value_by_index"], theirs[key]["value_by_index"]
            same = [i for i in other if mine.get(i, {}).get("generation") == other[i]["generation"]]
            worst = max((abs(mine[i]["rougeL_recall"] - other[i]["rougeL_recall"]) for i in same), default=0.0)
            note = f"generations equal on {len(same)}/{len(other)} items (ROUGE diff there {worst:.1e})"
        elif key.endswith("_Prob") and isinstance(
            next(iter(theirs[key]["value_by_index"].values())).get("avg_loss"), (float, list)
        ):
            import numpy as np

            mine, other = ours[key]["value_by_index"], theirs[key]["value_by_index"]
            worst = max(float(np.max(np.abs(np.subtract(mine[i]["avg_loss"], other[i]["avg_loss"])))) for i in other)
            note = f"largest per-item NLL difference {worst:.1e}"
        rows.append((key, float(a), float(b), abs(float(a) - float(b)), note))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ou", required=True, help="a local checkout of locuslab/open-unlearning")
    p.add_argument("--ou-python", required=True, help="the Python of an environment with its requirements")
    p.add_argument("--model", default="tiny", help="tiny (built here), smollm2-135m, or a model folder")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="the closer-look release's data folder")
    p.add_argument("--work", default=str(ROOT / "perf" / "out" / "tofu_parity"))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--rows",
        type=int,
        default=None,
        help="only the first ROWS of retain_perturbed, real authors "
        "and world facts (both toolkits read the same cut files; default: all)",
    )
    p.add_argument(
        "--repeat", type=int, default=1, help="run each toolkit this many times (in turn) and keep the fastest"
    )
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    snapshot = build_snapshot(Path(args.data), work, args.rows)
    if args.model == "tiny":
        model = tiny_model(snapshot, work / "tiny-model")
    elif args.model == "smollm2-135m":
        from unlearn.presets import smollm2_path

        model = smollm2_path()
    else:
        model = Path(args.model)
    chat = (model / "chat_template.jinja").is_file() or "chat_template" in json.loads(
        (model / "tokenizer_config.json").read_text()
    )
    ou_model = ou_copy(model, work / "ou-model")
    ou_times, our_times = [], []
    for _ in range(args.repeat):  # the two toolkits in turn, so that both see the same spells of machine speed
        ou_out, seconds = run_ou(args, ou_model, work, chat)
        ou_times.append(seconds)
        our_out, seconds = run_ours(args, model, snapshot, work)
        our_times.append(seconds)
        print(f"pair {len(our_times)}: open-unlearning {ou_times[-1]:.1f} s, unlearn {seconds:.1f} s", flush=True)
        (work / "parity_runs.json").write_text(json.dumps({"ou_runs": ou_times, "unlearn_runs": our_times}))
    ou_time, our_time = min(ou_times), min(our_times)
    theirs = json.loads((ou_out / "TOFU_EVAL.json").read_text())
    ours = json.loads((our_out / "TOFU_EVAL.json").read_text())
    rows = compare(ours, theirs)
    width = max(len(r[0]) for r in rows)
    print(f"model: {args.model}   data: {snapshot}" + (f" (utility sets cut to {args.rows} rows)" if args.rows else ""))
    print(f"{'metric':<{width}}  {'unlearn':>12}  {'open-unlearning':>15}  {'|diff|':>9}  note")
    for key, a, b, d, note in rows:
        print(f"{key:<{width}}  {a:>12.6g}  {b:>15.6g}  {d:>9.2e}  {note}")
    worst = max(rows, key=lambda r: r[3])
    print(f"largest difference: {worst[3]:.2e} ({worst[0]})")
    if args.repeat > 1:
        ou_runs, our_runs = (", ".join(f"{t:.1f}" for t in times) for times in (ou_times, our_times))
        print(f"runs: open-unlearning {ou_runs} s; unlearn {our_runs} s")
    best = f"best of {args.repeat}, " if args.repeat > 1 else ""
    print(
        f"wall time ({best}loading included): open-unlearning {ou_time:.1f} s, unlearn {our_time:.1f} s "
        f"({ou_time / our_time:.2f}x faster)"
    )
    record = {"model": args.model, "rows": rows, "ou_seconds": ou_time, "unlearn_seconds": our_time}
    (work / "parity.json").write_text(json.dumps(record | {"ou_runs": ou_times, "unlearn_runs": our_times}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
