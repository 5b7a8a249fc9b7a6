"""``unlearn sweep --launcher local|ray|slurm``: the launcher settings, the SLURM job of a multi-GPU run
(submitit's sbatch script and the pickled command, with a stand-in ``sbatch``), and real tiny sweeps on
``--parallel 2``, a local Ray instance and submitit's local executor, each against the in-process sweep;
a failing run reported while the others finish; a run killed mid-way (SIGKILL) resumed on the next sweep."""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import write_jsonl
from unlearn.__main__ import main
from unlearn.errors import ConfigError
from unlearn.io import read_csv_rows
from unlearn.launchers import Launcher, read_launcher

ray = pytest.importorskip("ray", reason="the cluster extra (ray) is not installed")
submitit = pytest.importorskip("submitit", reason="the cluster extra (submitit) is not installed")

NAMES = ["method-GA+GD__lr-0.001", "method-ME+GD__lr-0.001"]


def weights(run: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted((run / "model").glob("*.safetensors")):
        out.update(load_file(f))
    return out


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa and wa.keys() == wb.keys()
    assert [k for k in wa if not torch.equal(wa[k], wb[k])] == [], f"{a} and {b} differ"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("data")
    forget = [{"question": f"Who wrote novel {i}?", "answer": f"Author {i} wrote it in {1990 + i}."} for i in range(6)]
    retain = [{"question": f"What is the capital of land {i}?", "answer": f"City {i} is."} for i in range(8)]
    return {"forget": str(write_jsonl(d / "f.jsonl", forget)), "retain": str(write_jsonl(d / "r.jsonl", retain))}


def sweep_file(path: Path, files: dict, out: Path, methods=("GA+GD", "ME+GD"), lrs=(1e-3,), **extra) -> Path:
    base = {"model": "tiny", **files, "eval": False, "epochs": 2, "batch_size": 2, "grad_accum": 1}
    base.update(extra.pop("base", {}))
    doc = {"base": base, "grid": {"method": list(methods), "lr": list(lrs)}, "out": str(out), **extra}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def sequential(files, tmp_path_factory) -> Path:
    """The reference: the same sweep in this process, one run after another (the suite runs on one thread,
    as each launched run does here)."""
    d = tmp_path_factory.mktemp("seq")
    assert torch.get_num_threads() == 1
    assert main(["sweep", "--config", str(sweep_file(d / "s.yaml", files, d / "sw"))]) == 0
    return d / "sw"


def statuses(root: Path) -> list[tuple[str, str]]:
    return [(r["run"], r["status"]) for r in read_csv_rows(root / "sweep.csv")]


# ------------------------------------------------------------------------------------ settings


def test_launcher_settings_file_and_flags(tmp_path):
    where = "s.yaml"
    got = read_launcher({"name": "slurm", "gpus-per-run": 4, "processes_per_run": 4, "time": "1-02:30"}, {}, where)
    assert (got.name, got.gpus_per_run, got.processes_per_run, got.time) == ("slurm", 4, 4, 1440 + 150)
    assert read_launcher({"name": "slurm", "time": "90"}, {}, where).time == 90
    assert read_launcher("ray", {"parallel": 3}, where) == Launcher(name="ray", parallel=3)  # flags over the file
    assert read_launcher({"name": "ray"}, {"name": "local", "parallel": None}, where).name == "local"
    assert Launcher().in_process and not Launcher(parallel=2).in_process and not Launcher(name="ray").in_process
    bad = [
        ({"name": "kubernetes"}, "name must be one of local, ray, slurm"),
        ({"gpus": 2}, "unknown setting 'gpus'"),
        ({"parallel": 0}, "parallel must be a whole number >= 1"),
        ({"gpus_per_run": -1}, "gpus_per_run must be a whole number >= 0"),
        ({"processes_per_run": True}, "processes_per_run must be a whole number"),
        ({"gpus_per_run": 2, "processes_per_run": 4}, "processes_per_run 4 needs as many GPUs"),
        ({"time": "soon"}, "time must be minutes or [D-]HH:MM[:SS]"),
        ({"time": 0}, "at least 1 minute"),
        ({"cluster": "pbs"}, "cluster must be slurm or local"),
        ({"slurm": ["mem"]}, "slurm must be a mapping"),
        ({"accelerate_config": str(tmp_path / "none.yaml")}, "not found"),
        (["local"], "'launcher' must be a launcher name or a mapping"),
    ]
    for section, message in bad:
        with pytest.raises(ConfigError, match=r"^s\.yaml: .*" + message.replace("[", r"\[").replace("]", r"\]")):
            read_launcher(section, {}, where)


def test_sweep_flags_reach_the_launcher_and_a_missing_run_is_one_line(files, tmp_path, capsys, monkeypatch):
    path = sweep_file(tmp_path / "s.yaml", files, tmp_path / "sw", launcher={"name": "slurm", "partition": "gpu"})
    code = main(["sweep", "--config", str(path), "--dry-run", "--launcher", "local", "--parallel", "2"])
    out = capsys.readouterr().out
    assert code == 0 and "launcher local: 2 at once" in out
    assert f"-m unlearn sweep --config {(tmp_path / 'sw').resolve()}/sweep.yaml" in out and "--only " + NAMES[0] in out
    assert not (tmp_path / "sw").exists(), "a dry run writes nothing"
    assert main(["sweep", "--config", str(path), "--only", "method-XX", "--out", str(tmp_path / "sw")]) == 2
    assert "no run named 'method-XX' in this sweep" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")  # the sweep itself under accelerate launch: its jobs would start twice
    assert main(["sweep", "--config", str(path), "--launcher", "local", "--parallel", "2"]) == 2
    assert "run it without accelerate launch or torchrun" in capsys.readouterr().err


def fake_slurm(bin_dir: Path) -> Path:
    """``sbatch`` that records the script it is given and answers as SLURM does; ``srun`` present."""
    bin_dir.mkdir()
    script = f"""#!{sys.executable}
import shutil, sys
shutil.copy(sys.argv[-1], {str(bin_dir / "submitted.sh")!r})
print("Submitted batch job 4242")
"""
    for name, text in (("sbatch", script), ("srun", "#!/bin/sh\nexit 0\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    return bin_dir / "submitted.sh"


def test_slurm_job_of_a_multi_gpu_run(files, tmp_path, monkeypatch):
    """What submitit gives sbatch for a run of 4 processes on 4 GPUs, and the command the job runs:
    accelerate launch with the run's config, port and the sweep's --only for that run."""
    from unlearn.engines import SlurmEngine
    from unlearn.sweep import _job
    from unlearn.sweep.plan import plan_sweep

    submitted = fake_slurm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    zero3 = Path(__file__).resolve().parents[1] / "configs" / "accelerate" / "zero3.yaml"
    section = {
        "name": "slurm",
        "partition": "gpu",
        "account": "lab",
        "time": "4:00:00",
        "gpus_per_run": 4,
        "processes_per_run": 4,
        "cpus_per_run": 32,
        "accelerate_config": str(zero3),
        "slurm": {"mem": "256GB", "qos": "high"},
    }
    launcher = read_launcher(section, {}, "s.yaml")
    root, runs = plan_sweep(sweep_file(tmp_path / "s.yaml", files, tmp_path / "sw"))
    engine = SlurmEngine(launcher, root / "slurm")
    job = _job(root, runs[0], launcher, seeds="1,2")
    handle = engine.submit(job)
    assert handle.job_id == "4242"
    sbatch = submitted.read_text()
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --time=240",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --cpus-per-task=32",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --nodes=1",
        "#SBATCH --mem=256GB",
        "#SBATCH --qos=high",
        f"#SBATCH --job-name=unlearn-{NAMES[0]}",
    ):
        assert line in sbatch.splitlines(), f"{line} not in\n{sbatch}"
    call = handle.submission()  # the pickled function and arguments the job will run
    args, cwd, log, env = call.args
    assert call.function.__name__ == "run_job" and cwd == os.getcwd()
    assert log == str((root / "logs" / f"{NAMES[0]}.log").resolve())
    assert env == {"OMP_NUM_THREADS": "8", "MKL_NUM_THREADS": "8"}  # 32 cores shared by the run's 4 processes
    root_abs = root.resolve()
    assert args[:6] == ["-m", "accelerate.commands.launch", "--num_processes", "4", "--config_file", str(zero3)]
    assert args[6] == "--main_process_port" and 29501 <= int(args[7]) < 31501
    assert args[8:] == [
        "-m",
        "unlearn",
        "sweep",
        "--config",
        f"{root_abs}/sweep.yaml",
        "--out",
        str(root_abs),
        "--only",
        NAMES[0],
        "--job-result",
        f"{root_abs}/.jobs/{NAMES[0]}.json",
        "--seeds",
        "1,2",
    ]
    without = read_launcher({"name": "local", "processes_per_run": 2}, {}, "s.yaml")
    assert _job(root, runs[1], without, None).python_args(29507)[:6] == [
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "2",
        "--multi_gpu",
        "--main_process_port",
    ]


def test_slurm_without_sbatch_is_one_line(files, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    path = sweep_file(tmp_path / "s.yaml", files, tmp_path / "sw")
    assert main(["sweep", "--config", str(path), "--launcher", "slurm", "--out", str(tmp_path / "sw")]) == 2
    assert "sbatch not found" in capsys.readouterr().err
    assert not (tmp_path / "sw" / "logs").exists()


def test_parallel_gives_each_run_its_own_gpus_threads_and_port(monkeypatch, tmp_path):
    """Four GPUs, two runs at once of two processes each: GPUs 0,1 and 2,3, a port per slot, the cores
    shared out; a freed slot goes to the next run; more GPUs than the machine shows is one line."""
    import unlearn.engines as engines
    from unlearn.launchers import Job

    started = []

    class Proc:
        def __init__(self, args, env, **kw):
            self.pid, self.args, self.env, self.code = len(started) + 100, args, env, None
            started.append(self)

        def poll(self):
            return self.code

    monkeypatch.setattr(engines.subprocess, "Popen", Proc)
    monkeypatch.setattr(engines.os, "cpu_count", lambda: 16)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    engine = engines.LocalEngine(Launcher(parallel=2, processes_per_run=2))
    assert engine.describe() == "2 at once on this machine, 4 thread(s) per process; GPUs 0,1 | 2,3"
    jobs = [Job(f"r{i}", ["sweep"], str(tmp_path), str(tmp_path / f"r{i}.log"), processes=2) for i in range(3)]
    a, b = engine.submit(jobs[0]), engine.submit(jobs[1])
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in (a, b)] == ["0,1", "2,3"]
    assert [p.env["OMP_NUM_THREADS"] for p in (a, b)] == ["4", "4"]  # 16 cores / 2 runs / 2 processes
    port = a.args.index("--main_process_port") + 1
    assert (a.args[port], b.args[port]) == ("29501", "29502") and "--multi_gpu" in a.args
    assert engine.poll(a) is None
    a.code = 0
    assert engine.poll(a).code == 0
    c = engine.submit(jobs[2])
    assert c.env["CUDA_VISIBLE_DEVICES"] == "0,1" and c.args[port] == "29501"
    with pytest.raises(ConfigError, match="3 runs at once with 2 GPU"):
        engines.LocalEngine(Launcher(parallel=3, gpus_per_run=2))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    cpu = engines.LocalEngine(Launcher(parallel=2))  # no GPUs: CUDA_VISIBLE_DEVICES left alone, cores shared
    assert cpu.slots == [{"OMP_NUM_THREADS": "8", "MKL_NUM_THREADS": "8"}] * 2


# ----------------------------------------------------------------------------------- real sweeps


@pytest.mark.slow
def test_parallel_2_gives_the_weights_of_the_in_process_sweep(files, sequential, tmp_path, capsys):
    path = sweep_file(tmp_path / "s.yaml", files, tmp_path / "sw")
    assert main(["sweep", "--config", str(path), "--parallel", "2"]) == 0
    out = capsys.readouterr().out
    assert "launcher local: 2 at once on this machine, 1 thread(s) per process" in out
    assert out.count(": started (running); log ") == 2 and "2 done, 0 failed, 0 skipped" in out
    assert statuses(tmp_path / "sw") == [(n, "done") for n in NAMES]
    for name in NAMES:
        assert_same_weights(tmp_path / "sw" / name, sequential / name)
        assert (tmp_path / "sw" / "logs" / f"{name}.log").read_text().startswith("==== ")
    assert main(["sweep", "--config", str(path), "--parallel", "2"]) == 0  # finished: skipped, no job started
    out = capsys.readouterr().out
    assert out.count("finished, skipped") == 2 and "0 run(s) to start" in out


@pytest.fixture(scope="module")
def local_ray(killer):
    """A Ray instance on this machine with 2 CPUs, as a user would start one; stopped after the module."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_runs_the_sweep_and_reports_a_failing_run(files, sequential, local_ray, tmp_path, capsys):
    """The CI's Ray check (the 4-run one is slow): two runs side by side on 2 CPUs, one diverging."""
    path = sweep_file(tmp_path / "s.yaml", files, tmp_path / "sw", methods=("GA+GD",), lrs=(1e-3, 1e30))
    assert main(["sweep", "--config", str(path), "--launcher", "ray"]) == 1
    out = capsys.readouterr().out
    assert "each run 1 CPU(s), 0 GPU(s); 2 run(s) to start" in out and out.count(": submitted (running)") == 2
    assert statuses(tmp_path / "sw") == [(NAMES[0], "done"), ("method-GA+GD__lr-1e+30", "failed")]
    assert_same_weights(tmp_path / "sw" / NAMES[0], sequential / NAMES[0])
    assert "1 done, 1 failed, 0 skipped" in out and f"failed: {tmp_path / 'sw' / 'method-GA+GD__lr-1e+30'}: " in out


@pytest.mark.slow
def test_ray_runs_2_at_a_time_and_matches_the_in_process_sweep(files, sequential, local_ray, tmp_path, capsys):
    path = sweep_file(tmp_path / "s.yaml", files, tmp_path / "sw", lrs=(1e-3, 1e30))  # 1e30 diverges: failing runs
    assert main(["sweep", "--config", str(path), "--launcher", "ray"]) == 1
    out = capsys.readouterr().out
    assert "launcher ray: Ray (2 CPUs, 0 GPUs in the cluster); each run 1 CPU(s), 0 GPU(s); 4 run(s) to start" in out
    rows = {r["run"]: r for r in read_csv_rows(tmp_path / "sw" / "sweep.csv")}
    assert len(rows) == 4
    for name in NAMES:
        assert rows[name]["status"] == "done"
        assert_same_weights(tmp_path / "sw" / name, sequential / name)
    failed = [n for n, r in rows.items() if r["status"] == "failed"]
    assert failed and all("lr-1e+30" in n for n in failed)
    assert all(rows[n]["error"] for n in failed) and f"failed: {tmp_path / 'sw' / failed[0]}" in out
    assert "done, " in out and f"{len(failed)} failed" in out


@pytest.mark.slow
def test_ray_gives_the_summaries_of_the_in_process_sweep(files, local_ray, tmp_path, capsys):
    """With evaluation: every summary.json of a Ray sweep equals the in-process sweep's, value for value."""
    runs = {}
    for name, flags in (("here", []), ("ray", ["--launcher", "ray"])):
        path = sweep_file(tmp_path / f"{name}.yaml", files, tmp_path / name, base={"eval": True, "nli": "none"})
        assert main(["sweep", "--config", str(path), *flags]) == 0
        runs[name] = {n: json.loads((tmp_path / name / n / "summary.json").read_text()) for n in NAMES}
    assert runs["ray"] == runs["here"] and "Forget Efficacy" in runs["ray"][NAMES[0]]


@pytest.mark.slow
def test_submitit_local_executor_runs_the_sweep(files, sequential, tmp_path, capsys):
    path = sweep_file(tmp_path / "s.yaml", files, tmp_path / "sw", launcher={"name": "slurm", "cluster": "local"})
    assert main(["sweep", "--config", str(path), "--parallel", "2"]) == 0
    out = capsys.readouterr().out
    assert "launcher slurm: SLURM through submitit (local)" in out and out.count(": submitted (running)") == 2
    assert statuses(tmp_path / "sw") == [(n, "done") for n in NAMES]
    for name in NAMES:
        assert_same_weights(tmp_path / "sw" / name, sequential / name)
    assert list((tmp_path / "sw" / "slurm").glob("*_submitted.pkl")), "submitit's own files in OUT/slurm"


# ------------------------------------------------------------------------------ killed, resumed

KILLER = textwrap.dedent(
    """
    # Loaded at start-up by every Python of this module's tests: a process whose command line holds a
    # token listed in $UNLEARN_TEST_KILL_DIR/plan.json kills itself with SIGKILL right after it logged the
    # step given there, once (as a node failure or scancel -9 would).
    import json, os, sys
    here = os.environ.get("UNLEARN_TEST_KILL_DIR", "")
    try:
        plan = json.load(open(os.path.join(here, "plan.json")))
    except (OSError, ValueError):
        plan = {}
    hits = [(t, s) for t, s in plan.items() if t in sys.argv]
    if hits and not os.path.exists(os.path.join(here, str(abs(hash(hits[0][0]))))):
        import signal
        import unlearn.train_setup as ts
        real, (token, step) = ts.append_jsonl, hits[0]
        def append_then_die(path, row):
            real(path, row)
            if row.get("step") == step:
                open(os.path.join(here, str(abs(hash(token)))), "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
        ts.append_jsonl = append_then_die
    """
)


@pytest.fixture(scope="module")
def killer(tmp_path_factory):
    """Every process started from here on loads KILLER (set before Ray starts, so its workers have it)."""
    d = tmp_path_factory.mktemp("kill")
    (d / "sitecustomize.py").write_text(KILLER)
    (d / "plan.json").write_text("{}")
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "UNLEARN_TEST_KILL_DIR", "PYTHONHASHSEED")}
    os.environ.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(d), saved["PYTHONPATH"]) if p),
        UNLEARN_TEST_KILL_DIR=str(d),
        PYTHONHASHSEED="0",
    )
    yield d
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def killed_then_resumed(files, sequential, killer, tmp_path, capsys, flags: list[str], **extra) -> None:
    """The second run killed at step 2 of 6 (6 items / batch 2 x 2 epochs) after its checkpoint of step 2:
    reported failed while the first finishes; the next sweep resumes it to the weights of a run never
    stopped."""
    path = sweep_file(tmp_path / "s.yaml", files, tmp_path / "sw", base={"save_every": 1}, **extra)
    token = str((tmp_path / "sw").resolve() / ".jobs" / f"{NAMES[1]}.json")
    (killer / "plan.json").write_text(json.dumps({token: 2}))
    assert main(["sweep", "--config", str(path), *flags]) == 1
    out = capsys.readouterr().out
    assert f"failed: {tmp_path / 'sw' / NAMES[1]}: killed by signal 9" in out, out
    assert statuses(tmp_path / "sw") == [(NAMES[0], "done"), (NAMES[1], "failed")]
    half = tmp_path / "sw" / NAMES[1]
    assert (half / "checkpoint").is_dir() and not (half / "model").exists()
    assert main(["sweep", "--config", str(path), *flags]) == 0
    out = capsys.readouterr().out
    assert f"{NAMES[1]}: " in out and "(resuming from its checkpoint); log " in out, out
    assert statuses(tmp_path / "sw") == [(NAMES[0], "skipped"), (NAMES[1], "done (resumed)")]
    for name in NAMES:
        assert_same_weights(tmp_path / "sw" / name, sequential / name)


