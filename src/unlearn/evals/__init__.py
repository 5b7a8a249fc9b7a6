"""The paper's evaluation (docs/methods.md §4).

* :mod:`.metrics`: pure metric functions over numbers and strings.
* :mod:`.judges`: the sentence embedder and the NLI judge (loaded once, injectable).
* :mod:`.runner`: the only code that runs the model (greedy generation, answer NLLs).
* :mod:`.sets`: the eval sets, read and checked from ``*_perturbed.json`` files.
* :mod:`.suites`: ``evaluate`` and its outputs (summary, per-item files, table).
* :mod:`.commands`: ``unlearn eval``, the evaluation after a run, judges, Forget Quality's retain ratios.
"""

from .runner import answer_nlls, generate
from .sets import EvalSet, load_eval_sets, real_world_sets, tofu_sets
from .commands import retain_ratios_from, run_eval
from .suites import Evaluation, evaluate, print_table, write_evaluation

__all__ = ["EvalSet", "Evaluation", "answer_nlls", "evaluate", "generate", "load_eval_sets",
           "print_table", "real_world_sets", "retain_ratios_from", "run_eval", "tofu_sets",
           "write_evaluation"]
