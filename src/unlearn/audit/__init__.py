"""``unlearn audit``: does the forgotten knowledge come back?

Unlearning that only hides knowledge is the field's open problem; these attacks tell hiding from
forgetting, on the unlearned model and, when given, on the target (before unlearning) and retain
(never trained on the forget set) models beside it:

* ``mia``: membership inference, forget against holdout items (LOSS, ZLib, Min-K%, Min-K%++,
  Reference, GradNorm; AUC) and MUSE's PrivLeak against the retain model (:mod:`unlearn.evaluation.mia`);
* ``memorization``: exact memorisation and extraction strength on the forget set;
* ``relearn``: a few fine-tuning steps on part of the forget set (:mod:`.relearn`);
* ``quantization``: 8- and 4-bit weights (:mod:`.quantize`);
* ``prompts``: paraphrased, jailbreak, in-context and prefix prompts (:mod:`.prompts`).

:func:`run_audit` runs them (:mod:`.run`).
"""

from unlearn.audit.inputs import ATTACKS, check_inputs
from unlearn.audit.run import run_audit

__all__ = ["ATTACKS", "check_inputs", "run_audit"]
