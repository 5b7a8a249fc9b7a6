"""Resumable training state in ``OUT/checkpoint``, published atomically.

A checkpoint holds everything the rest of a run depends on, so that a run killed at any moment
and resumed ends with the same weights, bit for bit, as one that never stopped:

* ``model.safetensors``, ``optimizer.bin``, ``random_states_<rank>.pkl`` (python, numpy, torch and
  CUDA generators): written by ``accelerator.save_state``, which also knows DeepSpeed and FSDP;
* ``ref_stats.safetensors``: the reference NLLs cached before the first step (NPO, DPO). They are
  the *original* model's; recomputing them from the half-trained model on resume would be wrong;
* ``trainer_state.json``: the step, the data position (epoch and batches consumed in it; the
  order of an epoch is a function of the seed and the epoch, see :class:`unlearn.train.EpochShuffle`),
  the scheduler, the rows of ``train_log.jsonl`` so far, and the settings the run depends on
  (a resume with other settings is refused). It is written last: a folder without it is unused.

Publication: the state is written into ``.checkpoint.tmp`` and fsynced; the previous checkpoint
is renamed to ``.checkpoint.old``, the new one renamed into place, and the old one deleted. A kill
between the two renames leaves no ``checkpoint`` but two complete candidates, and
:func:`recover` (called before every save and resume) puts the newest complete one back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from unlearn.errors import OutputError
from unlearn.io import raise_if_disk_full
from unlearn.rundir import CHECKPOINT
from unlearn.rundir import CHECKPOINT_STATE as STATE
from unlearn.rundir import checkpoint_complete as _complete
from unlearn.rundir import checkpoint_exists as exists  # noqa: F401 (part of this module's API)
from unlearn.rundir import checkpoint_new as _tmp
from unlearn.rundir import checkpoint_old as _old
from unlearn.rundir import checkpoint_path as path

MANIFEST = "manifest.json"  # every file of the checkpoint with its size and SHA-256
REF_STATS = "ref_stats.safetensors"
VERSION = 2  # 2: the state counts micro-steps across epochs (accumulation spans epoch boundaries)

log = logging.getLogger("unlearn")


def _trash(out_dir) -> Path:
    return Path(out_dir) / f".{CHECKPOINT}.trash"


def recover(out_dir: str | os.PathLike) -> None:
    """Finish or undo a publication that a kill interrupted; drop half-written folders.

    Only the main process may call it (it renames and deletes).
    """
    final, tmp, old = path(out_dir), _tmp(out_dir), _old(out_dir)
    if not _complete(final):
        for candidate in (tmp, old):  # the newer first
            if _complete(candidate):
                if final.exists():
                    _discard(final, out_dir)
                os.rename(candidate, final)
                log.info("recovered the checkpoint of an interrupted save in %s", final)
                break
    for leftover in (tmp, old, _trash(out_dir)):
        if leftover.exists():
            shutil.rmtree(leftover, ignore_errors=True)


def _discard(folder: Path, out_dir) -> None:
    # Renamed away first: a folder deleted half-way could otherwise keep its state file and look complete.
    trash = _trash(out_dir)
    if trash.exists():
        shutil.rmtree(trash)
    os.rename(folder, trash)
    shutil.rmtree(trash)


def step_of(out_dir: str | os.PathLike) -> int | None:
    """The optimiser step of the checkpoint in ``out_dir``, or None without one."""
    for folder in (path(out_dir), _tmp(out_dir), _old(out_dir)):
        if _complete(folder):
            step = _read_json(folder / STATE).get("step")
            if not isinstance(step, int):
                raise OutputError(
                    f"{folder / STATE}: has no step; the checkpoint is damaged. Start again with --overwrite"
                )
            return step
    return None


def remove(out_dir: str | os.PathLike) -> None:
    """Delete the checkpoint (after the final model is safely saved, or to start again)."""
    for folder in (path(out_dir), _tmp(out_dir), _old(out_dir)):
        if folder.exists():
            _discard(folder, out_dir)


@contextlib.contextmanager
def _quiet_accelerate():
    """accelerate logs every file it writes at INFO, and warns that tied weights are stored once
    (expected: they are tied again on loading)."""
    loggers = {name: logging.getLogger(name) for name in ("accelerate", "accelerate.utils.other")}
    levels = {name: lg.level for name, lg in loggers.items()}
    loggers["accelerate"].setLevel(logging.WARNING)
    loggers["accelerate.utils.other"].setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, lg in loggers.items():
            lg.setLevel(levels[name])


def _fsync_tree(folder: Path) -> None:
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open folders; renames there are durable enough
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(out_dir: str | os.PathLike, accelerator, state: dict, ref_stats: dict | None) -> Path:
    """Write a checkpoint of the prepared objects of ``accelerator`` plus ``state`` (JSON).

    Every process must call it (each saves its own RNG states); only the main process publishes.
    """
    out_dir = Path(out_dir)
    tmp = _tmp(out_dir)
    if accelerator.is_main_process:
        recover(out_dir)  # also removes a stale .checkpoint.tmp
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    try:
        with _quiet_accelerate():
            accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _publish(out_dir, tmp, state, ref_stats, save_file)
    except Exception as e:  # (re-raised unless the disk is full)
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise_if_disk_full(e, path(out_dir))
        raise
    accelerator.wait_for_everyone()
    return path(out_dir)


def _manifest(folder: Path) -> dict:
    out = {}
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in (STATE, MANIFEST)):
        digest = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        out[str(f.relative_to(folder))] = {"bytes": f.stat().st_size, "sha256": digest.hexdigest()}
    return out


def _publish(out_dir: Path, tmp: Path, state: dict, ref_stats: dict | None, save_file) -> None:
    """Main process: add the reference statistics, the manifest and the state (last: it marks the
    folder complete) to ``tmp``, then rename it into place."""
    if ref_stats:
        save_file({k: v.detach().cpu().contiguous() for k, v in ref_stats.items()}, str(tmp / REF_STATS))
    (tmp / MANIFEST).write_text(json.dumps(_manifest(tmp), indent=1), encoding="utf-8")
    _fsync_tree(tmp)
    body = json.dumps({"version": VERSION, **state}, indent=1, allow_nan=False)
    with open(tmp / STATE, "w", encoding="utf-8") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    final, old = path(out_dir), _old(out_dir)
    if final.exists():
        os.rename(final, old)
    os.rename(tmp, final)
    _fsync_dir(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def load(out_dir: str | os.PathLike) -> tuple[dict, dict | None]:
    """``(state, ref_stats)`` of the checkpoint in ``out_dir`` (model and optimiser are loaded by
    ``accelerator.load_state(path(out_dir))``)."""
    folder = path(out_dir)
    if not _complete(folder):
        raise RuntimeError(f"{out_dir}: no checkpoint to resume from (call recover() first)")
    state = _read_json(folder / STATE)
    if state.get("version") != VERSION:
        raise OutputError(
            f"{folder}: checkpoint format {state.get('version')} is not {VERSION}; "
            "it was written by another version of unlearn"
        )
    verify(folder)
    ref_stats = load_file(str(folder / REF_STATS)) if (folder / REF_STATS).is_file() else None
    if ref_stats is not None:
        ref_stats = {k: v if v.dtype == torch.float64 else v.to(torch.float32) for k, v in ref_stats.items()}
    return state, ref_stats


def verify(folder: Path) -> None:
    """Refuse a checkpoint whose files are not those it was written with (a missing random-state
    file or a truncated optimizer.bin would resume, but no longer exactly)."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise OutputError(
            f"{folder}: the checkpoint has no {MANIFEST}; it cannot be checked, start again with --overwrite"
        )
    want = _read_json(manifest_path)
    try:
        got = _manifest(folder)
    except OSError as e:
        raise OutputError(
            f"{e.filename}: cannot be read ({e.strerror}); the checkpoint would not resume exactly. Start again "
            "with --overwrite"
        ) from None
    for name in sorted(set(want) | set(got)):
        if name not in got:
            problem = "is missing"
        elif name not in want:
            problem = "was not written with it"
        elif got[name] != want[name]:
            problem = f"has changed ({got[name]['bytes']} bytes, {want[name]['bytes']} written)"
        else:
            continue
        raise OutputError(
            f"{folder / name}: {problem}; the checkpoint is damaged and would not resume exactly. "
            "Start again with --overwrite"
        )


