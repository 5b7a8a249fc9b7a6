"""The one rule for writing into a folder: a command replaces only what this project created there.

Every command that writes into an output folder goes through :func:`claim` before it writes:

- a folder the command creates is recorded as ours (``.unlearn-owned.json``: ``"created": true``), and so
  is everything later written inside it;
- in a folder that already existed, each name (or ``fnmatch`` pattern) the command writes is recorded
  in that file before it is written; a file or folder of the user's that has one of those names is
  refused, with or without ``--overwrite``, before anything is touched;
- ``--overwrite`` replaces only entries recorded as ours, and never by deleting them at once: they are
  moved aside (``.previous-*``) and deleted once the new results are complete (:func:`discard_aside`);
- an input of the command (model, data, reference, holdout, relearn set...) that lies inside an entry to
  be replaced (or is the folder itself, when the whole folder would be replaced) is refused.

No module imports torch here.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from unlearn.errors import OutputError
from unlearn.io import atomic_write_json

log = logging.getLogger("unlearn")

OWNED = ".unlearn-owned.json"  # what this project created in the folder
PREVIOUS = ".previous-"  # earlier results moved aside by --overwrite until the new ones are complete


def _read(folder: Path) -> dict:
    try:
        data = json.loads((folder / OWNED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def created_here(folder: str | os.PathLike) -> bool:
    """The folder itself was created by a command of this project."""
    return _read(Path(folder)).get("created") is True


def is_ours(folder: str | os.PathLike, name: str) -> bool:
    """``folder/name`` was (or will be) written by a command of this project."""
    owned = _read(Path(folder))
    if owned.get("created") is True:
        return True
    return any(fnmatch.fnmatchcase(name, p) for p in owned.get("names", []) if isinstance(p, str))


def make_folder(folder: str | os.PathLike) -> bool:
    """Create ``folder`` (and its parents) if needed; returns whether it was created now, recording it
    as ours. A path that is a file, or a folder that cannot be written, is a one-line error."""
    folder = Path(folder)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{folder}: is a file, not a folder; choose another --out") from None
    except OSError as e:
        raise OutputError(f"{folder}: cannot create the output folder ({e.strerror}); choose another --out") from None
    if not folder.is_dir():
        raise OutputError(f"{folder}: is a file, not a folder; choose another --out")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{folder}: the output folder is not writable; choose another --out")
    if created:
        atomic_write_json(folder / OWNED, {"created": True, "names": []})
    return created


def record(folder: str | os.PathLike, names: Iterable[str]) -> None:
    """Record ``names`` (file names or patterns) as written by this project in ``folder``."""
    folder = Path(folder)
    owned = _read(folder)
    known = [p for p in owned.get("names", []) if isinstance(p, str)]
    new = [n for n in names if n not in known]
    if new or not (folder / OWNED).exists():
        atomic_write_json(folder / OWNED, {"created": owned.get("created") is True, "names": known + new})


def present(folder: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """The entries of ``folder`` that match ``names`` (names or patterns), in a stable order."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found: list[Path] = []
    entries = sorted(p.name for p in folder.iterdir())
    for pattern in names:
        for name in entries if any(c in pattern for c in "*?[") else [pattern]:
            p = folder / name
            if fnmatch.fnmatchcase(name, pattern) and (p.exists() or p.is_symlink()) and p not in found:
                found.append(p)
    return found


def refuse_foreign(folder: str | os.PathLike, entries: Iterable[Path]) -> None:
    """A one-line error naming the first entry of ``folder`` that this project did not write."""
    folder = Path(folder)
    for entry in entries:
        if not is_ours(folder, entry.name):
            raise OutputError(
                f"{entry}: was not written by unlearn (it is not recorded in {folder / OWNED}) and would be "
                "replaced; unlearn never replaces files it did not create: move it or choose another --out"
            )


def refuse_inputs_inside(folder: str | os.PathLike, entries: Iterable[Path], inputs: dict | None) -> None:
    """Refuse to replace anything an input path points into (``--model OUT/model --overwrite``)."""
    entries = list(entries)
    for flag, value in (inputs or {}).items():
        for one in value if isinstance(value, (list, tuple)) else [value]:
            if not one or not isinstance(one, (str, os.PathLike)) or not Path(one).exists():
                continue
            where = Path(one).resolve()
            for entry in entries:
                target = entry.resolve()
                if where == target or target in where.parents:
                    raise OutputError(
                        f"{folder}: --overwrite would replace {entry}, which {flag} points into ({one}); "
                        "choose another --out"
                    )


def claim(
    folder: str | os.PathLike,
    names: Iterable[str],
    *,
    overwrite: bool = False,
    inputs: dict | None = None,
    keep: Iterable[str] = (),
    what: str = "results",
    hint: str = "",
) -> Path | None:
    """Make ``folder`` ready for a command that writes ``names`` there (the rule of this module).

    Entries already there that match ``names`` are refused unless ``overwrite`` (then moved aside,
    once checked to be ours and to hold no input); a user's entry with one of those names is refused
    always. ``keep`` names entries the command continues from (``--resume``): they are left as they are.
    Returns the folder the earlier results were moved to, or ``None``.
    """
    folder = Path(folder)
    names = list(names)
    make_folder(folder)
    kept = set(keep)
    found = present(folder, names)
    refuse_foreign(folder, found)
    found = [p for p in found if not any(fnmatch.fnmatchcase(p.name, k) for k in kept)]
    aside = None
    if found:
        if not overwrite:
            raise OutputError(
                f"{folder}: already holds {what} ({', '.join(p.name for p in found)}); choose another --out"
                f"{hint} or pass --overwrite"
            )
        refuse_inputs_inside(folder, found, inputs)
        aside = move_aside(folder, found)
    record(folder, names)
    return aside


def move_aside(folder: str | os.PathLike, entries: Iterable[Path]) -> Path | None:
    """Move ``entries`` (ours, checked by the caller) into a new ``.previous-*`` folder of ``folder``."""
    folder = Path(folder)
    entries = list(entries)
    if not entries:
        return None
    aside = folder / f"{PREVIOUS}{uuid.uuid4().hex[:8]}"
    aside.mkdir()
    for entry in entries:
        os.rename(entry, aside / entry.name)
    log.info("moved the earlier results of %s aside to %s until the new ones are complete", folder, aside)
    return aside


def discard_aside(folder: str | os.PathLike) -> None:
    """Delete what :func:`move_aside` put aside in ``folder``: the new results are complete."""
    for aside in Path(folder).glob(f"{PREVIOUS}*"):
        shutil.rmtree(aside, ignore_errors=True)


def remove_if_empty(folder: str | os.PathLike) -> None:
    """Remove a folder this project created and left with nothing but its own record."""
    folder = Path(folder)
    if folder.is_dir() and created_here(folder) and all(p.name == OWNED for p in folder.iterdir()):
        (folder / OWNED).unlink(missing_ok=True)
        folder.rmdir()