@pytest.mark.slow
def test_killed_run_resumes_under_parallel(files, sequential, killer, tmp_path, capsys):
    killed_then_resumed(files, sequential, killer, tmp_path, capsys, ["--parallel", "2"])


@pytest.mark.slow
def test_killed_run_resumes_under_ray(files, sequential, killer, local_ray, tmp_path, capsys):
    killed_then_resumed(files, sequential, killer, tmp_path, capsys, ["--launcher", "ray"])


@pytest.mark.slow
def test_killed_run_resumes_under_submitit(files, sequential, killer, tmp_path, capsys):
    launcher = {"name": "slurm", "cluster": "local", "parallel": 2}
    killed_then_resumed(files, sequential, killer, tmp_path, capsys, [], launcher=launcher)


@pytest.mark.slow
def test_a_run_of_two_processes_is_started_with_accelerate_launch(files, tmp_path, capsys):
    """processes_per_run 2 on CPU: the job is accelerate launch of 2 processes (DDP over gloo), one writer."""
    path = sweep_file(tmp_path / "s.yaml", files, tmp_path / "sw", methods=("GA+GD",))
    assert main(["sweep", "--config", str(path), "--processes-per-run", "2"]) == 0
    assert f"{max(1, (os.cpu_count() or 1) // 2)} thread(s) per process" in capsys.readouterr().out
    run = tmp_path / "sw" / NAMES[0]
    log = (tmp_path / "sw" / "logs" / f"{NAMES[0]}.log").read_text()
    assert "-m accelerate.commands.launch --num_processes 2 --multi_gpu --main_process_port 29501" in log
    assert statuses(tmp_path / "sw") == [(NAMES[0], "done")] and (run / "model").is_dir()
    steps = [json.loads(x)["step"] for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "one writer: every step logged once"
