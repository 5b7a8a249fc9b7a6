"""A run folder: the one place that knows its file names and whether the run in it is finished.

``unlearn run`` writes into ``OUT``::

    model/             the unlearned model (Hugging Face layout, safetensors)
    adapter/           the LoRA adapter, with --lora
    config.yaml        the resolved configuration (reusable as --config)
    data.json          what was forgotten and kept (layout, sizes)
    train_log.jsonl    one row per optimiser step
    checkpoint/        the resumable state, while the run trains with --save-every
    eval_<Set>.jsonl   per-item evaluation records, one file per set
    summary.json       every metric; written last, it marks an evaluated run complete
    downstream.json    lm-eval scores, with --downstream

``unlearn eval`` writes the evaluation files and ``eval_config.yaml``; ``unlearn continual``
writes ``continual.csv`` and one run folder per task (``task_<k>``). No module imports torch here,
so reports can use it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import OutputError

MODEL = "model"
ADAPTER = "adapter"
CONFIG = "config.yaml"
DATA = "data.json"
TRAIN_LOG = "train_log.jsonl"
CHECKPOINT = "checkpoint"
SUMMARY = "summary.json"
DOWNSTREAM = "downstream.json"
EVAL_CONFIG = "eval_config.yaml"
CONTINUAL = "continual.csv"
MODEL_CONFIG = "unlearn_config.yaml"  # inside model/: the config the model was trained with

FINISHED, PARTIAL, ABSENT = "finished", "partial", "absent"


def eval_file(set_name: str) -> str:
    """``eval_Forget_Paraphrased.jsonl`` for the set "Forget Paraphrased"."""
    return f"eval_{set_name.replace(' ', '_')}.jsonl"


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

    def task(self, task_id) -> "RunDir":
        """The folder of one task of a continual run."""
        return RunDir(self.path / f"task_{task_id}")

    def read_summary(self) -> dict | None:
        import json

        try:
            return json.loads(self.summary.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    # ----------------------------------------------------------------- state

    def has_checkpoint(self) -> bool:
        from . import checkpoint

        return checkpoint.exists(self.path)

    def results(self) -> list[str]:
        """The results of an earlier run found here (a checkpoint caught between two renames included)."""
        found = [m for m in self.RESULTS if (self.path / m).exists()]
        if CHECKPOINT not in found and self.has_checkpoint():
            found.append(CHECKPOINT)
        return found

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

    # ----------------------------------------------------------------- preparing

    def prepare(self, *, resume: bool = False, overwrite: bool = False, main_process: bool = True) -> "RunDir":
        """Check the folder can take this run, and make it ready.

        A folder that already holds results is refused unless ``overwrite``; ``resume`` accepts
        one whose run stopped before its final model; ``overwrite`` starts again, removing the
        earlier results and checkpoint so that nothing of the old run can pass for the new one.
        Only the main process changes the folder (callers make the others wait).
        """
        from . import checkpoint

        existing = self.results()
        if resume:
            if overwrite:
                raise OutputError("--resume continues the run in --out and --overwrite starts it again: give one")
            finished = [m for m in existing if m not in (TRAIN_LOG, CHECKPOINT)]
            if finished:
                raise OutputError(f"{self.path}: the run there has finished ({', '.join(finished)}); nothing to "
                                  "resume (pass --overwrite to run it again)")
            if not self.has_checkpoint():
                raise OutputError(f"{self.path}: no checkpoint to resume from ({checkpoint.path(self.path)} is "
                                  "missing or incomplete; runs write one with --save-every N)")
            return self
        if existing and not overwrite:
            hint = ", --resume to continue it" if self.has_checkpoint() else ""
            raise OutputError(f"{self.path}: already holds results ({', '.join(existing)}); "
                              f"choose another --out{hint} or pass --overwrite")
        if main_process:
            self.path.mkdir(parents=True, exist_ok=True)
            if overwrite:
                checkpoint.remove(self.path)
                for name in (SUMMARY, TRAIN_LOG, CONFIG, DATA):
                    (self.path / name).unlink(missing_ok=True)
                for name in (MODEL, ADAPTER):
                    if (self.path / name).is_dir():
                        shutil.rmtree(self.path / name)
        return self
