"""The engines that execute a sweep's jobs (:mod:`unlearn.launchers`): subprocesses on this machine,
Ray tasks, or SLURM jobs through submitit. Each has ``submit(job)``, ``poll(handle)`` (None while it runs,
else an :class:`~unlearn.launchers.Outcome`), ``cancel(handle)`` and ``describe()``."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from unlearn.errors import ConfigError, DependencyError
from unlearn.io import open_log
from unlearn.launchers import INSTALL, PORT, Job, Launcher, Outcome, run_job


def _import(module: str, launcher: str):
    try:
        return __import__(module)
    except ImportError:
        raise DependencyError(f"--launcher {launcher} needs the {module} package: {INSTALL}") from None


class LocalEngine:
    """Runs side by side on this machine, each a subprocess with its own GPUs (``CUDA_VISIBLE_DEVICES``)
    or, without GPUs, its share of the cores (``OMP_NUM_THREADS``)."""

    def __init__(self, launcher: Launcher):
        n = launcher.parallel or 1
        devices = visible_gpus()
        gpus = launcher.gpus_per_run
        if gpus is None:
            gpus = launcher.processes_per_run if devices else 0
        if gpus * n > len(devices):
            raise ConfigError(
                f"launcher: {n} runs at once with {gpus} GPU(s) each need {gpus * n} GPUs; "
                f"this machine shows {len(devices)}"
            )
        cpus = launcher.cpus_per_run or max(1, (os.cpu_count() or 1) // n)
        self.slots: list[dict] = []
        for i in range(n):
            env = thread_env(cpus, launcher.processes_per_run)
            if devices:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(devices[i * gpus : (i + 1) * gpus])
            self.slots.append(env)
        self.gpus = gpus
        self.free = list(range(n))
        self.where = {}

    def describe(self) -> str:
        text = f"{len(self.slots)} at once on this machine, {self.slots[0]['OMP_NUM_THREADS']} thread(s) per process"
        if "CUDA_VISIBLE_DEVICES" in self.slots[0]:
            text += "; GPUs " + " | ".join(s["CUDA_VISIBLE_DEVICES"] or "none" for s in self.slots)
        return text

    def submit(self, job: Job):
        slot = self.free.pop(0)
        env = {**os.environ, **job.env, **self.slots[slot]}
        args = job.python_args(PORT + 1 + slot)
        f = open_log(job.log, f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} here: python {shlex.join(args)}")
        proc = subprocess.Popen([sys.executable, *args], cwd=job.cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
        self.where[proc.pid] = (slot, f)
        return proc

    def poll(self, proc) -> Outcome | None:
        code = proc.poll()
        if code is None:
            return None
        slot, f = self.where.pop(proc.pid)
        f.close()
        self.free.append(slot)
        self.free.sort()
        return Outcome(code)

    def cancel(self, proc) -> None:
        if proc.poll() is None:
            proc.terminate()


def thread_env(cpus: int, processes: int) -> dict[str, str]:
    """Each process of a run its share of the run's cores (torch would take them all, in every process)."""
    threads = str(max(1, cpus // max(1, processes)))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [d.strip() for d in given.split(",") if d.strip() and d.strip() != "-1"]
    return [str(i) for i in range(torch.cuda.device_count())]  # (0 without a driver)


class RayEngine:
    """Each run a Ray task (its CPUs and GPUs reserved by Ray, which sets CUDA_VISIBLE_DEVICES) that runs
    the run's command as a subprocess. Starts Ray here unless it is running or ``address`` is given."""

    def __init__(self, launcher: Launcher):
        self.ray = ray = _import("ray", "ray")
        if not ray.is_initialized():
            ray.init(address=launcher.address, include_dashboard=False, log_to_driver=False)
        gpus = launcher.gpus_per_run
        if gpus is None:
            gpus = launcher.processes_per_run if ray.cluster_resources().get("GPU", 0) else 0
        self.gpus, self.cpus = gpus, launcher.cpus_per_run or 1
        self.task = ray.remote(num_cpus=self.cpus, num_gpus=gpus, max_retries=0)(run_job)

    def describe(self) -> str:
        r = self.ray.cluster_resources()
        return (
            f"Ray ({int(r.get('CPU', 0))} CPUs, {int(r.get('GPU', 0))} GPUs in the cluster); "
            f"each run {self.cpus} CPU(s), {self.gpus} GPU(s)"
        )

    def submit(self, job: Job):
        env = {**thread_env(self.cpus, job.processes), **job.env}  # (Ray's OMP_NUM_THREADS is the task's CPUs)
        return self.task.remote(job.python_args(), job.cwd, job.log, env)

    def poll(self, ref) -> Outcome | None:
        ready, _ = self.ray.wait([ref], timeout=0)
        if not ready:
            return None
        try:
            return Outcome(self.ray.get(ref))
        except Exception as e:  # the task died (worker killed, node lost, cancelled)
            return Outcome(None, f"the Ray task failed: {_first_line(e)}")

    def cancel(self, ref) -> None:
        self.ray.cancel(ref, force=True)


def slurm_executor(launcher: Launcher, folder: Path):
    """submitit's executor with the launcher's job settings (one task per job; the run's processes are
    started inside it by accelerate launch)."""
    submitit = _import("submitit", "slurm")
    cluster = launcher.cluster or ("slurm" if shutil.which("sbatch") else None)
    if cluster is None:
        raise ConfigError(
            "launcher slurm: sbatch not found: run the sweep on a SLURM login node "
            "(or set launcher: cluster: local to run the jobs on this machine through submitit)"
        )
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    gpus = launcher.gpus_per_run
    if gpus is None:
        gpus = launcher.processes_per_run if cluster == "slurm" or visible_gpus() else 0
    params = {"timeout_min": launcher.time or 1440, "nodes": 1, "tasks_per_node": 1, "gpus_per_node": gpus}
    if launcher.cpus_per_run:
        params["cpus_per_task"] = launcher.cpus_per_run
    if cluster == "slurm":
        params.update({f"slurm_{k}": v for k, v in launcher.slurm.items()})
        if launcher.partition:
            params["slurm_partition"] = launcher.partition
        if launcher.account:
            params["slurm_account"] = launcher.account
    executor.update_parameters(**params)
    return executor, gpus


class SlurmEngine:
    """Each run a SLURM job submitted by submitit (its sbatch script and logs in ``folder``)."""

    def __init__(self, launcher: Launcher, folder: Path):
        self.executor, self.gpus = slurm_executor(launcher, folder)
        self.launcher = launcher
        cpus = launcher.cpus_per_run  # (else SLURM_CPUS_PER_TASK in the job; submitit's local jobs share the cores)
        if cpus is None and self.executor.cluster == "local":
            cpus = max(1, (os.cpu_count() or 1) // (launcher.parallel or 1))
        self.env = thread_env(cpus, launcher.processes_per_run) if cpus else {}

    def describe(self) -> str:
        return (
            f"SLURM through submitit ({self.executor.cluster}); each run one job, {self.gpus} GPU(s), "
            f"{self.launcher.time or 1440} min"
            + (f", partition {self.launcher.partition}" if self.launcher.partition else "")
        )

    def submit(self, job: Job):
        self.executor.update_parameters(name=f"unlearn-{job.name}"[:100])
        return self.executor.submit(run_job, job.python_args(), job.cwd, job.log, {**self.env, **job.env})

    def poll(self, handle) -> Outcome | None:
        if not handle.done():
            return None
        try:
            return Outcome(handle.result())
        except Exception as e:  # killed (time limit, scancel, node failure) or lost
            return Outcome(None, f"the SLURM job {handle.job_id} failed: {_first_line(e)}")

    def cancel(self, handle) -> None:
        handle.cancel(check=False)


def _first_line(e: BaseException) -> str:
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    return (lines[-1] if lines else type(e).__name__)[:300]


def engine_for(launcher: Launcher, root: Path):
    if launcher.name == "ray":
        return RayEngine(launcher)
    if launcher.name == "slurm":
        return SlurmEngine(launcher, root / "slurm")
    return LocalEngine(launcher)
