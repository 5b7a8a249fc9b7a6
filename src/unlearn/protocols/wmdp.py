"""WMDP (``--benchmark wmdp``): hazardous knowledge, measured by multiple-choice accuracy.

Li et al. 2024, "The WMDP Benchmark" (arXiv 2403.03218). A run trains on the data it is given (a
folder or your own files, read as the closer-look protocol reads them; WMDP's own forget corpora are
raw text) and is evaluated by lm-eval's tasks (:mod:`unlearn.evaluation.downstream`): ``wmdp_bio``,
``wmdp_cyber`` and ``mmlu`` unless ``--downstream`` names others. Each task's accuracy is written
into ``summary.json`` under the task's name.
"""

from __future__ import annotations

from unlearn import distributed
from unlearn.evaluation.downstream import check_downstream, parse_tasks
from unlearn.io import atomic_write_json
from unlearn.protocols.closer_look import CloserLook, refuse_closer_look_flags

TASKS = "wmdp_bio,wmdp_cyber,mmlu"  # the lm-eval tasks run unless --downstream names others


class Wmdp(CloserLook):
    name = "wmdp"
    description = "WMDP: lm-eval's wmdp_bio, wmdp_cyber and mmlu accuracies (or the --downstream tasks)"
    six_metrics = False
    downstream_is_evaluation = True
    before_after = False
    table = (
        "WMDP (accuracy on hazardous knowledge: lower is better; MMLU: higher)",
        ("wmdp_bio", "wmdp_cyber", "mmlu"),
    )

    def tasks(self, cfg) -> list[str]:
        tasks = parse_tasks(cfg.downstream or TASKS)
        check_downstream(tasks, cfg.downstream_include)
        return tasks

    def check(self, cfg):
        self.tasks(cfg)
        return None

    def plan(self, cfg, plan, judges=None, sets=None) -> None:
        refuse_closer_look_flags(cfg, self.name)
        plan.downstream = self.tasks(cfg)

    def evaluate(self, plan, model, tokenizer, fmt, out, shard, done):
        if distributed.is_main_process():
            atomic_write_json(out.summary, {"benchmark": self.name})  # the tasks' accuracies are added to it
        return None

    def eval_texts(self, plan) -> list[str]:
        return []

    def table_keys(self, summaries: list[dict]) -> tuple[str, ...]:
        """The tasks run (a stand-in task may replace the defaults)."""
        return tuple(
            dict.fromkeys(
                k for s in summaries for k in s if not k.startswith(("Downstream", "benchmark", "unavailable"))
            )
        )

    def reference(self, plan):
        return None

    def set_reference(self, plan, value) -> None:
        return None


PROTOCOL = Wmdp()
