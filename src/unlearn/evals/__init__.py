"""The paper's evaluation (PAPER.md §4).

* :mod:`.metrics`: pure metric functions over numbers and strings.
* :mod:`.judges`: the sentence embedder and the NLI judge (loaded once, injectable).
* :mod:`.runner`: the only code that runs the model (greedy generation, answer NLLs).
* :mod:`.suites`: the eval sets, ``evaluate`` and the ``unlearn eval`` command.
"""

from .runner import answer_nlls, generate
from .suites import (EvalSet, Evaluation, evaluate, load_eval_sets, print_table, real_world_sets,
                     retain_ratios_from, run_eval, tofu_sets, write_evaluation)

__all__ = ["EvalSet", "Evaluation", "answer_nlls", "evaluate", "generate", "load_eval_sets",
           "print_table", "real_world_sets", "retain_ratios_from", "run_eval", "tofu_sets",
           "write_evaluation"]
