"""The garbage collector's cost in one ``unlearn eval``, each way side by side (docs/performance.md):

    python perf/collector_cost.py --data WORK/locuslab/TOFU --model MODEL [--repeat 3]

* ``plain``: the command as before :mod:`unlearn.collector`: its modules imported with the collector
  running, nothing frozen (``main()`` with ``importlib.import_module`` in place of
  ``collector.import_module``);
* ``cli``: the ``unlearn`` command as installed (:func:`unlearn.__main__.cli`): imports with the
  collector paused, what they loaded frozen, everything frozen before exiting.

Each way runs ``unlearn eval --benchmark tofu --split forget01 --eval-batch-size 16`` in a process of
its own, one thread, the ways in turn. Printed per way, best of ``--repeat``: the process's wall time,
the time spent in collections (``gc.callbacks``) and their number, and the time from the command's
return to the process's end (Python's exit). The evaluations' TOFU_EVAL.json must be the same.
WORK is a ``perf/tofu_parity.py --work`` folder (its data snapshot and ``tiny-model``); MODEL a model
folder or ``smollm2-135m``. Run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import gc, importlib, json, sys, time
spent = [0.0, 0]
started = {}
def clock(phase, info):
    if phase == "start":
        started["t"] = time.perf_counter()
    else:
        spent[0] += time.perf_counter() - started["t"]
        spent[1] += 1
gc.callbacks.append(clock)
import unlearn.__main__ as entry
way, record, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.argv = ["unlearn", *argv]
if way == "plain":
    entry.collector.import_module = importlib.import_module
    rc = entry.main()
else:
    rc = entry.cli()
with open(record, "w") as f:
    json.dump({"rc": rc, "gc_seconds": spent[0], "collections": spent[1], "end": time.time()}, f)
"""


def run(way: str, args, out: Path, record: Path) -> dict:
    argv = ["eval", "--benchmark", "tofu", "--model", args.model, "--data", args.data, "--split", "forget01"]
    argv += ["--out", str(out), "--overwrite", "--eval-batch-size", "16"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    start = time.time()
    subprocess.run([sys.executable, "-c", CHILD, way, str(record), *argv], env=env, check=True, capture_output=True)
    end = time.time()
    got = json.loads(record.read_text())
    if got["rc"] != 0:
        raise SystemExit(f"{way}: unlearn eval returned {got['rc']}")
    return {"wall": end - start, "gc": got["gc_seconds"], "collections": got["collections"], "exit": end - got["end"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a perf/tofu_parity.py snapshot: WORK/locuslab/TOFU")
    p.add_argument("--model", required=True, help="a model folder or smollm2-135m")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    ways = ("plain", "cli")
    runs: dict[str, list[dict]] = {w: [] for w in ways}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for i in range(args.repeat):
            for way in ways:
                runs[way].append(run(way, args, work / way, work / f"{way}.json"))
                r = runs[way][-1]
                print(f"{i + 1} {way}: {r['wall']:.2f} s, collections {r['gc']:.2f} s ({r['collections']}), "
                      f"exit {r['exit']:.2f} s", flush=True)  # fmt: skip
        same = all(
            json.loads((work / w / "TOFU_EVAL.json").read_text())
            == json.loads((work / "cli" / "TOFU_EVAL.json").read_text())
            for w in ways
        )
    print("way    wall (best)  collections (best)  exit (best)")
    for way in ways:
        rs = runs[way]
        print(
            f"{way:<6} {min(r['wall'] for r in rs):>9.2f} s  {min(r['gc'] for r in rs):>15.2f} s  "
            f"{min(r['exit'] for r in rs):>9.2f} s"
        )
    print(f"TOFU_EVAL.json the same each way: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
