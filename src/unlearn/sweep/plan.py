"""Planning a sweep: the sweep file read, the grid expanded into runs, every run validated.

The sweep file is YAML with these keys::

    base:              # any Config keys, shared by every run
      data: ../shared/data/tofu
      epochs: 5
    grid:              # Config key -> list of values; the runs are their Cartesian product
      method: [ME+GD, IDK+AP]
      lr: [1e-5, 5e-6]
    out: sweeps/tofu   # root folder: one sub-folder per run, plus sweep.csv
    audit:             # optional: audit every run's model (unlearn audit) into <run>/audit
      attacks: mia,relearn
      holdout: data/holdout.jsonl
    seeds: [1001, 1002]  # optional: every setting once per seed (…__seed-1001)
    launcher:          # optional: where the runs execute (unlearn.launchers); default: here, in turn
      name: slurm
      gpus_per_run: 1

Runs go in a fixed order (``itertools.product`` over the grid keys as written, the first key varying
slowest) into ``OUT/<key>-<value>__...`` (e.g. ``method-ME+GD__lr-1e-05``). The whole grid is validated
(keys, types, methods and their
arguments, data and evaluation files, downstream tasks) before the first model is loaded. Paths in
the file are relative to the current directory, as in ``unlearn run --config``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from unlearn.audit.after_run import check_audit
from unlearn.config import Config, fields_of
from unlearn.config_args import config_from_args, config_keys, parse_seeds, read_yaml_mapping
from unlearn.data import read_refusals
from unlearn.datasets import check_method_rows
from unlearn.errors import ConfigError, UnlearnError
from unlearn.evaluation.downstream import downstream_tasks_for
from unlearn.launchers import Launcher, read_launcher
from unlearn.loading import check_run_inputs
from unlearn.methods import parse_method, resolve
from unlearn.pipeline import load_data
from unlearn.protocols import protocol_of, with_defaults
from unlearn.rundir import RunDir

TOP_KEYS = ("base", "grid", "out", "audit", "seeds", "launcher")
MANAGED = ("out",)  # set by the sweep for each run
MAX_NAME = 150


@dataclass
class PlannedRun:
    name: str
    values: dict  # grid key -> the value as the Config holds it
    cfg: Config
    sets: list | None  # validated evaluation sets; None: the run is not evaluated
    downstream: list[str] | None = None  # validated lm-eval tasks, when the run has any

    @property
    def out(self) -> RunDir:
        return RunDir(self.cfg.out)

    def state(self) -> str:
        """finished | partial | absent (:meth:`unlearn.rundir.RunDir.status`)."""
        return self.out.status(evaluated=self.evaluated, downstream=bool(self.downstream))

    @property
    def evaluated(self) -> bool:
        protocol = protocol_of(self.cfg)
        return bool(self.sets) or bool(
            self.cfg.eval and not protocol.six_metrics and not protocol.downstream_is_evaluation
        )


# --------------------------------------------------------------------------- planning


def _keys(section: dict, where: str, path: Path) -> dict:
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: '{where}' must be a mapping of config keys to values")
    out = config_keys(section, f"{path}: {where}: ")
    for name in out:
        if name in MANAGED:
            raise ConfigError(
                f"{path}: {where}: '{name}' is set by the sweep; give the root folder as top-level 'out:'"
            )
    return out


def read_sweep(path: str | Path) -> tuple[dict, dict, str | None]:
    """(base, grid, out) of a sweep file; every key checked against the Config schema."""
    path = Path(path)
    raw = read_yaml_mapping(path, "sweep file", f"a mapping with keys {', '.join(TOP_KEYS)}")
    unknown = [k for k in raw if k not in TOP_KEYS]
    if unknown:
        raise ConfigError(
            f"{path}: unknown top-level key '{unknown[0]}' (valid: {', '.join(TOP_KEYS)}; "
            "config keys go under 'base:' or 'grid:')"
        )
    base = _keys(raw.get("base") or {}, "base", path)
    grid = {}
    for key, values in _keys(raw.get("grid") or {}, "grid", path).items():
        values = values if isinstance(values, list) else [values]
        if not values:
            raise ConfigError(f"{path}: grid: '{key}' has no values")
        if key in base:
            raise ConfigError(f"{path}: '{key}' is in both base and grid; keep it in one")
        grid[key] = values
    if raw.get("seeds") is not None:  # every setting once per seed, each into its own folder (…__seed-1001)
        if "seed" in grid or "seed" in base:
            raise ConfigError(f"{path}: give 'seeds:' or a 'seed' in base/grid, not both")
        grid["seed"] = parse_seeds(raw["seeds"], f"{path}: seeds")
    audit = raw.get("audit")
    if audit is not None and audit is not False:
        base.update(_audit_keys(audit, path), audit=True)
    out = raw.get("out")
    return base, grid, None if out is None else str(out)


def _audit_keys(section, path: Path) -> dict:
    """The ``audit:`` section: ``true`` (every attack, the defaults) or a mapping of audit settings."""
    if section is True:
        return {}
    allowed = set(fields_of("audit")) | {"holdout", "ref_model", "target_model", "retain_model"}
    keys = _keys(section, "audit", path)
    wrong = [k for k in keys if k not in allowed]
    if wrong:
        raise ConfigError(f"{path}: audit: '{wrong[0]}' is not an audit setting (valid: {', '.join(sorted(allowed))})")
    return keys


def _text(value) -> str:
    return "none" if value is None else str(value)


def run_name(values: dict, legacy: bool = False) -> str:
    """``method-ME+GD__lr-1e-05``: ``key-value`` parts joined by ``__``, every character a shell or
    file system may mind replaced by '_'. ``legacy``: the name earlier versions gave
    (``method=ME+GD,lr=1e-05``), which a sweep still resumes."""
    if not values:
        return "run"
    if legacy:
        name = ",".join(f"{k}={_text(v)}" for k, v in values.items())
        name = re.sub(r"[^A-Za-z0-9._+=,-]", "_", name)
    else:
        name = "__".join(
            f"{k}-{re.sub(r'_+', '_', re.sub(r'[^A-Za-z0-9.+-]', '_', _text(v)))}" for k, v in values.items()
        )
    name = name.lstrip(".-") or "run"
    if len(name) > MAX_NAME:
        name = name[: MAX_NAME - 9] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return name


def _check(cfg: Config, name: str, cache: dict) -> tuple[list | None, list[str] | None]:
    """Validate one run before anything runs: method and its arguments, model settings, training data, refusals,
    evaluation sets and downstream tasks. Returns (evaluation sets, downstream tasks), None where
    there are none. An error names the run."""
    try:
        objective, resolved = resolve(cfg)
        check_run_inputs(resolved, objective)
        check_audit(cfg, RunDir(cfg.out))  # the audit: section's attacks, holdout, bit widths
        local = cfg.forget or (cfg.data and Path(cfg.data).exists())
        key = ("data", cfg.data, cfg.forget, cfg.retain, cfg.split, cfg.task_id)
        if protocol_of(cfg).rows_follow_method:  # (RWKU: text, pairs or refusals, by method)
            key += (cfg.method,)
        if local and key not in cache:
            cache[key] = load_data(cfg)  # reads and checks the files; the run reads them again
        if local and ("rows", key, objective.name) not in cache:
            check_method_rows(objective, cache[key])  # AltPO's alternate answers, RT's refusals
            cache[("rows", key, objective.name)] = None
        if ("idk", cfg.idk) not in cache:
            read_refusals(cfg.idk)
            cache[("idk", cfg.idk)] = None
        sets = downstream = None
        if cfg.eval:  # the protocol's sets (or tasks) read and checked, nothing loaded
            key = (
                "eval",
                cfg.benchmark,
                cfg.eval_data,
                cfg.data,
                cfg.forget,
                cfg.split,
                cfg.task_id,
                cfg.retain_logs,
                cfg.downstream,
                cfg.downstream_include,
            )
            if key not in cache:
                cache[key] = protocol_of(cfg).check(cfg)
            sets = cache[key]
        if cfg.downstream:
            key = ("downstream", cfg.downstream, cfg.downstream_include)
            if key not in cache:
                cache[key] = downstream_tasks_for(cfg)
            downstream = cache[key]
        return sets, downstream
    except UnlearnError as e:
        raise type(e)(f"{name}: {e}") from None


def launcher_of(path: str | Path, given: dict | None = None) -> Launcher:
    """Where the runs execute: the file's ``launcher:`` section with the command line's settings on top."""
    raw = read_yaml_mapping(path, "sweep file", f"a mapping with keys {', '.join(TOP_KEYS)}")
    return read_launcher(raw.get("launcher"), given or {}, str(path))


def plan_sweep(
    path: str | Path, out: str | None = None, seeds: str | None = None, only: str | None = None
) -> tuple[Path, list[PlannedRun]]:
    """The root folder and every run of the grid, in order, each validated (``only``: the grid planned,
    that one run validated and returned)."""
    base, grid, root = read_sweep(path)
    if seeds is not None:  # --seeds: the file's seeds (or seed) replaced
        base.pop("seed", None)
        grid.pop("seed", None)
        grid["seed"] = parse_seeds(seeds)
    root = out or root
    if not root:
        raise ConfigError(f"{path}: no output folder: add 'out: FOLDER' (or pass --out)")
    root_path = Path(root)
    runs, names, cache = [], {}, {}
    for combo in itertools.product(*grid.values()):
        given = dict(zip(grid, combo, strict=False))
        try:
            cfg = config_from_args(argparse.Namespace(), **base, **given)
        except ConfigError as e:
            raise ConfigError(f"{path}: {str(e).removeprefix('config: ')}") from None
        if "method" in grid:  # one spelling per method: ME+GD and me+gd are one run
            try:
                forget, reg = parse_method(cfg.method)
            except ConfigError as e:
                raise ConfigError(f"{path}: {e}") from None
            cfg = dataclasses.replace(cfg, method=forget.name + (f"+{reg.name}" if "+" in cfg.method and reg else ""))
        values = {k: getattr(cfg, k) for k in grid}
        name = run_name(values)
        if not (root_path / name).exists() and (root_path / run_name(values, legacy=True)).is_dir():
            name = run_name(values, legacy=True)  # a sweep started before the names changed goes on there
        if name in names:
            raise ConfigError(f"{path}: runs {names[name]} and {given} get the same folder name '{name}'")
        names[name] = given
        cfg = dataclasses.replace(cfg, out=str(root_path / name))
        try:
            cfg = with_defaults(cfg)
        except UnlearnError as e:
            raise type(e)(f"{name}: {e}") from None
        if only is None or name == only:
            runs.append(PlannedRun(name, values, cfg, *_check(cfg, name, cache)))
    if only is not None and not runs:
        raise ConfigError(f"{path}: no run named '{only}' in this sweep (unlearn sweep --dry-run lists them)")
    return root_path, runs
