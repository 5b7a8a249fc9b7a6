"""The cyclic garbage collector in a command-line process.

torch and transformers leave hundreds of thousands of objects behind them once imported (modules,
classes, functions), which live as long as the process. Python's collector walks all of them at
every full collection, and once more when the process exits: about 0.9 s of collections and 1.0 s
of exiting in an 11 s TOFU evaluation of the tiny model (docs/performance.md). :func:`import_module`
imports with the collector paused and, in a process that has called :func:`freeze_imports`, freezes
(:func:`gc.freeze`) every object alive once an import has loaded new modules (at a command's start:
mostly what the import made), so that later collections skip them; :func:`freeze_all`
freezes everything before the process exits. Frozen objects are still freed when nothing refers to
them; a cycle among them is left to the end of the process. Tests: tests/test_collector.py.
"""

from __future__ import annotations

import gc
import importlib
import sys

_freeze = False


def freeze_imports() -> None:
    """From now on, freeze what :func:`import_module` loads: for a process that ends with its command
    (not a test session or a notebook, which go on creating and dropping models)."""
    global _freeze
    _freeze = True


def import_module(name: str):
    """``importlib.import_module(name)`` with the collector paused (restored as it was, whatever
    happens), then, after :func:`freeze_imports`, every object alive frozen if the import loaded
    any new module."""
    loaded = len(sys.modules)
    enabled = gc.isenabled()
    gc.disable()
    try:
        module = importlib.import_module(name)
    finally:
        if enabled:
            gc.enable()
    if _freeze and len(sys.modules) > loaded:
        gc.freeze()
    return module


def freeze_all() -> None:
    """Freeze every object alive: Python's exit then frees modules without walking them for cycles
    (files are closed and ``atexit`` functions run as usual)."""
    gc.freeze()
