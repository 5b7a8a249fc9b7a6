"""One loss, forward + backward, on (B, T, V) float32 logits; prints the extra peak memory as JSON.

Run in its own process by ``memory.py``: the peak resident memory of the process (``ru_maxrss``)
after the loss, minus the resident memory just before it (logits and labels allocated), is what
the loss itself needed. Tensors this large are ``mmap``-ed by the allocator and handed back to
the system when freed, so resident memory follows the live tensors.

    python perf/me_memory_probe.py {ce,me,me_official,none} B T V
"""

from __future__ import annotations

import json
import math
import resource
import sys

import torch
import torch.nn.functional as F


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def official_me(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The official code's way: softmax, a V-wide uniform tensor, ``log(p + 1e-12)``."""
    shifted = F.pad(labels[:, 1:], (0, 1), value=-100)
    p = F.softmax(logits, dim=-1)
    uniform = torch.full_like(p, 1.0 / p.shape[-1])
    kl = (uniform * (uniform.log() - torch.log(p + 1e-12))).sum(-1)
    keep = shifted != -100
    return kl[keep].mean()


def main() -> None:
    kind, b, t, v = sys.argv[1], *map(int, sys.argv[2:5])
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(b, t, v, generator=g).mul_(2).requires_grad_(True)
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[:, : t // 4] = -100  # a masked prompt
    before = max(rss_mib(), peak_mib())
    if kind == "ce":
        loss = F.cross_entropy(logits.view(b * t, v), F.pad(labels[:, 1:], (0, 1), value=-100).view(-1))
    elif kind == "me":
        from unlearn.losses import max_entropy

        loss = max_entropy(logits, labels)
    elif kind == "me_official":
        loss = official_me(logits, labels)
    else:
        loss = logits[0, 0, 0] * 0.0
    loss.backward()
    assert logits.grad is not None and torch.isfinite(loss)
    one = b * t * v * 4 / 2**20
    print(
        json.dumps(
            {
                "kind": kind,
                "extra_peak_mib": peak_mib() - before,
                "logits_mib": one,
                "loss": float(loss),
                "ln_v": math.log(v),
            }
        )
    )


if __name__ == "__main__":
    main()
