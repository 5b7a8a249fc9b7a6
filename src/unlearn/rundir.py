"""A run folder: the one place that knows its file names and whether the run in it is finished.

``unlearn run`` writes into ``OUT``::

    model/             the unlearned model (Hugging Face layout, safetensors)
    adapter/           the LoRA adapter, with --lora
    config.yaml        the resolved configuration (reusable as --config)
    data.json          what was forgotten and kept (layout, sizes)
    train_log.jsonl    one row per optimiser step
    eval_log.jsonl     one row per evaluation while unlearning, with --eval-every (kept.json: --keep best)
    checkpoint/        the resumable state, while the run trains with --save-every
    eval_<Set>.jsonl   per-item evaluation records, one file per set
    summary.json       every metric; written last, it marks an evaluated run complete
    downstream.json    lm-eval scores, with --downstream
    audit/             the attacks on the saved model, with --audit (audit.json, audit.png)

``unlearn eval`` writes the evaluation files and ``eval_config.yaml``; ``unlearn continual``
writes ``continual.csv`` and one run folder per task (``task_<k>``). No module imports torch here,
so reports can use it.
"""

from __future__ import annotations

import contextlib

try:
    import fcntl
except ImportError:  # Windows: the pid check alone
    fcntl = None
import json
import logging
import os
import re
import shutil
import socket
import time
from pathlib import Path

from unlearn import outputs
from unlearn.errors import OutputError

log = logging.getLogger("unlearn")

MODEL = "model"
ADAPTER = "adapter"
CONFIG = "config.yaml"
DATA = "data.json"
TRAIN_LOG = "train_log.jsonl"
CHECKPOINT = "checkpoint"
SUMMARY = "summary.json"
BEFORE = "before"  # the evaluation of the model before unlearning (the verdict compares with it)
INTERVALS = "intervals.json"  # each summary value with its 95% interval (unlearn.evaluation.intervals)
DOWNSTREAM = "downstream.json"
EVAL_CONFIG = "eval_config.yaml"
CONTINUAL = "continual.csv"
MODEL_CONFIG = "unlearn_config.yaml"  # inside model/: the config the model was trained with
LOCK = ".unlearn.lock"
PREVIOUS = outputs.PREVIOUS  # earlier results moved aside by --overwrite until the new ones are complete
AUDIT = "audit"  # unlearn run --audit: the audit of the saved model (unlearn.audit)
EVAL_LOG = "eval_log.jsonl"  # --eval-every: one row per evaluation while unlearning
KEPT = "kept.json"  # --keep best: the step whose weights were kept
RUN_RESULTS = (
    MODEL,
    ADAPTER,
    CHECKPOINT,
    SUMMARY,
    INTERVALS,
    BEFORE,
    TRAIN_LOG,
    CONFIG,
    DATA,
    DOWNSTREAM,
    EVAL_CONFIG,
    AUDIT,
    EVAL_LOG,
    KEPT,
)
EVAL_RESULTS = (SUMMARY, INTERVALS, EVAL_CONFIG, DOWNSTREAM)

FINISHED, PARTIAL, ABSENT = "finished", "partial", "absent"


def eval_file(set_name: str) -> str:
    """``eval_Forget_Paraphrased.jsonl`` for the set "Forget Paraphrased"."""
    return f"eval_{set_name.replace(' ', '_')}.jsonl"


# The checkpoint's folders, as far as a run folder needs to know them (unlearn.checkpoint writes them).
CHECKPOINT_STATE = "trainer_state.json"  # written last: a folder holding it is complete


