"""When ``unlearn forget`` stops: the forget records look like records the model never saw, and the
retain records are kept.

At every evaluation while unlearning (step 0, before the first step, included):

* **forgotten** — with ``--holdout`` (records of the same kind never trained on): the forget records'
  mean ROUGE and mean answer probability are at most the upper end of the holdout's 95% interval
  (a percentile bootstrap over the holdout records, 1000 resamples, seeded, as
  :mod:`unlearn.evaluation.intervals`): the forget set is no
  longer recalled or predicted better than data the model never saw. Without a holdout the goal falls
  back to both values at most half of their values before unlearning — weaker: it shows the model
  changed on those records, not that they now look unseen.
* **kept** — the retain records' mean ROUGE (what the model answers) is at least ``1 − keep_within``
  times its value before unlearning (point values; without a retain set nothing is checked). Their
  probability is recorded beside it but not required: it falls as the next-token distributions
  flatten even while the answers stay right.

Each check is recorded (``checks``) so the report can say which part held and by how much.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unlearn.evaluation.intervals import RESAMPLES, SEED, percentile_intervals

FALLBACK_SHARE = 0.5  # without a holdout: forget ROUGE and probability at most half their values before
KEYS = {"ROUGE": "rouge", "Probability": "probability"}
KEPT = ("ROUGE",)  # the retain metrics that must stay within --keep-within


@dataclass
class Goal:
    keep_within: float
    holdout: bool
    start: dict | None = None  # the evaluation row of step 0 (the model before unlearning)
    checks: dict[int, dict] = field(default_factory=dict)  # step -> what was checked

    def __call__(self, row: dict, items: dict[str, list[dict]]) -> bool:
        if row["step"] == 0 or self.start is None:
            self.start = self.start or row
        check = {"step": row["step"], "forget": {}, "retain": {}}
        for metric, key in KEYS.items():
            value = row.get(f"Forget {metric}")
            if self.holdout:
                limit = self._holdout_limit(items.get("Holdout") or [], key)
                check["forget"][metric] = {
                    "value": value,
                    "holdout upper 95%": limit,
                    "holdout": row.get(f"Holdout {metric}"),
                }
            else:
                before = self.start.get(f"Forget {metric}")
                limit = None if before is None else FALLBACK_SHARE * before
                check["forget"][metric] = {"value": value, "half of before": limit}
            check["forget"][metric]["ok"] = value is not None and limit is not None and value <= limit + 1e-12
            before = self.start.get(f"Retain {metric}")
            if before is not None and row.get(f"Retain {metric}") is not None:
                floor = (1 - self.keep_within) * before
                now = row[f"Retain {metric}"]
                ok = now >= floor - 1e-12 if metric in KEPT else None  # (None: recorded, not required)
                check["retain"][metric] = {"value": now, "before": before, "floor": floor, "ok": ok}
        check["forgotten"] = all(c["ok"] for c in check["forget"].values())
        check["kept"] = all(c["ok"] is not False for c in check["retain"].values())
        check["met"] = check["forgotten"] and check["kept"]
        self.checks[row["step"]] = check
        return check["met"]

    @staticmethod
    def _holdout_limit(rows: list[dict], key: str) -> float | None:
        values = np.array([np.nan if r.get(key) is None else r[key] for r in rows], float)
        values = values[~np.isnan(values)]
        if not len(values):
            return None
        draws = values[np.random.default_rng(SEED).integers(0, len(values), (RESAMPLES, len(values)))].mean(axis=1)
        return percentile_intervals({"mean": float(values.mean())}, {"mean": draws})["mean"].hi
