"""An evaluation set of the six metrics (docs/methods.md §4), and the checks of its rows' fields.

Which sets a benchmark evaluates, and where it reads them, is its protocol's
(:mod:`unlearn.protocols.closer_look`, :mod:`unlearn.protocols.tofu`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from unlearn.data import read_records
from unlearn.errors import DataError


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


def read_set(path: Path, kind: str, answer_key: str = "answer") -> list[dict]:
    """Rows of a perturbed file, every field the metrics need checked (file:line: field ...)."""
    return check_rows(read_records(path, required=("question", answer_key)), kind)


def check_rows(rows: list[dict], kind: str) -> list[dict]:
    """The fields Truth Ratio needs, checked on rows read already (each has its ``_source``):
    ``paraphrased_answer`` (but on general sets) and as many ``perturbed_answer`` strings in every row."""
    first = None
    for r in rows:
        at = r["_source"]
        if kind != "general" and not isinstance(r.get("paraphrased_answer"), str):
            raise DataError(
                f"{at}: missing field 'paraphrased_answer'"
                if "paraphrased_answer" not in r
                else f"{at}: field 'paraphrased_answer' must be a string"
            )
        pert = r.get("perturbed_answer")
        if "perturbed_answer" not in r:
            raise DataError(f"{at}: missing field 'perturbed_answer'")
        if not isinstance(pert, list) or not pert or not all(isinstance(p, str) for p in pert):
            raise DataError(f"{at}: field 'perturbed_answer' must be a non-empty list of strings")
        if first is None:
            first = (len(pert), at)
        elif len(pert) != first[0]:
            raise DataError(
                f"{at}: field 'perturbed_answer' has {len(pert)} answers but {first[1]} has "
                f"{first[0]}; every row of a file needs the same number"
            )
        if "original_answer" in r and not isinstance(r["original_answer"], str):
            raise DataError(f"{at}: field 'original_answer' must be a string")
    return rows


def forget_set(sets: list[EvalSet]) -> EvalSet:
    """The Forget set of ``sets``."""
    for s in sets:
        if s.name == "Forget":
            return s
    raise DataError("the evaluation data has no Forget set")


def match_questions(forget: EvalSet, expected: list[str]) -> int | None:
    """Put ``forget``'s rows in the order of the ``expected`` questions when it holds the same questions
    (a perturbed file in another order is matched by question); returns ``None`` then, else the index
    of the first row that differs."""
    got = forget.questions
    if got == expected:
        return None
    if sorted(got) == sorted(expected):
        waiting: dict[str, list[dict]] = {}
        for row, q in zip(forget.rows, got, strict=True):
            waiting.setdefault(q, []).append(row)
        forget.rows = [waiting[q].pop(0) for q in expected]
        return None
    return next(
        (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), min(len(got), len(expected))
    )
