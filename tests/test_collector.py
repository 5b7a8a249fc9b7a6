"""unlearn.collector: imports with the garbage collector paused, frozen only in a command-line process."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from unlearn import collector

ROOT = Path(__file__).resolve().parents[1]

PROBE = "import gc\nENABLED_DURING_IMPORT = gc.isenabled()\n"


@pytest.fixture
def probe(tmp_path, monkeypatch):
    name = f"collector_probe_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_import_runs_with_the_collector_paused_and_restores_it(probe):
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    module = collector.import_module(probe)
    assert module.ENABLED_DURING_IMPORT is False
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen  # freeze_imports() was never called in this process


def test_a_disabled_collector_stays_disabled_and_a_failed_import_restores_it():
    gc.disable()
    try:
        collector.import_module("json")
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(ModuleNotFoundError):
        collector.import_module("no_such_module_for_the_collector_test")
    assert gc.isenabled()


def _run(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return out.stdout.split()


def test_after_freeze_imports_a_new_import_freezes_and_a_loaded_one_does_not():
    counts = _run(
        "import gc, json\n"
        "from unlearn import collector\n"
        "collector.freeze_imports()\n"
        "before = gc.get_freeze_count()\n"
        "collector.import_module('json')\n"  # loaded already: nothing new to freeze
        "same = gc.get_freeze_count()\n"
        "collector.import_module('fractions')\n"
        "print(before, same, gc.get_freeze_count(), gc.isenabled())\n"
    )
    assert counts[0] == counts[1] == "0"
    assert int(counts[2]) > 1000
    assert counts[3] == "True"


def test_the_command_line_freezes_and_main_does_not():
    code = (
        "import gc, sys\n"
        "from unlearn.__main__ import {fn}\n"
        "sys.argv = ['unlearn', 'methods']\n"
        "rc = {call}\n"
        "print(rc, gc.get_freeze_count())\n"
    )
    rc, frozen = _run(code.format(fn="cli", call="cli()"))[-2:]
    assert rc == "0" and int(frozen) > 1000
    rc, frozen = _run(code.format(fn="main", call="main(['methods'])"))[-2:]
    assert rc == "0" and frozen == "0"


def test_the_installed_command_is_the_one_that_freezes():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["unlearn"] == "unlearn.__main__:cli"