def _read_json(file: Path) -> dict:
    """A checkpoint's JSON file, or a one-line error naming it (garbled, unreadable)."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise OutputError(
            f"{file}: cannot be read ({getattr(e, 'strerror', None) or e}); the checkpoint is damaged. Start again "
            "with --overwrite"
        ) from None
    if not isinstance(data, dict):
        raise OutputError(f"{file}: is not a JSON object; the checkpoint is damaged. Start again with --overwrite")
    return data


def restore(out_dir: str | os.PathLike, accelerator) -> None:
    """Load the checkpoint's weights, optimiser and random states into the prepared objects. The
    random states must be there and readable (accelerate would go on without them, inexactly)."""
    folder = path(out_dir)
    rng = folder / f"random_states_{accelerator.process_index}.pkl"
    try:
        with open(rng, "rb") as fh:
            torch.load(fh, weights_only=False)
    except Exception as e:
        raise OutputError(
            f"{rng}: the random state of this process cannot be read ({getattr(e, 'strerror', None) or e}); "
            "the run would not resume exactly. Start again with --overwrite"
        ) from None
    try:
        with _quiet_accelerate():
            accelerator.load_state(str(folder))
    except Exception as e:
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise OutputError(
            f"{folder}: the checkpoint cannot be loaded ({first}); it is damaged. Start again with --overwrite"
        ) from None
