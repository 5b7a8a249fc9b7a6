"""A :class:`~unlearn.config.Config` from command-line flags and YAML files: the flags each field
gets (its help text is the field's), ``--config FILE`` read and checked key by key, and the values
given on the command line over the file's."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from unlearn.config import (
    FIELD_NAMES,
    GROUPS,
    RENAMED,
    Config,
    as_mapping,
    check_placeholders,
    check_types,
    fields_of,
)
from unlearn.errors import ConfigError


def read_yaml_mapping(path: str | Path, what: str, shape: str) -> dict[str, Any]:
    """A YAML file holding a mapping; a missing file, bad YAML or another shape is one clear error."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a {what} must be {shape}")
    return raw


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config; keys may use '-' or '_'. Unknown keys are an error naming the file."""
    raw = read_yaml_mapping(path, "config file", "a mapping of keys to values")
    return config_keys(raw, f"{path}: ")


def config_keys(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """``raw`` with keys as field names ('-' read as '_'); an unknown key is an error prefixed by ``where``."""
    out = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if name in RENAMED:
            raise ConfigError(f"{where}key '{key}': {RENAMED[name]}")
        if name not in FIELD_NAMES:
            raise ConfigError(f"{where}unknown key '{key}' (valid: {', '.join(sorted(FIELD_NAMES))})")
        out[name] = value
    return out


def _method_arg(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def _help(f) -> str:
    """A field's help with its default said once: not when the text already says it or it is None."""
    text = f.metadata["help"]
    if "default" in text or f.default is None:
        return text
    if isinstance(f.default, bool):
        return f"{text} (default: {'on' if f.default else 'off'})"
    return f"{text} (default: {f.default})"


def _task_id(text: str) -> int | None:
    if text.strip().lower() in ("all", "none"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a task number or 'all', got {text!r}") from None


def add_config_args(
    parser: argparse.ArgumentParser, groups: tuple[str, ...], exclude: tuple[str, ...] = (), extra: tuple[str, ...] = ()
) -> None:
    """Add ``--flag`` for each field of ``groups`` (and the ``extra`` fields); defaults are
    suppressed so we know what was given."""
    by_name = {f.name: f for f in fields(Config)}
    parser.add_argument("--config", help="YAML file with any of these keys; flags override it")
    names = fields_of(*groups, exclude=exclude)
    for name in names + [n for n in fields_of(*GROUPS) if n in extra and n not in names]:
        f = by_name[name]
        flag = "--" + name.replace("_", "-")
        help_text = _help(f).replace("%", "%%")  # argparse formats help with %
        if name == "method_args":
            parser.add_argument(
                "--method-arg",
                dest=name,
                type=_method_arg,
                action="append",
                default=argparse.SUPPRESS,
                metavar="NAME=VALUE",
                help=help_text,
            )
        elif f.type in ("bool", "bool | None"):
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text
            )
        else:
            typ = {"int": int, "float": float, "int | None": int, "float | None": float}.get(str(f.type), str)
            parser.add_argument(
                flag, dest=name, type=_task_id if name == "task_id" else typ, default=argparse.SUPPRESS, help=help_text
            )


def config_from_args(args: argparse.Namespace, **overrides: Any) -> Config:
    values: dict[str, Any] = {}
    from_file: dict[str, Any] = {}
    if getattr(args, "config", None):
        from_file = load_yaml(args.config)
        values.update(from_file)
    given = {k: v for k, v in vars(args).items() if k in FIELD_NAMES}
    if "method_args" in given:  # flags add to (and override) the file's arguments
        given["method_args"] = {**as_mapping(values.get("method_args"), "method_args"), **dict(given["method_args"])}
    values.update(given)
    values.update(overrides)
    cfg = Config(**values)
    check_placeholders(cfg, getattr(args, "config", None))
    try:
        check_types(cfg)
    except ConfigError as e:
        key = str(e).split("'")[1] if "'" in str(e) else None
        if key in from_file and from_file[key] == values.get(key):
            raise ConfigError(f"{args.config}: {str(e).removeprefix('config: ')}") from None
        raise
    return cfg


def parse_seeds(value, where: str = "--seeds") -> list[int]:
    """``"1001,1002,1003"`` or a list: the seeds to run each setting with, distinct, in order."""
    items = value if isinstance(value, list) else str(value).split(",")
    seeds = []
    for item in items:
        text = str(item).strip()
        try:
            seed = int(text)
        except ValueError:
            raise ConfigError(f"{where}: {text!r} is not an integer seed (e.g. 1001,1002,1003)") from None
        if seed < 0 or seed >= 2**32:
            raise ConfigError(f"{where}: seed {seed} must be in [0, 2^32)")
        seeds.append(seed)
    if not seeds:
        raise ConfigError(f"{where}: no seed given")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: a seed is listed twice in {value!r}")
    return seeds


GROUP_TITLES = {
    "model": "Model",
    "lora": "LoRA",
    "train": "Training",
    "data": "Data",
    "unlearn": "Unlearning",
    "eval": "Evaluation",
    "downstream": "Downstream tasks (lm-eval)",
    "audit": "Audit",
    "out": "Output",
    "resume": "Checkpoints and resume",
}


def _range(f) -> str:
    lo, above, hi = f.metadata["lo"], f.metadata["above"], f.metadata["hi"]
    parts = []
    if lo is not None:
        parts.append(f"{'>' if above else '≥'} {lo:g}")
    if hi is not None:
        parts.append(f"< {hi:g}")
    return ", ".join(parts) or ("finite" if str(f.type).startswith(("int", "float")) else "")


def cli_reference() -> str:
    """``docs/cli.md``: every setting as a flag and a YAML key, with its default, range and help, by
    group (generated from the schema; ``unlearn flags`` prints it, a test keeps the page equal to it)."""
    lines = [
        "# Every setting: flags and YAML keys",
        "",
        "Generated from the configuration schema (`src/unlearn/config.py`) by `unlearn flags > docs/cli.md`; a",
        "test fails when this page is stale. Every flag is also a key of a `--config FILE` (flags override it);",
        "`unlearn COMMAND --help` shows the flags a command takes.",
    ]
    for group in GROUPS:
        lines += [
            "",
            f"## {GROUP_TITLES[group]}",
            "",
            "| flag | YAML key | default | range | what it does |",
            "|---|---|---|---|---|",
        ]
        for f in fields(Config):
            if f.metadata["group"] != group:
                continue
            flag = "--method-arg NAME=VALUE" if f.name == "method_args" else "--" + f.name.replace("_", "-")
            value = f.default_factory() if f.default is dataclasses.MISSING else f.default
            default = "–" if value in (None, {}) else "on" if value is True else "off" if value is False else value
            text = " ".join(f.metadata["help"].split()).replace("|", "\\|")
            lines.append(f"| `{flag}` | `{f.name}` | {default} | {_range(f)} | {text} |")
    return "\n".join(lines) + "\n"


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (argparse reports anything else in one line)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