def checkpoint_path(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / CHECKPOINT


def checkpoint_new(out_dir) -> Path:
    """Where a checkpoint is written before it replaces the last one."""
    return Path(out_dir) / f".{CHECKPOINT}.tmp"


def checkpoint_old(out_dir) -> Path:
    """Where the last checkpoint waits while a new one replaces it."""
    return Path(out_dir) / f".{CHECKPOINT}.old"


def checkpoint_complete(folder: Path) -> bool:
    return (folder / CHECKPOINT_STATE).is_file()


def checkpoint_exists(out_dir: str | os.PathLike) -> bool:
    """True when ``out_dir`` holds a complete checkpoint to resume from (read-only)."""
    return any(
        checkpoint_complete(f) for f in (checkpoint_path(out_dir), checkpoint_new(out_dir), checkpoint_old(out_dir))
    )


class RunDir:
    """The output folder of one run."""

    RESULTS = (MODEL, SUMMARY, TRAIN_LOG, CHECKPOINT)  # what an earlier run leaves behind

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    model = property(lambda self: self.path / MODEL)
    adapter = property(lambda self: self.path / ADAPTER)
    config = property(lambda self: self.path / CONFIG)
    data = property(lambda self: self.path / DATA)
    train_log = property(lambda self: self.path / TRAIN_LOG)
    summary = property(lambda self: self.path / SUMMARY)
    downstream = property(lambda self: self.path / DOWNSTREAM)
    eval_config = property(lambda self: self.path / EVAL_CONFIG)

    def eval_file(self, set_name: str) -> Path:
        return self.path / eval_file(set_name)

    def task(self, task_id) -> RunDir:
        """The folder of one task of a continual run."""
        return RunDir(self.path / f"task_{task_id}")

    def read_summary(self) -> dict | None:
        try:
            return json.loads(self.summary.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    # ----------------------------------------------------------------- state

    def has_checkpoint(self) -> bool:
        return checkpoint_exists(self.path)

    def results(self) -> list[str]:
        """The results of an earlier run found here (a checkpoint caught between two renames included)."""
        found = [m for m in self.RESULTS if (self.path / m).exists()]
        if CHECKPOINT not in found and self.has_checkpoint():
            found.append(CHECKPOINT)
        return found

    @property
    def audited(self) -> bool:
        return (self.path / AUDIT / "audit.json").is_file()

    def status(self, evaluated: bool = True, downstream: bool = False) -> str:
        """``finished``: the run's last output is there (``summary.json`` when it is evaluated, else
        the model and its config; plus ``downstream.json`` when it has downstream tasks);
        ``partial``: it started and stopped (see :meth:`resumable`); ``absent``: nothing of it."""
        done = self.summary.is_file() if evaluated else (self.model.is_dir() and self.config.is_file())
        if done and (not downstream or self.downstream.is_file()):
            return FINISHED
        return PARTIAL if self.results() or self.config.exists() else ABSENT

    def resumable(self) -> bool:
        """The run stopped before its final model and left a checkpoint: ``--resume`` continues it."""
        return self.has_checkpoint() and not self.model.exists()

    # ----------------------------------------------------------------- locking

    @contextlib.contextmanager
    def locked(self, main_process: bool = True):
        """Hold the folder's lock (``.unlearn.lock``: pid, host, start) while a command writes here.

        A second command on the same folder is refused at once, naming the holder. The holder keeps
        the lock file open under an exclusive ``flock``: a lock file nobody holds (its process died, or
        it is empty or garbled) is stale and is taken over, with a warning. Where the file system has
        no ``flock``, a lock of a process of this host that no longer runs is stale. A folder the
        command created and left empty (it failed before writing) is removed again. Only the main
        process locks when several run the command.
        """
        if not main_process:
            yield self
            return
        outputs.make_folder(self.path)
        lock = self.path / LOCK
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        held = None
        while held is None:
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
            except FileExistsError:
                holder = _read_lock(lock)
                if _stale(lock, holder, mine["host"]):
                    log.warning(
                        "%s: taking over a stale lock (%s), which no running process holds",
                        self.path,
                        f"process {holder['pid']}" if holder.get("pid") else "unreadable",
                    )
                    lock.unlink(missing_ok=True)
                    continue
                who = (
                    f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}"
                    if holder.get("pid")
                    else "a running process holds its lock file"
                )
                raise OutputError(
                    f"{self.path}: another unlearn command is writing here ({who}); wait for it or choose another "
                    f"--out (if it is not running any more, delete {lock})"
                ) from None
            except OSError as e:
                raise OutputError(
                    f"{self.path}: cannot write the output folder ({e.strerror}); choose another --out"
                ) from None
            held = os.fdopen(fd, "w")
            _flock(held)
            json.dump(mine, held)
            held.flush()
        try:
            yield self
        finally:
            if _read_lock(lock).get("pid") == mine["pid"]:
                lock.unlink(missing_ok=True)
            held.close()
            outputs.remove_if_empty(self.path)

    # ----------------------------------------------------------------- preparing

    def result_entries(self, scope: str = "run") -> list[Path]:
        """What an earlier run (``scope="run"``) or evaluation (``"eval"``) left here."""
        return outputs.present(self.path, self.names(scope))

    def _clean_leftovers(self, checkpoints: bool = True) -> None:
        """Temporary files and folders of a writer of ours that was killed (never a result, never a
        file of the user's: only names derived from ours, in a folder we write into). A resumed run
        keeps the checkpoint's own (``checkpoint.recover`` sorts those out)."""
        if not (self.path / outputs.OWNED).exists():
            return
        pattern = r"^\.(model|adapter)\.tmp-|^\.(.+?)\.[^.]+\.tmp$"
        if checkpoints:  # (a resumed run keeps them, and --keep best's .best-* weights)
            pattern += r"|^\.checkpoint\.trash$|^\.checkpoint\.tmp$|^\.best-"
        for p in self.path.glob(".*"):
            m = re.match(pattern, p.name)
            if not m or (m.group(2) and not outputs.is_ours(self.path, m.group(2))):
                continue
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    def prepare(
        self,
        *,
        resume: bool = False,
        overwrite: bool = False,
        main_process: bool = True,
        evaluated: bool = False,
        inputs: dict[str, str | None] | None = None,
        scope: str = "run",
    ) -> str:
        """Check the folder can take this run and make it ready; returns what the run does:
        ``new``, ``resume`` (train on from the checkpoint) or ``evaluate`` (the model is saved,
        only its evaluation is missing).

        A folder that already holds results is refused unless ``overwrite``, which moves the earlier
        results aside (``.previous-*``) and deletes them once the new run is complete
        (:meth:`discard_previous`); nothing an input path points into is ever replaced. Only the main
        process changes the folder (callers make the others wait); call it holding :meth:`locked`.
        """
        existing = self.results() if scope == "run" else [SUMMARY] if self.summary.exists() else []
        outputs.refuse_foreign(self.path, self.result_entries(scope))
        if resume and main_process and self.path.is_dir():
            self._clean_leftovers(checkpoints=False)  # a save the kill interrupted (.model.tmp-*)
        if resume:
            if overwrite:
                raise OutputError("--resume continues the run in --out and --overwrite starts it again: give one")
            if self.model.is_dir() and self.config.is_file() and evaluated and not self.summary.is_file():
                return "evaluate"
            finished = [m for m in existing if m not in (TRAIN_LOG, CHECKPOINT)]
            if finished:
                raise OutputError(
                    f"{self.path}: the run there has finished ({', '.join(finished)}); nothing to "
                    "resume (pass --overwrite to run it again)"
                )
            if not self.has_checkpoint():
                raise OutputError(
                    f"{self.path}: no checkpoint to resume from ({checkpoint_path(self.path)} is "
                    "missing or incomplete; runs write one with --save-every N)"
                )
            return "resume"
        if existing and not overwrite:
            if scope == "run" and evaluated and self.model.is_dir() and not self.summary.is_file():
                hint = ", --resume to finish its evaluation"
            else:
                hint = ", --resume to continue it" if scope == "run" and self.has_checkpoint() else ""
            raise OutputError(
                f"{self.path}: already holds results ({', '.join(existing)}); choose another "
                f"--out{hint} or pass --overwrite"
            )
        if main_process:
            outputs.make_folder(self.path)
            self._clean_leftovers()
            entries = self.result_entries(scope)
            if overwrite and entries:
                outputs.refuse_inputs_inside(self.path, entries, inputs)
                outputs.move_aside(self.path, entries)
            outputs.record(self.path, self.names(scope))
        return "new"

    @staticmethod
    def names(scope: str = "run") -> list[str]:
        """Every name a run (or an evaluation) writes in its folder, patterns included."""
        names = list(EVAL_RESULTS if scope == "eval" else RUN_RESULTS) + ["eval_*.jsonl", "TOFU_*.json", "MUSE_*.json"]
        if scope != "eval":
            names += [f".{CHECKPOINT}.tmp", f".{CHECKPOINT}.old"]
        return names

    def discard_previous(self) -> None:
        """Delete the earlier results ``--overwrite`` moved aside: the new ones are complete."""
        outputs.discard_aside(self.path)


def _read_lock(lock: Path) -> dict:
    try:
        return json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _flock(fh) -> bool:
    """Take the lock file's exclusive ``flock`` without waiting; False when another process holds it
    (True, too, where the file system has none: then the pid check decides)."""
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def _stale(lock: Path, holder: dict, host: str) -> bool:
    """Nobody holds ``lock``: no process holds its ``flock`` and the process it names (if it can be
    read) is gone. A lock of another host is never judged from here."""
    if fcntl is not None:
        try:
            with open(lock) as fh:
                free = _flock(fh)  # released when the file is closed
        except FileNotFoundError:
            return True
        except OSError:
            free = False
        if not free:
            return False
    if not holder.get("pid"):
        try:  # a lock being written this instant is not garbage: look again in a moment
            young = time.time() - lock.stat().st_mtime < 2
        except OSError:
            return True
        if young:
            time.sleep(2)
            holder = _read_lock(lock)
        if not holder.get("pid"):
            return fcntl is not None  # empty or garbled, and nobody holds it
    return holder.get("host") == host and not _alive(holder.get("pid"))


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True
    return True
