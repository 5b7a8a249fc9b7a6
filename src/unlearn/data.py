"""Loading forget / retain sets and turning them into named training batches.

Layouts understood by :func:`load_unlearning_data`:

* TOFU folder (``forget01.json`` … ``retain90.json``, as in the official release): the forget set
  is one task of a split; the retain set is ``retain(100 - 10*XX)`` plus the forget rows of the
  tasks not (yet) unlearned (docs/methods.md §3).
* real-world folder (``forget.json`` + ``neighbor.json``): forget every row (or one task), retain
  the neighbours.
* ``locuslab/TOFU`` on the Hugging Face hub: ``forgetXX`` against ``retain(100-XX)`` (the hub copy
  has no continual tasks).
* your own JSON-lines files (``--forget``/``--retain``).

Every bad record is reported as ``file:line: field 'x' ...`` before any model is loaded.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from unlearn import hub
from unlearn.config import as_int
from unlearn.encoding import IGNORE_INDEX, Encoded, chunk_texts, encode_pair, encode_qa, make_collate  # noqa: F401 (re-exported)
from unlearn.errors import DataError
from unlearn.refusals import REFUSALS

SPLITS = {"forget01": "retain90", "forget05": "retain50", "forget10": "retain10"}
HUB_RETAIN = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
DEFAULT_MAX_LENGTH = 500  # the official TOFU length


# --------------------------------------------------------------------------- reading records
MAX_FILE_ENV = "UNLEARN_MAX_FILE_MIB"  # the largest data file read (default 1024 MiB)


def max_file_bytes() -> int:
    try:
        return int(float(os.environ.get(MAX_FILE_ENV, "1024")) * 2**20)
    except ValueError:
        raise DataError(f"{MAX_FILE_ENV}: expected a number of MiB, got {os.environ[MAX_FILE_ENV]!r}") from None


def read_records(path: str | Path, required: Sequence[str] = ("question", "answer")) -> list[dict]:
    """Read a JSON-lines file (or one JSON array) of objects with string fields ``required``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    size, limit = path.stat().st_size, max_file_bytes()
    if size > limit:
        raise DataError(
            f"{path}: {size / 2**20:,.0f} MiB is more than a data file may hold ({limit / 2**20:,.0f} MiB: it is read "
            f"whole into memory); split it, or raise the limit with {MAX_FILE_ENV}=<MiB>"
        )
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: the file is empty")
    if raw.lstrip()[:1] == b"[":
        text = _decode(path, raw, 1)
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        except RecursionError:
            raise DataError(f"{path}: JSON nested too deeply") from None
        numbered = list(enumerate(items, start=1))
        where = "item"
    else:
        numbered = []
        for lineno, line in enumerate(raw.split(b"\n"), start=1):
            if not line.strip():
                continue
            text = _decode(path, line, lineno)
            try:
                numbered.append((lineno, json.loads(text)))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            except RecursionError:
                raise DataError(f"{path}:{lineno}: JSON nested too deeply") from None
        where = "line"
    rows = []
    for n, obj in numbered:
        at = f"{path}:{n}" if where == "line" else f"{path}: item {n}"
        if not isinstance(obj, dict):
            raise DataError(f"{at}: expected a JSON object, got {type(obj).__name__}")
        for key in required:
            if key not in obj:
                raise DataError(f"{at}: missing field '{key}'")
            if not isinstance(obj[key], str):
                raise DataError(f"{at}: field '{key}' must be a string, got {type(obj[key]).__name__}")
        obj = dict(obj)
        obj["_source"] = at
        rows.append(obj)
    if not rows:
        raise DataError(f"{path}: no records")
    return rows


def _decode(path: Path, raw: bytes, lineno: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}:{lineno}: not UTF-8 text (byte {e.start})") from None


def read_refusals(path: str | Path | None) -> list[str]:
    """Refusal sentences, one per line; the built-in list when ``path`` is None."""
    if path is None:
        return list(REFUSALS)
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    lines = [ln.strip() for ln in _decode(path, path.read_bytes(), 1).splitlines() if ln.strip()]
    if not lines:
        raise DataError(f"{path}: the file is empty")
    return lines


# --------------------------------------------------------------------------- layouts
@dataclass
class UnlearningData:
    forget: list[dict]
    retain: list[dict]
    layout: str  # "tofu" | "real_world" | "hub" | "files" | "muse"
    source: str
    info: dict = field(default_factory=dict)

    @property
    def is_text(self) -> bool:
        """Raw text (rows with ``text``, no question): unlearned as MUSE does, in chunks."""
        return is_text_rows(self.forget)


def is_text_rows(rows: list[dict]) -> bool:
    return bool(rows) and "text" in rows[0] and "question" not in rows[0]


def row_text(row: dict) -> str:
    """The text of a row: its raw ``text``, or question and answer."""
    return row["text"] if "question" not in row and "text" in row else row["question"] + " " + row["answer"]


