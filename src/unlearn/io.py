"""Atomic file writes: a reader never sees a half-written result.

Every result file is written to a temporary name in the same folder, flushed, fsynced and then
renamed over the final name (``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from unlearn.errors import OutputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, with the usual permissions (the umask's:
    ``mkstemp`` alone would leave the result readable by its owner only). A full disk is one line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        raise_if_disk_full(e, path)
        raise


def raise_if_disk_full(error: BaseException, path: str | Path) -> None:
    """A full disk (or quota), or a file over the file system's or the process's size limit, while
    writing ``path`` as a one-line :class:`OutputError`."""
    if (isinstance(error, OSError) and error.errno == errno.EFBIG) or "File too large" in str(error):
        raise OutputError(
            f"{path}: the file is too large for this file system or for the process's file-size limit "
            "(ulimit -f); write to another file system or raise the limit"
        ) from error
    full = isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
    if not full and isinstance(error, Exception):
        # torch's C++ writers report a full disk as a RuntimeError ("iostream error"), safetensors as
        # its own error: look at the message and at the disk
        where = Path(path)
        while not where.exists() and where != where.parent:
            where = where.parent
        full = "No space left" in str(error) or shutil.disk_usage(where).free < (1 << 20)
    if full:
        raise OutputError(
            f"{path}: no space left on the device while writing it; free some space and run again"
        ) from error


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one line to a log. A crash can cut only the last line, which readers skip."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        fh.flush()


def open_log(path: str | Path, header: str):
    """A text log opened for appending (a job's output: every attempt kept, never a result), its
    ``header`` line written first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 (the caller closes it)
    fh.write(header.rstrip("\n") + "\n")
    fh.flush()
    return fh


def read_jsonl_log(path: str | Path) -> list[dict]:
    """Rows of a log written by :func:`append_jsonl`, ignoring a torn last line."""
    rows = []
    if not Path(path).exists():
        return rows
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def as_number(v) -> float | None:
    """A finite float, or None (null, missing, NaN, text that is not a number)."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            return None
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    return None


def write_csv_rows(path: str | Path, rows: list[dict]) -> None:
    """Rewrite a whole CSV atomically (header = union of keys in first-seen order)."""
    header: list[str] = []
    for r in rows:
        header += [k for k in r if k not in header]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_csv_rows(path: str | Path) -> list[dict]:
    if not Path(path).exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------------------ folders


def temp_dir_next_to(target: Path) -> Path:
    """A fresh folder on the same file system as ``target`` (so a rename can publish it)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the published folder should not be
    return tmp


def publish_dir(tmp: Path, target: Path, keep_marker: str | None = None) -> bool:
    """Move the finished folder ``tmp`` to ``target``; False when ``target`` already held a folder
    complete by ``keep_marker`` (a file in it), which is then kept.

    A rename onto a missing (or empty) folder is atomic. An existing folder is renamed aside first
    and deleted after, so ``target`` is only ever absent, old or new, never half-written. Its files
    get the usual permissions (the umask's; some writers make theirs private).
    """
    mask = _umask()
    for f in Path(tmp).rglob("*"):
        if f.is_file() and not f.is_symlink():
            os.chmod(f, 0o666 & ~mask)
    try:
        os.rename(tmp, target)
        return True
    except OSError:
        if not target.exists():
            raise
    if keep_marker and (target / keep_marker).is_file():
        return False
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except OSError:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return True


def json_safe(obj):
    """JSON has no NaN/inf: such values are written as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    return obj
