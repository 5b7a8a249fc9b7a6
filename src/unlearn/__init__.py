"""unlearn: machine unlearning for large language models.

Implements "A Closer Look at Machine Unlearning for LLMs" (Yuan et al., ICLR 2025):
every forget term and regulariser, the fictitious / continual / real-world scenarios,
and the paper's evaluation (six metrics, Model Utility, Forget Efficacy, TOFU Forget Quality).
"""

__version__ = "0.1.0"