TEXT_PARTS = ("forget", "retain")
"""The batch parts raw text has: the forget and retain chunks (no question to refuse or mismatch)."""
TEXT_METHODS = "GA, NPO, SimNPO, ME, RMU, WGA, SatImp, UNDIAL, CE-U or TV, with GD or KL"
"""The methods whose parts raw text has, as the error messages name them."""
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w.-]+)?$")
GATED = {
    "cais/wmdp-bio-forget-corpus": "request access on https://huggingface.co/datasets/cais/wmdp-bio-forget-corpus, "
    "log in with `huggingface-cli login`, then pass it again (or save it as JSON lines with a text field and "
    "pass the file)"
}


def read_rows(spec: str | Path) -> list[dict]:
    """Your own forget or retain rows: a JSON-lines file of ``question``/``answer`` pairs or of raw
    ``text``, or a hub data set ``owner/name[:config]`` (its train split) with a ``text`` field."""
    path = Path(spec)
    if (
        not path.exists()
        and HUB_ID.match(str(spec))
        and not path.parent.exists()
        and path.suffix.lower() not in (".json", ".jsonl", ".txt", ".csv", ".parquet")
    ):
        return _hub_text_rows(str(spec))
    rows = read_records(path, required=())  # read once; the fields the first row implies are checked on all
    text = "text" in rows[0] and "question" not in rows[0]
    for row in rows:
        for key in ("text",) if text else ("question", "answer"):
            if key not in row:
                raise DataError(f"{row['_source']}: missing field '{key}'")
            if not isinstance(row[key], str):
                raise DataError(f"{row['_source']}: field '{key}' must be a string, got {type(row[key]).__name__}")
    return rows


def _hub_text_rows(spec: str) -> list[dict]:
    name, _, config = spec.partition(":")
    try:
        return hub_records(name, config or None, required=("text",), label=spec)
    except DataError:
        raise
    except Exception as e:  # the hub's own errors: gated, missing, offline
        hint = GATED.get(name, "check the name, your network and `huggingface-cli login` for gated sets")
        raise DataError(
            f"{spec}: could not load it from the hub ({type(e).__name__}: {str(e).splitlines()[0][:200]}); {hint}"
        ) from None


def detect_layout(data: str | Path) -> str:
    path = Path(data)
    if path.is_file():
        raise DataError(f"{path}: a file, not a data folder (give the folder that holds it, or --forget FILE)")
    if path.is_dir():
        if (path / "forget.json").exists() and (path / "neighbor.json").exists():
            return "real_world"
        if any((path / f"{s}.json").exists() for s in SPLITS):
            return "tofu"
        raise DataError(
            f"{path}: neither a TOFU folder (forget01.json ...) nor a real-world folder (forget.json + neighbor.json)"
        )
    if str(data) == "locuslab/TOFU":
        return "hub"
    raise DataError(f"{data}: data folder not found")


SCENARIO_MAX_LENGTH = {"real_world": 300}  # official real_world_unlearn.py (forget.py: 500)
IDK_FILE = "idontknow.jsonl"  # the official refusals, beside the official data folders


def task_of(row: dict) -> int:
    """A row's ``task_id`` as an integer, or a clear error naming the row."""
    value = row.get("task_id")
    try:
        return as_int(value)
    except (TypeError, ValueError):
        raise DataError(f"{row.get('_source', 'a row')}: field 'task_id' must be an integer, got {value!r}") from None


def task_ids_of(rows: list[dict]) -> list[int]:
    return sorted({task_of(r) for r in rows if r.get("task_id") is not None})


def select_task(rows: list[dict], task_id: int, path: Path) -> list[dict]:
    """The rows of one task; a clear error when a row has no task id or the task has no rows."""
    for r in rows:
        if r.get("task_id") is None:
            raise DataError(f"{r['_source']}: missing field 'task_id'")
    chosen = [r for r in rows if task_of(r) == int(task_id)]
    if not chosen:
        raise DataError(f"{path}: no rows with task_id {task_id} (tasks: {', '.join(map(str, task_ids_of(rows)))})")
    return chosen


def load_tofu(data_dir: str | Path, split: str, task_id: int, unlearned: Sequence[int] = ()) -> UnlearningData:
    """Forget = the task's rows; retain = retain(100-10*XX) + rows of tasks not unlearned yet."""
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}' (valid: {', '.join(SPLITS)})")
    data_dir = Path(data_dir)
    forget_path = data_dir / f"{split}.json"
    rows = read_records(forget_path)
    forget = select_task(rows, task_id, forget_path)
    done = {int(t) for t in unlearned} | {int(task_id)}
    others = [r for r in rows if task_of(r) not in done]
    retain = read_records(data_dir / f"{SPLITS[split]}.json") + others
    return UnlearningData(
        forget, retain, "tofu", str(data_dir), {"split": split, "task_id": int(task_id), "retain_file": SPLITS[split]}
    )


def load_real_world(data_dir: str | Path, task_id: int | None = None) -> UnlearningData:
    data_dir = Path(data_dir)
    forget = read_records(data_dir / "forget.json")
    if task_id is not None:
        forget = select_task(forget, task_id, data_dir / "forget.json")
    retain = read_records(data_dir / "neighbor.json")
    return UnlearningData(forget, retain, "real_world", str(data_dir), {"task_id": task_id})


