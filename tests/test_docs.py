"""Docs that cannot drift: the CLI reference is the schema, every relative link resolves, the README
stays short, and (slow) its demo block runs in order on a fresh demo."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_cli_reference_is_the_schema():
    from unlearn.config_args import cli_reference

    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert page == cli_reference(), "regenerate it: unlearn flags > docs/cli.md"


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+://", target) or target.startswith("#"):
                continue
            path = target.split("#", 1)[0]
            if path and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_the_readme_is_short_and_points_to_the_docs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 250
    quick = readme[readme.index("## Quick start") :].split("```")[1]
    assert [x.split("#")[0].strip() for x in quick.strip().splitlines()] == ["bash", "make demo", "make test"]


def demo_block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Try it on the demo") :]
    return section.split("```bash", 1)[1].split("```", 1)[0]


@pytest.mark.slow
def test_the_readme_demo_block_runs_on_a_fresh_demo(tmp_path):
    """Every command of "Try it on the demo", in order, on what `unlearn demo` leaves (as `make demo`)."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    demo = subprocess.run(
        ["unlearn", "demo", "--out", "demo_out"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert demo.returncode == 0, demo.stderr[-2000:]
    script = "set -euo pipefail\n" + demo_block()
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    for made in ("runs/npo_gd/summary.json", "runs/report/report.md", "runs/me_gd_audit/audit.json",
                 "runs/forget_mine/report.md", "runs/compare/compare.md"):  # fmt: skip
        assert (tmp_path / made).is_file(), made
