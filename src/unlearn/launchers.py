"""Where the runs of a sweep execute: here, one after another (``local``, the default), several side by
side on this machine (``local`` with ``parallel: N``), on a Ray cluster (``ray``) or on a SLURM cluster
through submitit (``slurm``).

Every launcher runs the same thing: one process (or one job) per run, the command
``python -m unlearn sweep --config ROOT/sweep.yaml --out ROOT --only NAME`` (under ``accelerate launch``
when a run has several processes), which plans the sweep again, checks that run's folder, skips, resumes
or starts it as the in-process sweep does, and writes its result for the sweep to gather. This module
only builds those commands and hands them to the engine (Ray's scheduler, SLURM, or a few subprocesses);
it schedules nothing itself beyond keeping at most ``parallel`` runs going at once.

Settings (``launcher:`` in the sweep file, or flags of ``unlearn sweep``): ``name``, ``parallel``,
``gpus_per_run``, ``cpus_per_run``, ``processes_per_run``, ``accelerate_config``; for SLURM
``partition``, ``time`` (minutes or ``[D-]HH:MM[:SS]``), ``account``, ``cluster`` (submitit's executor:
``slurm``, or ``local`` to run the jobs on this machine) and ``slurm`` (further sbatch settings,
passed to submitit as ``slurm_<key>``); for Ray ``address``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from unlearn.errors import ConfigError
from unlearn.io import open_log

LAUNCHERS = ("local", "ray", "slurm")
COMMON = ("name", "parallel", "gpus_per_run", "cpus_per_run", "processes_per_run", "accelerate_config")
ONLY = {
    "partition": "slurm",
    "time": "slurm",
    "account": "slurm",
    "cluster": "slurm",
    "slurm": "slurm",
    "address": "ray",
}
PORT = 29500  # accelerate's default rendezvous port; each run launched with several processes gets its own
POLL_S = 0.5
INSTALL = "pip install 'unlearn-llm[cluster]'"


@dataclass(frozen=True)
class Launcher:
    name: str = "local"
    parallel: int | None = None  # runs at once; local: 1 (in this process) unless given; ray/slurm: no limit
    gpus_per_run: int | None = None  # default: processes_per_run where there are GPUs, else 0
    cpus_per_run: int | None = None  # local: this machine's cores shared out; ray: 1; slurm: SLURM's default
    processes_per_run: int = 1  # >1: the run is started with accelerate launch --num_processes N
    accelerate_config: str | None = None  # accelerate launch --config_file (DeepSpeed, FSDP, ...)
    partition: str | None = None
    time: int | None = None  # minutes a SLURM job may run (default 1440)
    account: str | None = None
    cluster: str | None = None  # submitit's executor: slurm (default where sbatch exists) or local
    slurm: dict = field(default_factory=dict)  # further settings: slurm_<key> of submitit (mem, qos, ...)
    address: str | None = None  # ray.init(address=...): None starts Ray here (or joins RAY_ADDRESS)

    @property
    def in_process(self) -> bool:
        """Today's sweep: every run in this process, one after another."""
        return self.name == "local" and (self.parallel or 1) == 1 and self.processes_per_run == 1


def _minutes(value, where: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: time must be minutes or [D-]HH:MM[:SS], got {value!r}")
    if isinstance(value, int) or str(value).strip().isdigit():
        minutes = int(value)
    else:
        text = str(value).strip()
        days, _, clock = text.rpartition("-")
        parts = clock.split(":")
        try:
            if not 2 <= len(parts) <= 3 or (days and not days.isdigit()):
                raise ValueError
            h, m, s = (int(p) for p in (parts + ["0"])[:3])
        except ValueError:
            raise ConfigError(f"{where}: time must be minutes or [D-]HH:MM[:SS], got {value!r}") from None
        minutes = int(days or 0) * 1440 + h * 60 + m + (s > 0)
    if minutes < 1:
        raise ConfigError(f"{where}: time must be at least 1 minute, got {value!r}")
    return minutes


FLAGS = (  # unlearn sweep's flags for the launcher settings (the command line over the file's launcher: section)
    ("parallel", int, "runs at once (local: side by side, each its own process and devices; default 1: here)"),
    ("gpus-per-run", int, "GPUs each run gets (default: processes-per-run where there are GPUs, else 0)"),
    ("cpus-per-run", int, "CPU cores each run gets (local: the machine's cores shared out)"),
    ("processes-per-run", int, "processes per run: started with accelerate launch when more than 1"),
    ("accelerate-config", str, "accelerate launch --config_file for runs of several processes (DeepSpeed, FSDP)"),
    ("partition", str, "slurm: the partition"),
    ("time", str, "slurm: time limit per job, minutes or [D-]HH:MM[:SS] (default 1440)"),
    ("account", str, "slurm: the account"),
    ("address", str, "ray: the cluster's address (default: start Ray here, or join RAY_ADDRESS)"),
)


def add_flags(parser) -> None:
    parser.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        help="where the runs execute: local (default), ray, slurm (submitit); 'launcher:' in the file sets more",
    )
    for flag, kind, text in FLAGS:
        parser.add_argument(f"--{flag}", type=kind, help=text)
    parser.add_argument("--only", metavar="RUN", help="run only this run of the sweep, here (what each job does)")
    parser.add_argument("--job-result", help=argparse.SUPPRESS)  # where a launched job writes its row of sweep.csv


def given_flags(args) -> dict:
    """The launcher settings given on the command line (None: not given)."""
    return {"name": args.launcher, **{f.replace("-", "_"): getattr(args, f.replace("-", "_")) for f, *_ in FLAGS}}