def _hub_rows(name: str, config: str | None, split: str = "train") -> list[dict]:
    """Rows of a hub data set (network). Tests monkeypatch this function."""
    from datasets import load_dataset  # (about a second of start-up: imported when the hub is read)

    return [dict(r) for r in load_dataset(name, config, split=split)]


def hub_records(
    name: str, config: str | None, split: str = "train", required: Sequence[str] = (), label: str | None = None
) -> list[dict]:
    """Rows of a hub data set, each with its ``_source`` (``label[i]``) and the string fields
    ``required`` checked, as :func:`read_records` does for files."""
    label = label or name
    rows = hub.fetch(label, DataError, _hub_rows, name, config, split)
    for i, r in enumerate(rows):
        r["_source"] = f"{label}[{i}]"
        for key in required:
            if not isinstance(r.get(key), str):
                raise DataError(f"{r['_source']}: missing field '{key}'")
    return rows


class HubSnapshot:
    """A benchmark's hub data set read config by config: its hub id (one of ``hub_ids``) or a local
    snapshot folder in the hub layout, one JSON-lines file per config and split (``CONFIG/SPLIT.json``)."""

    hub_ids: tuple[str, ...] = ()
    name = "the benchmark"
    example = "CONFIG/SPLIT.json"

    def __init__(self, data: str | Path):
        self.data = str(data)
        self.folder = Path(self.data) if Path(self.data).is_dir() else None
        if self.folder is None and self.data not in self.hub_ids:
            raise DataError(
                f"{self.data}: {self.name} reads {' or '.join(self.hub_ids)} (hub) or a snapshot folder of their "
                f"configs ({self.example}, ...); not found"
            )

    def has(self, config: str, split: str) -> bool:
        return self.folder is None or (self.folder / config / f"{split}.json").is_file()

    def rows(self, config: str, split: str, required=("text",)) -> list[dict]:
        if self.folder is not None:
            path = self.folder / config / f"{split}.json"
            if not path.is_file():
                raise DataError(
                    f"{path}: missing; a {self.name} snapshot folder holds one JSON-lines file per config and "
                    f"split ({self.example}, ...)"
                )
            return read_records(path, required=required)
        return hub_records(self.data, config, split, required, label=f"{self.data}/{config}/{split}")


def load_hub_tofu(split: str) -> UnlearningData:
    if split not in HUB_RETAIN:
        raise DataError(f"unknown split '{split}' (valid: {', '.join(HUB_RETAIN)})")
    forget = hub_records("locuslab/TOFU", split, label="locuslab/TOFU/forget")
    retain = hub_records("locuslab/TOFU", HUB_RETAIN[split], label="locuslab/TOFU/retain")
    return UnlearningData(forget, retain, "hub", "locuslab/TOFU", {"split": split})


def load_unlearning_data(
    data: str | None,
    split: str = "forget01",
    task_id: int | None = 1,
    forget: str | None = None,
    retain: str | None = None,
    unlearned: Sequence[int] = (),
) -> UnlearningData:
    """The rows of a data folder (TOFU, real-world, ``locuslab/TOFU`` as the closer-look protocol reads
    it) or of your own ``forget``/``retain`` files."""
    if forget is not None:
        forget_rows = read_rows(forget)
        retain_rows = read_rows(retain) if retain else []
        if retain_rows and is_text_rows(forget_rows) != is_text_rows(retain_rows):
            raise DataError(
                f"{retain}: the forget rows are {'raw text' if is_text_rows(forget_rows) else 'questions'} "
                "and these are not; give both as text or both as question/answer pairs"
            )
        return UnlearningData(forget_rows, retain_rows, "files", str(forget))
    if data is None:
        raise DataError("no data: give --data FOLDER (or locuslab/TOFU) or --forget FILE [--retain FILE]")
    layout = detect_layout(data)
    if layout == "tofu":
        return load_tofu(data, split, 1 if task_id is None else task_id, unlearned)
    if layout == "real_world":
        return load_real_world(data, task_id)
    return load_hub_tofu(split)


def continual_tasks(data: str | Path, split: str) -> list[int]:
    """The task ids of a TOFU split's forget file or of a real-world folder."""
    layout = detect_layout(data)
    if layout == "tofu":
        if split not in SPLITS:
            raise DataError(f"unknown split '{split}' (valid: {', '.join(SPLITS)})")
        return task_ids_of(read_records(Path(data) / f"{split}.json"))
    if layout == "real_world":
        return task_ids_of(read_records(Path(data) / "forget.json"))
    raise DataError("continual unlearning needs a TOFU or real-world folder with task ids")


def continual_task_data(data: str | Path, split: str, order: list[int], task: int) -> UnlearningData:
    """Task ``task``'s forget rows, and a retain set holding the tasks not unlearned before it in ``order``."""
    if detect_layout(data) == "tofu":
        return load_tofu(data, split, task, unlearned=order[: order.index(task)])
    return load_real_world(data, task)
