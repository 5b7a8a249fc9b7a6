"""``unlearn ARGS`` with the one-off reference pass timed: ``python timed_unlearn.py OUT.json ARGS...``.

Wraps :func:`unlearn.reference.reference_nlls` (the pass computing NPO/DPO's reference statistics
before training) to add up its wall time, runs the CLI unchanged and writes the total to OUT.json.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    import unlearn.reference as reference
    from unlearn.__main__ import main as cli

    spent = {"reference_pass_s": 0.0, "calls": 0}
    inner = reference.reference_nlls

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent["reference_pass_s"] += time.perf_counter() - start
            spent["calls"] += 1

    reference.reference_nlls = timed
    rc = cli(argv)
    with open(out, "w") as fh:
        json.dump(spent, fh)
    return rc


if __name__ == "__main__":
    sys.exit(main())
