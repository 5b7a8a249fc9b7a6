"""The evaluation engine every protocol shares (docs/architecture.md).

* :mod:`.scoring`: the only code that runs a model for evaluation (greedy generation, answer NLLs).
* :mod:`.metrics`: the paper's metric formulas over numbers and strings; :mod:`.mia` membership
  inference scores; :mod:`.judges` the sentence embedder and the NLI judge (loaded once, injectable).
* :mod:`.sets` the six-metric evaluation sets, :mod:`.six_metrics` their evaluation and outputs,
  :mod:`.during` the evaluation while unlearning, :mod:`.downstream` lm-eval tasks.
"""

from unlearn import deferred

deferred.defer("nltk", "nltk.stem")  # ROUGE needs nltk's Porter stemmer only, not all of nltk (2 s)
