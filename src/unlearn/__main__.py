"""Command line: ``unlearn COMMAND [flags]``. One mapping from command name to function."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Callable

from unlearn import collector
from unlearn.config_args import add_config_args, config_from_args, parse_seeds, positive_int
from unlearn.errors import UnlearnError


def _module(name: str):
    """The module that does a command's work, imported when the command runs: ``unlearn --help`` and
    a refused flag answer at once, without importing torch and transformers first (with the garbage
    collector paused: :mod:`unlearn.collector`)."""
    return collector.import_module(f"unlearn.{name}")


TRAINING = ("model", "lora", "train")  # flag groups of config.py
UNLEARNING = TRAINING + ("data", "unlearn")


def _say(text: str) -> None:
    """Print once, from the main process, when several processes run the command."""
    if _module("distributed").is_main_process():
        print(text)


def cmd_finetune(args) -> int:
    cfg = config_from_args(args)
    path = _module("pipeline").finetune(cfg, args.train)
    _say(f"saved the fine-tuned model to {path}")
    return 0


def cmd_run(args) -> int:
    cfg = config_from_args(args)
    if not args.seeds:
        _module("pipeline").run(cfg)
        return 0
    seeds = parse_seeds(args.seeds)  # each seed a run of its own, in OUT/seed-<seed>
    if not cfg.out:
        raise _module("errors").OutputError("no output folder: give --out DIR")
    pipeline = _module("pipeline")
    for seed in seeds:
        _say(f"== seed {seed} ({seeds.index(seed) + 1} of {len(seeds)}) -> {cfg.out}/seed-{seed}")
        pipeline.run(dataclasses.replace(cfg, seed=seed, out=f"{cfg.out}/seed-{seed}"))
    _say(f"ran {len(seeds)} seeds; unlearn report {cfg.out} --out {cfg.out}/report gives each number across them")
    return 0


def cmd_eval(args) -> int:
    cfg = config_from_args(args)
    _module("evaluate").run_eval(cfg)  # (it says where it wrote)
    return 0


def cmd_audit(args) -> int:
    _module("audit").run_audit(config_from_args(args))
    return 0


def cmd_continual(args) -> int:
    cfg = config_from_args(args)
    rows = _module("continual").continual(cfg, args.tasks, keep_checkpoints=args.keep_checkpoints)
    _say(f"unlearned {len(rows)} tasks one after another; results in {cfg.out}/continual.csv")
    return 0


def cmd_demo(args) -> int:
    demo = _module("demo")
    summaries = demo.run_demo(args.out, model=args.model, overwrite=args.overwrite, nli=args.nli)
    return 1 if demo.check_demo(summaries) and args.strict else 0


def cmd_data_synth(args) -> int:
    path = _module("synthetic").write_synthetic(
        args.out, n_authors=args.authors, qa_per_author=args.qa_per_author, seed=args.seed, overwrite=args.overwrite
    )
    print(f"wrote the synthetic fictitious-author data set to {path}")
    return 0


def cmd_forget(args) -> int:
    from_file = _module("config_args").load_yaml(args.config) if getattr(args, "config", None) else {}
    cfg = config_from_args(args)
    given = {k: getattr(cfg, k) for k in {*from_file, *vars(args)} if k in _module("config").FIELD_NAMES}
    return _module("forget").forget(
        cfg, given, style=args.style, keep_within=args.keep_within, max_steps=args.max_steps
    )


def cmd_flags(args) -> int:
    print(_module("config_args").cli_reference(), end="")
    return 0


def cmd_methods(args) -> int:
    methods = _module("methods")
    if args.markdown:  # docs/methods.md's table (tests/test_methods.py keeps them equal)
        print(methods.methods_table())
        return 0
    methods.print_methods(wide=args.wide)
    return 0


def _methods_parser(p):
    p.add_argument("--markdown", action="store_true", help="print docs/methods.md's methods table (Markdown)")
    p.add_argument("--wide", action="store_true", help="every column, whatever the terminal's width")


def cmd_plan(args) -> int:
    memory = _module("memory")
    budget = memory.parse_size(args.gpu_memory) if args.gpu_memory else None
    setting = memory.Setting(
        method=args.method,
        batch_size=args.batch_size,
        max_length=args.max_length,
        lora=args.lora,
        lora_r=args.lora_r,
        zero=args.zero,
        processes=args.processes,
        optim=args.optim,
        mixed_precision=args.mixed_precision and args.device != "cpu",
        gradient_checkpointing=args.gradient_checkpointing,
        chunked_logits=args.chunked_logits,
        attention=args.attn_implementation,
    )
    memory.print_plan(memory.model_shape(args.model, args.trust_remote_code), setting, args.device, budget)
    return 0


def cmd_report(args) -> int:
    if args.compare:
        _module("report.compare").compare_runs(*args.compare, args.out)
        print(f"wrote {args.out}/compare.md and compare.json")
        return 0
    if not args.results:
        raise _module("errors").ConfigError("give the result folders to report on (or --compare A B)")
    kw = {"baseline": args.baseline, "title": args.title, "examples": args.examples, "against": args.against}
    out = _module("report").write_report(args.results, args.out, **kw)
    print(f"wrote {out / 'report.md'}, {out / 'report.html'}, {out / 'table.csv'} and the plots")
    return 0


def cmd_sweep(args) -> int:
    return _module("sweep").run_sweep(
        args.config,
        dry_run=args.dry_run,
        out=args.out,
        debug=getattr(args, "debug", False),
        seeds=args.seeds,
        launcher=_module("launchers").given_flags(args),
        only=args.only,
        job_result=args.job_result,
    )


def _finetune_parser(p):
    p.add_argument("--train", nargs="+", required=True, help="question/answer JSON-lines files")
    add_config_args(p, TRAINING + ("out", "resume"))


def _run_parser(p):
    add_config_args(p, UNLEARNING + ("eval", "downstream", "audit", "out", "resume"))
    p.add_argument("--seeds", help="run once per seed (e.g. 1001,1002,1003), each into OUT/seed-<seed>")


def _forget_parser(p):
    p.add_argument("--style", default="forget", help="forget (default: ME+GD, answers become uninformative) or "
                   "refuse (IDK+AP: the model says it does not know)")  # fmt: skip
    p.add_argument("--max-steps", type=positive_int, default=None, help="cap on optimiser steps (default: chosen)")
    p.add_argument("--keep-within", type=float, default=0.1, help="retain ROUGE and probability may fall at most "
                   "this share below their values before (default: 0.1)")  # fmt: skip
    extra = ("holdout", "attacks", "nli", "embedder", "eval_batch_size", "gen_batch_size", "eval_every")
    add_config_args(p, UNLEARNING + ("out", "resume"), exclude=("data", "split", "task_id", "benchmark"), extra=extra)


def _eval_parser(p):
    extra = ("forget", "retain", "method")  # --method ICU: in-context unlearning (RWKU)
    add_config_args(p, ("model", "data", "eval", "downstream", "out"), exclude=("eval",), extra=extra)


def _audit_parser(p):
    extra = ("forget", "retain", "holdout", "retain_model", "ref_model", "eval_batch_size", "gen_batch_size", "seed",
             "max_length", "weight_decay", "mixed_precision")  # fmt: skip
    add_config_args(p, ("model", "data", "audit", "out", "resume"), exclude=("audit", "save_every"), extra=extra)


def _continual_parser(p):
    p.add_argument("--tasks", default=None, help="tasks in order, e.g. 1,2,3 or 1-10 (default: every task)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep the model of every task, not just the last")
    add_config_args(p, UNLEARNING + ("eval", "out", "resume"), exclude=("resume",))


def _demo_parser(p):
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--model", default="tiny", help="tiny (default, minutes on a laptop CPU) or smollm2-135m")
    p.add_argument("--nli", default="none", help="NLI model for the Entailment Score (default: none, offline)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --out")
    p.add_argument("--strict", action="store_true", help="exit 1 when the demo does not forget and keep as promised")


def _synth_parser(p):
    p.add_argument("--out", required=True, help="folder to write the TOFU-layout files into")
    p.add_argument("--authors", type=int, default=100, help="number of fictitious authors")
    p.add_argument("--qa-per-author", type=int, default=4, help="questions per author")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--overwrite", action="store_true", help="replace the data set an earlier data synth wrote there")


def _report_parser(p):
    p.add_argument(
        "results",
        nargs="*",
        metavar="RESULT_DIR",
        help="folders searched (recursively) for evaluated runs (summary.json) and continual runs (continual.csv)",
    )
    p.add_argument("--out", required=True, help="folder for report.md, report.html, table.csv and the plots")
    p.add_argument(
        "--baseline",
        help="the evaluated target model (an 'unlearn eval' output folder), shown as "
        "'before' in the examples and as a reference point in the plots",
    )
    p.add_argument("--title", default="Unlearning report", help="report title")
    p.add_argument("--against", metavar="RUN", help="the run every other is compared with (default: highest FE)")
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="compare two evaluated runs on the same items: B - A per metric, its 95%% interval and p-value",
    )
    p.add_argument(
        "--examples", type=int, default=3, help="forget and retain questions shown before/after (default: 3)"
    )


def _plan_parser(p):
    p.add_argument(
        "--model",
        required=True,
        help="a model folder, its config.json, a hub id or a preset (only the "
        "config is read), e.g. configs/architectures/llama-3-8b",
    )
    p.add_argument("--method", default="ME+GD", help="unlearning method (default: ME+GD)")
    p.add_argument(
        "--batch-size", type=positive_int, default=4, help="sequences per device per micro-step (default: 4)"
    )
    p.add_argument(
        "--max-length", type=positive_int, default=500, help="tokens per sequence (default: 500, the paper's)"
    )
    p.add_argument("--lora", action="store_true", help="train a LoRA adapter instead of every weight")
    p.add_argument("--lora-r", type=positive_int, default=8, help="LoRA rank (default: 8)")
    p.add_argument("--zero", type=int, choices=range(4), default=0, help="DeepSpeed ZeRO stage 0-3 (default: 0)")
    p.add_argument("--processes", type=positive_int, default=1, help="processes (GPUs) sharding the run (default: 1)")
    p.add_argument("--optim", default="adamw", help="adamw, adamw_fused or adamw_8bit (default: adamw)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in backward")
    p.add_argument(
        "--chunked-logits",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="chunked logits (default: on for vocabularies of 32k+ unless ZeRO-3)",
    )
    p.add_argument(
        "--mixed-precision",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="bf16 autocast activations (default: on; off on --device cpu)",
    )
    p.add_argument(
        "--attn-implementation",
        default="sdpa",
        help="sdpa, flash_attention_2 or eager (adds the attention score matrices)",
    )
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="where it runs (default: cuda)")
    p.add_argument("--gpu-memory", help="memory per device, e.g. 80GiB: says whether it fits, and what does")
    p.add_argument("--trust-remote-code", action="store_true", help="allow a model folder's own code")


def _sweep_parser(p):
    p.add_argument("--config", required=True, help="sweep YAML: base (config keys), grid (key: [values]), out (root)")
    p.add_argument("--out", help="root folder for the runs (overrides 'out:' of the file)")
    p.add_argument("--dry-run", action="store_true", help="print the planned runs and exit")
    p.add_argument("--seeds", help="run every setting once per seed (e.g. 1001,1002,1003); replaces the file's seeds")
    _module("launchers").add_flags(p)


COMMANDS: dict[str, tuple[Callable, Callable, str]] = {
    "finetune": (cmd_finetune, _finetune_parser, "fine-tune a model on question/answer files (target or retain model)"),
    "forget": (cmd_forget, _forget_parser, "make a model forget your records: until they look unseen; audit, report"),
    "run": (cmd_run, _run_parser, "unlearn a forget set from a model"),
    "eval": (cmd_eval, _eval_parser, "evaluate a model: the paper's six metrics, Model Utility, Forget Efficacy"),
    "audit": (
        cmd_audit,
        _audit_parser,
        "attack a model: does the forgotten knowledge come back? (membership "
        "inference, relearning, quantization, prompts)",
    ),
    "continual": (cmd_continual, _continual_parser, "unlearn tasks one after another (continual unlearning)"),
    "demo": (cmd_demo, _demo_parser, "the whole pipeline offline on built-in defaults"),
    "data synth": (cmd_data_synth, _synth_parser, "write the built-in fictitious data set (TOFU layout)"),
    "sweep": (cmd_sweep, _sweep_parser, "run a grid of unlearning runs (one folder each, resumable)"),
    "flags": (cmd_flags, lambda p: None, "every setting as a flag and a YAML key, its default and range (docs/cli.md)"),
    "plan": (cmd_plan, _plan_parser, "estimate the peak training memory per device from the model's config alone"),
    "report": (cmd_report, _report_parser, "tables, plots and before/after examples from result folders"),
    "methods": (
        cmd_methods,
        _methods_parser,
        "list the unlearning methods: what each needs, its arguments and source",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unlearn",
        description="Machine unlearning for LLMs (A Closer Look at Machine Unlearning for LLMs, ICLR 2025).",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, (fn, configure, help_text) in COMMANDS.items():
        if " " in name:
            group, leaf = name.split(" ", 1)
            if group not in groups:
                gp = sub.add_parser(group, help=f"{group} commands")
                groups[group] = gp.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
            p = groups[group].add_parser(leaf, help=help_text, description=help_text)
        else:
            p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        configure(p)
        p.set_defaults(func=fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not sys.stderr.isatty():  # a log: transformers' and the hub's own bars off (ours write plain lines)
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # Under accelerate launch / torchrun every process runs this; the others only report problems.
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(levelname)s %(message)s")
    for noisy in ("sentence_transformers", "matplotlib", "accelerate", "httpx"):  # their INFO lines say nothing new
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.func(args)
    except UnlearnError as e:  # the user's input or machine; anything else is a bug and keeps its traceback
        if getattr(args, "debug", False):
            raise
        print(f"unlearn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unlearn: interrupted; {_after_interrupt(args)}", file=sys.stderr)
        return 130
    finally:
        _close_process_group()


def _after_interrupt(args) -> str:
    """What to do after Ctrl-C, from what the interrupted command left (never a --resume that fails)."""
    command = getattr(args.func, "__name__", "")
    out = getattr(args, "out", None)
    if command in ("cmd_sweep", "cmd_continual"):
        return "rerun the same command to go on: finished runs are skipped, half-done ones resume from checkpoints"
    if command == "cmd_audit":
        return "rerun the same command with --resume to go on: finished attacks are kept"
    if out and _module("rundir").checkpoint_exists(out):
        return "rerun the same command with --resume to go on from its last checkpoint"
    return "no checkpoint was written (runs write one with --save-every N); rerun it with --overwrite to start again"


def _close_process_group() -> None:
    """Leave the process group (accelerate launch / torchrun) cleanly: NCCL warns of a leak otherwise."""
    dist = sys.modules.get("torch.distributed")  # (never imported: never initialised)
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def cli() -> int:
    """The ``unlearn`` command: :func:`main` in a process that ends when it returns, so what its
    imports load, and everything at the end, is frozen for the garbage collector
    (:mod:`unlearn.collector`). :func:`main` alone (tests, notebooks) freezes nothing."""
    collector.freeze_imports()
    try:
        return main()
    finally:
        collector.freeze_all()


if __name__ == "__main__":
    sys.exit(cli())