def read_launcher(section, given: dict, where: str) -> Launcher:
    """The launcher from the sweep file's ``launcher:`` section (``None``: none) with the command line's
    ``given`` settings (None: not given) on top. Every value checked; one line per error."""
    if section is None:
        section = {}
    if isinstance(section, str):
        section = {"name": section}
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: 'launcher' must be a launcher name or a mapping of its settings")
    raw = {str(k).replace("-", "_"): v for k, v in section.items()}
    known = set(COMMON) | set(ONLY)
    unknown = [k for k in raw if k not in known]
    if unknown:
        raise ConfigError(f"{where}: launcher: unknown setting '{unknown[0]}' (valid: {', '.join(sorted(known))})")
    raw.update({k: v for k, v in given.items() if v is not None})
    name = raw.get("name", "local")
    if name not in LAUNCHERS:
        raise ConfigError(f"{where}: launcher: name must be one of {', '.join(LAUNCHERS)}, got {name!r}")
    values = {"name": name}
    for key in ("parallel", "gpus_per_run", "cpus_per_run", "processes_per_run"):
        if key in raw:
            v = raw[key]
            low = 0 if key == "gpus_per_run" else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"{where}: launcher: {key} must be a whole number >= {low}, got {v!r}")
            values[key] = v
    for key in ("accelerate_config", "partition", "account", "cluster", "address"):
        if raw.get(key) is not None:
            values[key] = str(raw[key])
    if "time" in raw and raw["time"] is not None:
        values["time"] = _minutes(raw["time"], where)
    if raw.get("slurm") is not None:
        if not isinstance(raw["slurm"], dict):
            raise ConfigError(f"{where}: launcher: slurm must be a mapping of sbatch settings (mem: 64GB, qos: ...)")
        values["slurm"] = {str(k).replace("-", "_"): v for k, v in raw["slurm"].items()}
    if values.get("cluster") not in (None, "slurm", "local"):
        raise ConfigError(f"{where}: launcher: cluster must be slurm or local, got {values['cluster']!r}")
    if values.get("accelerate_config") and not Path(values["accelerate_config"]).is_file():
        raise ConfigError(f"{where}: launcher: accelerate_config {values['accelerate_config']} not found")
    launcher = Launcher(**values)
    gpus, procs = launcher.gpus_per_run, launcher.processes_per_run
    if gpus and procs > gpus:
        raise ConfigError(f"{where}: launcher: processes_per_run {procs} needs as many GPUs (gpus_per_run is {gpus})")
    return launcher


def ignored_settings(launcher: Launcher) -> list[str]:
    """Settings given that the chosen launcher does not use (said, not refused: a file may serve several)."""
    defaults = Launcher()
    return [k for k, owner in ONLY.items() if owner != launcher.name and getattr(launcher, k) != getattr(defaults, k)]


# ------------------------------------------------------------------------------------------ jobs


@dataclass
class Job:
    """One run to execute: ``unlearn`` with ``args`` in ``cwd``, its output appended to ``log``."""

    name: str
    args: list[str]
    cwd: str
    log: str
    processes: int = 1
    accelerate_config: str | None = None
    env: dict = field(default_factory=dict)

    def python_args(self, port: int | None = None) -> list[str]:
        """What follows the Python interpreter: ``-m unlearn ...``, or ``accelerate launch`` of it (without
        an accelerate config: DDP, over NCCL on GPUs and gloo on CPU)."""
        if self.processes <= 1:
            return ["-m", "unlearn", *self.args]
        launch = ["-m", "accelerate.commands.launch", "--num_processes", str(self.processes)]
        launch += ["--config_file", self.accelerate_config] if self.accelerate_config else ["--multi_gpu"]
        port = PORT + 1 + zlib.crc32(self.name.encode()) % 2000 if port is None else port
        return [*launch, "--main_process_port", str(port), "-m", "unlearn", *self.args]


def run_job(python_args: list[str], cwd: str, log: str, env: dict | None = None) -> int:
    """Run ``python python_args`` in ``cwd`` with its output appended to ``log``; the exit code.
    The function a Ray task or a SLURM job executes (the interpreter is the one where it runs)."""
    env = {**os.environ, **(env or {})}
    if "OMP_NUM_THREADS" not in env and env.get("SLURM_CPUS_PER_TASK", "").isdigit():  # the cores SLURM gave
        env["OMP_NUM_THREADS"] = env["SLURM_CPUS_PER_TASK"]
    header = f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} on {socket.gethostname()}: python {shlex.join(python_args)}"
    with open_log(log, header) as f:
        proc = subprocess.run(
            [sys.executable, *python_args], cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, check=False
        )
    return proc.returncode


@dataclass
class Outcome:
    code: int | None  # the command's exit code; None when the job itself failed (killed, lost)
    error: str = ""


def drive(
    engine, jobs: list[Job], limit: int | None, started: Callable[[Job], None], ended: Callable[[Job, Outcome], None]
) -> None:
    """Hand the jobs to the engine, at most ``limit`` at a time, calling ``started`` and ``ended`` as they
    go. Ctrl-C (or any error here) cancels the jobs still running."""
    pending, running = list(jobs), []
    try:
        while pending or running:
            while pending and (limit is None or len(running) < limit):
                job = pending.pop(0)
                running.append((job, engine.submit(job)))
                started(job)
            finished = False
            for item in list(running):
                outcome = engine.poll(item[1])
                if outcome is not None:
                    running.remove(item)
                    ended(item[0], outcome)
                    finished = True
            if not finished:
                time.sleep(POLL_S)
    except BaseException:
        for _, handle in running:
            try:
                engine.cancel(handle)
            except Exception:  # noqa: S110 (cancelling what can be cancelled)
                pass
        raise
