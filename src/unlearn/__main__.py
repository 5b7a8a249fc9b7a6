"""Command line: ``unlearn COMMAND [flags]``. One mapping from command name to function."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from .config import add_config_args, config_from_args

MODEL = ["model", "prompt_format", "dtype", "trust_remote_code", "attn_implementation", "gradient_checkpointing"]
TRAIN = ["epochs", "lr", "batch_size", "grad_accum", "weight_decay", "warmup", "seed", "max_length",
         "mixed_precision"]
UNLEARN = ["data", "split", "task_id", "forget", "retain", "idk", "method", "forget_coeff", "reg_coeff",
           "beta", "mask", "fix_ref_model", "ref_model"]
OUT = ["out", "overwrite"]


def cmd_finetune(args) -> int:
    from .pipeline import finetune

    cfg = config_from_args(args)
    path = finetune(cfg, args.train)
    print(f"saved the fine-tuned model to {path}")
    return 0


def cmd_run(args) -> int:
    from .pipeline import unlearn

    cfg = config_from_args(args)
    result = unlearn(cfg)
    print(f"saved the unlearned model to {result['out'] / 'model'}")
    return 0


def cmd_data_synth(args) -> int:
    from .synthetic import write_synthetic

    path = write_synthetic(args.out, n_authors=args.authors, qa_per_author=args.qa_per_author, seed=args.seed)
    print(f"wrote the synthetic fictitious-author data set to {path}")
    return 0


def _finetune_parser(p):
    p.add_argument("--train", nargs="+", required=True, help="question/answer JSON-lines files")
    add_config_args(p, MODEL + TRAIN + OUT)


def _run_parser(p):
    add_config_args(p, MODEL + TRAIN + UNLEARN + OUT)


def _synth_parser(p):
    p.add_argument("--out", required=True, help="folder to write the TOFU-layout files into")
    p.add_argument("--authors", type=int, default=100, help="number of fictitious authors")
    p.add_argument("--qa-per-author", type=int, default=4, help="questions per author")
    p.add_argument("--seed", type=int, default=0, help="random seed")


COMMANDS: dict[str, tuple[Callable, Callable, str]] = {
    "finetune": (cmd_finetune, _finetune_parser, "fine-tune a model on question/answer files (target or retain model)"),
    "run": (cmd_run, _run_parser, "unlearn a forget set from a model"),
    "data synth": (cmd_data_synth, _synth_parser, "write the built-in fictitious data set (TOFU layout)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unlearn", description="Machine unlearning for LLMs "
                                     "(A Closer Look at Machine Unlearning for LLMs, ICLR 2025).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, (fn, configure, help_text) in COMMANDS.items():
        if " " in name:
            group, leaf = name.split(" ", 1)
            if group not in groups:
                gp = sub.add_parser(group, help=f"{group} commands")
                groups[group] = gp.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
            p = groups[group].add_parser(leaf, help=help_text)
        else:
            p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        configure(p)
        p.set_defaults(func=fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from .data import DataError
    from .train import DivergenceError

    try:
        return args.func(args)
    except (DataError, DivergenceError, FileNotFoundError, ValueError, OSError) as e:
        if getattr(args, "debug", False):
            raise
        print(f"unlearn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("unlearn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
