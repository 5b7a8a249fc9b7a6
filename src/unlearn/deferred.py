"""Packages whose ``__init__`` imports far more than the toolkit uses, entered without running it.

nltk's ``__init__`` imports nearly all of nltk, and with it scikit-learn and pandas: about 2 s of
every evaluation, which needs only ``nltk.stem.porter`` (through ``rouge_score``). :func:`defer`
puts the package's module object in ``sys.modules`` before its ``__init__`` has run: a submodule
(``nltk.stem.porter``) imports from the real files as usual, and the first name asked of the package
that is not a submodule (``nltk.word_tokenize``) runs the real ``__init__`` into the same object, so
the package then behaves as if it had been imported whole. A package already imported is left as it
is. Tests: tests/test_deferred.py.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


class _Deferred(types.ModuleType):
    """A package whose ``__init__`` has not run yet (see the module docstring)."""

    def __getattr__(self, name: str):
        full = f"{self.__name__}.{name}"
        if not name.startswith("__") and (full in sys.modules or importlib.util.find_spec(full) is not None):
            return importlib.import_module(full)  # a submodule: its own file only
        self.__class__ = types.ModuleType  # from here on an ordinary module
        self.__spec__.loader.exec_module(self)
        return getattr(self, name)


def defer(*names: str) -> None:
    """Put each package of ``names`` (parents before children) in ``sys.modules`` with its
    ``__init__`` not yet run; one that is imported already, or not installed, is left alone."""
    for name in names:
        if name in sys.modules:
            continue
        try:
            spec = importlib.util.find_spec(name)
        except ImportError:  # its parent is not installed
            continue
        if spec is None or spec.submodule_search_locations is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        module.__class__ = _Deferred
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent and parent in sys.modules:
            setattr(sys.modules[parent], child, module)
