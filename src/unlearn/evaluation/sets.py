"""The evaluation sets of docs/methods.md §4, read from ``*_perturbed.json`` files and checked before any
model is loaded: TOFU (Retain, Real Authors, Real World, Forget, Forget Paraphrased) and the
real-world layout (Retain = neighbours, Forget = the famous people)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from unlearn.data import SPLITS, read_records, select_task
from unlearn.errors import DataError

TOFU_EVAL_ROWS = 300  # the official ds_size: every TOFU set is cut to its first 300 rows (forget10's task too)


@dataclass
class EvalSet:
    """One evaluation set. ``kind``: forget | retain | general (Real Authors / Real World)."""

    name: str
    rows: list[dict]
    kind: str
    answer_key: str = "answer"
    layout: str = "tofu"  # tofu | real_world | files
    question_key: str = "question"
    truth: bool = True  # the rows carry paraphrased and perturbed answers (Truth Ratio, Forget Quality)

    @property
    def questions(self) -> list[str]:
        return [r[self.question_key] for r in self.rows]

    @property
    def answers(self) -> list[str]:
        return [r[self.answer_key] for r in self.rows]

    @property
    def paraphrases(self) -> list[str] | None:
        """Paraphrased answers; None for general sets, which use the answer itself."""
        return None if self.kind == "general" or not self.truth else [r["paraphrased_answer"] for r in self.rows]

    @property
    def perturbed(self) -> list[list[str]]:
        return [list(r["perturbed_answer"]) if self.truth else [] for r in self.rows]

    @property
    def references(self) -> list[str]:
        """What Cosine and Entailment compare with: the full ``original_answer`` on general sets."""
        if self.kind == "general":
            return [r.get("original_answer", r[self.answer_key]) for r in self.rows]
        return self.answers

    @property
    def cosine_references(self) -> list[str]:
        """What Cosine Similarity compares with. As officially, a real-world row's long ``answer``
        (its ``golden_answer`` is what ROUGE, Entailment and the NLLs use)."""
        if self.layout == "real_world":
            return [r.get("answer", r[self.answer_key]) for r in self.rows]
        return self.references


def _read_set(path: Path, kind: str, answer_key: str = "answer") -> list[dict]:
    """Rows of a perturbed file, every field the metrics need checked (file:line: field ...)."""
    return check_rows(read_records(path, required=("question", answer_key)), kind)


def check_rows(rows: list[dict], kind: str) -> list[dict]:
    """The fields Truth Ratio needs, checked on rows read already (each has its ``_source``):
    ``paraphrased_answer`` (but on general sets) and as many ``perturbed_answer`` strings in every row."""
    first = None
    for r in rows:
        at = r["_source"]
        if kind != "general" and not isinstance(r.get("paraphrased_answer"), str):
            raise DataError(f"{at}: missing field 'paraphrased_answer'" if "paraphrased_answer" not in r
                            else f"{at}: field 'paraphrased_answer' must be a string")
        pert = r.get("perturbed_answer")
        if "perturbed_answer" not in r:
            raise DataError(f"{at}: missing field 'perturbed_answer'")
        if not isinstance(pert, list) or not pert or not all(isinstance(p, str) for p in pert):
            raise DataError(f"{at}: field 'perturbed_answer' must be a non-empty list of strings")
        if first is None:
            first = (len(pert), at)
        elif len(pert) != first[0]:
            raise DataError(f"{at}: field 'perturbed_answer' has {len(pert)} answers but {first[1]} has "
                            f"{first[0]}; every row of a file needs the same number")
        if "original_answer" in r and not isinstance(r["original_answer"], str):
            raise DataError(f"{at}: field 'original_answer' must be a string")
    return rows


def forget_set(sets: list[EvalSet]) -> EvalSet:
    """The Forget set of ``sets``."""
    for s in sets:
        if s.name == "Forget":
            return s
    raise DataError("the evaluation data has no Forget set")


def _select(rows: list[dict], task_id: int | None, path: Path) -> list[dict]:
    return rows if task_id is None else select_task(rows, task_id, path)


def _paraphrased(forget: EvalSet) -> list[EvalSet]:
    """The same forget items asked with ``paraphrased_question``, when every row has one."""
    if not all(isinstance(r.get("paraphrased_question"), str) for r in forget.rows):
        return []
    return [EvalSet("Forget Paraphrased", forget.rows, "forget", forget.answer_key, forget.layout,
                    question_key="paraphrased_question")]


def tofu_sets(data_dir: str | Path, split: str = "forget01", task_id: int | None = 1) -> list[EvalSet]:
    """Retain, Real Authors, Real World, Forget (the task) [, Forget Paraphrased], each its first 300 rows."""
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}' (valid: {', '.join(SPLITS)})")
    d = Path(data_dir)
    forget_path = d / f"{split}_perturbed.json"
    n = TOFU_EVAL_ROWS
    forget = EvalSet("Forget", _select(_read_set(forget_path, "forget"), task_id, forget_path)[:n], "forget")
    sets = [
        EvalSet("Retain", _read_set(d / "retain_perturbed.json", "retain")[:n], "retain"),
        EvalSet("Real Authors", _read_set(d / "real_authors_perturbed.json", "general")[:n], "general"),
        EvalSet("Real World", _read_set(d / "world_facts_perturbed.json", "general")[:n], "general"),
        forget,
    ]
    return sets + _paraphrased(forget)


def real_world_sets(data_dir: str | Path, task_id: int | None = None) -> list[EvalSet]:
    """Retain = the neighbours, Forget = the famous people (one task or all); golden answers."""
    d = Path(data_dir)
    key = "golden_answer"
    forget_path = d / "forget_perturbed.json"
    forget = _select(_read_set(forget_path, "forget", key), task_id, forget_path)
    return [EvalSet("Retain", _read_set(d / "neighbor_perturbed.json", "retain", key), "retain", key, "real_world"),
            EvalSet("Forget", forget, "forget", key, "real_world")]


def file_sets(forget: str | Path, retain: str | Path | None = None) -> list[EvalSet]:
    """Forget (and Retain) sets from your own JSON-lines files: ROUGE, Probability, Token Entropy,
    Cosine and Entailment for any rows; Truth Ratio (and Forget Quality) when every row of a file
    also carries ``paraphrased_answer`` and ``perturbed_answer``."""
    from unlearn.data import is_text_rows, read_rows

    if forget is not None and is_text_rows(read_rows(forget)):
        import logging

        logging.getLogger("unlearn").info(
            "raw-text forget set: no question/answer metrics; evaluate with --benchmark muse (a MUSE corpus), "
            "--benchmark wmdp or --downstream TASKS")
        return []
    sets = []
    for name, kind, path in (("Retain", "retain", retain), ("Forget", "forget", forget)):
        if path is None:
            continue
        rows = read_records(path)
        has = [isinstance(r.get("paraphrased_answer"), str) and isinstance(r.get("perturbed_answer"), list)
               for r in rows]
        truth = all(has)
        if truth:
            rows = _read_set(Path(path), kind)  # every field checked, as for the official files
        elif any(has):
            first = rows[has.index(False)]["_source"]
            raise DataError(f"{first}: some rows carry paraphrased_answer and perturbed_answer and this one does "
                            "not; give them for every row (for Truth Ratio) or for none")
        sets.append(EvalSet(name, rows, kind, layout="files", truth=truth))
    return sets


def load_eval_sets(data_dir: str | Path, split: str = "forget01", task_id: int | None = None) -> list[EvalSet]:
    """The sets of a TOFU or real-world evaluation folder (``*_perturbed.json`` files); ``task_id``
    None is TOFU's task 1, and every person of the real-world layout (as in training)."""
    d = Path(data_dir)
    if not d.is_dir():
        hint = "; the evaluation reads local *_perturbed.json files" if str(data_dir) == "locuslab/TOFU" else ""
        raise DataError(f"{d}: evaluation data folder not found{hint}")
    if (d / "forget_perturbed.json").exists():
        return real_world_sets(d, task_id)
    if (d / "retain_perturbed.json").exists() or any((d / f"{s}_perturbed.json").exists() for s in SPLITS):
        return tofu_sets(d, split, 1 if task_id is None else task_id)  # TOFU's standard task, as in training
    raise DataError(f"{d}: no evaluation files (TOFU: forgetXX_perturbed.json, retain_perturbed.json, "
                    "real_authors_perturbed.json, world_facts_perturbed.json; real world: "
                    "forget_perturbed.json, neighbor_perturbed.json)")
