"""``unlearn report`` on fake result folders written here: tables, n/a reasons, plots, examples."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import pytest
import yaml

from unlearn.__main__ import main
from unlearn.config import Config
from unlearn.report import collect_runs, md_escape, short_labels

SETS = ("Retain", "Real Authors", "Real World", "Forget")
METRICS = ("ROUGE", "Probability", "Truth Ratio", "Token Entropy", "Cosine Similarity", "Entailment Score")
FORGET_Q = [f"Where was fictitious author {i} born?" for i in range(4)]
RETAIN_Q = [f"What genre does retained author {i} write?" for i in range(4)]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def summary(mu: float, fe: float, entailment: bool = True) -> dict:
    s = {f"{st} {m}": round(0.1 + 0.02 * i + 0.1 * j, 4) for i, st in enumerate(SETS) for j, m in enumerate(METRICS)}
    s.update({"Model Utility": mu, "Model Utility Retain": mu + 0.05, "Forget Efficacy": fe})
    if not entailment:
        for st in SETS:
            s[f"{st} Entailment Score"] = None
        s["unavailable"] = {"Entailment Score": "NLI model not installed (pip install x)"}
    return s


def write_run(
    folder: Path,
    tag: str,
    mu: float,
    fe: float,
    method: str | None = "ME+GD",
    lr: float = 1e-5,
    entailment: bool = True,
    generation=None,
) -> Path:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary(mu, fe, entailment)))
    cfg = Config(method=method or "ME+GD", lr=lr, split="forget01", task_id=1, out=str(folder)).to_dict()
    (folder / ("config.yaml" if method else "eval_config.yaml")).write_text(yaml.safe_dump(cfg))
    gen = generation or (lambda q, i: f"{tag} answer {i}")
    for name, qs in (("Forget", FORGET_Q), ("Retain", RETAIN_Q)):
        rows = [
            {"question": q, "generation": gen(q, i), "ground_truth": f"truth {name} {i}", "rouge": 0.5}
            for i, q in enumerate(qs)
        ]
        (folder / f"eval_{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def write_continual(folder: Path) -> Path:
    folder.mkdir(parents=True)
    keys = list(summary(0.5, 0.5))
    with open(folder / "continual.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["task", "n_unlearned", *keys])
        w.writeheader()
        for k in (1, 2, 3):
            s = summary(0.6 - 0.1 * k, 0.5 + 0.1 * k)
            w.writerow({"task": k, "n_unlearned": k, **s})
            write_run(folder / f"task_{k}", f"CONT{k}", s["Model Utility"], s["Forget Efficacy"])
    return folder


@pytest.fixture
def results(tmp_path) -> dict:
    root = tmp_path / "results"
    hostile = lambda q, i: "<script>alert(1)</script> a|b *c*" if i == 0 else f"IDK answer {i}"  # noqa: E731
    write_run(root / "ga_gd", "GA", 0.10, 0.95, method="GA+GD", lr=5e-6)
    write_run(root / "me_gd", "ME", 0.52, 0.90, entailment=False)
    write_run(root / "idk_ap", "IDK", 0.55, 0.60, method="IDK+AP", generation=hostile)
    write_continual(root / "continual_me_gd")
    baseline = write_run(tmp_path / "target", "BASELINE", 0.60, 0.10, method=None)
    return {"root": root, "baseline": baseline, "out": tmp_path / "report"}


@pytest.fixture
def report(results) -> dict:
    code = main(
        [
            "report",
            str(results["root"]),
            "--out",
            str(results["out"]),
            "--baseline",
            str(results["baseline"]),
            "--title",
            "Test <report>",
        ]
    )
    assert code == 0
    out = results["out"]
    return {"md": (out / "report.md").read_text(), "html": (out / "report.html").read_text(), "out": out}


def test_collect_runs_names_and_continual_tasks_not_rows(results):
    runs = collect_runs([results["root"]])
    assert [r.name for r in runs] == ["continual_me_gd", "ga_gd", "idk_ap", "me_gd"]
    cont = runs[0]
    assert cont.is_continual and [row["n_unlearned"] for row in cont.curve] == [1, 2, 3]
    assert cont.task == "1–3 (continual)" and cont.eval_dir.name == "task_3"
    assert cont.value("Model Utility") == pytest.approx(0.3)  # the last task's summary
    ga = runs[1]
    assert (ga.method, ga.lr, ga.split, ga.task) == ("GA+GD", "5e-06", "forget01", "1")
    # A run given directly is named by its folder.
    assert [r.name for r in collect_runs([results["root"] / "ga_gd"])] == ["ga_gd"]


def test_report_files_and_table(report):
    out = report["out"]
    for name in ("report.md", "report.html", "table.csv", "tradeoff.png", "continual.png"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / "table.csv")))
    assert [r["run"] for r in rows] == ["target (baseline)", "continual_me_gd", "ga_gd", "idk_ap", "me_gd"]
    assert not any("task_" in r["run"] for r in rows)
    assert float(rows[2]["Model Utility"]) == pytest.approx(0.10)
    assert rows[2]["method"] == "GA+GD" and rows[0]["method"] == "–"
    assert rows[4]["Forget Entailment Score"] == "" and "NLI model not installed" in rows[4]["unavailable"]
    for name in ("ga\\_gd", "idk\\_ap", "me\\_gd", "continual\\_me\\_gd"):
        assert f"| {name} |" in report["md"], name
    for name in ("ga_gd", "idk_ap", "me_gd", "continual_me_gd"):
        assert f"<td>{name}</td>" in report["html"], name
    assert "task_1" not in report["md"]


def test_plots_are_real_pngs(report):
    for name in ("tradeoff.png", "continual.png"):
        data = (report["out"] / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000, name
    assert "![" in report["md"] and "(tradeoff.png)" in report["md"] and "(continual.png)" in report["md"]
    assert '<img src="tradeoff.png"' in report["html"] and '<img src="continual.png"' in report["html"]


def test_null_metric_is_na_with_reason(report):
    md = report["md"]
    summary_row = next(line for line in md.splitlines() if line.startswith("| me\\_gd | ME+GD |"))
    assert summary_row.endswith("| 0.9000 | – |")  # Forget Quality: not computed, not n/a
    me_rows = [line for line in md.splitlines() if line.startswith("| me\\_gd |") and "n/a" in line]
    assert len(me_rows) == 4 and all(line.endswith("| n/a \\[1\\] |") for line in me_rows)  # one per set
    assert "\\[1\\] Entailment Score: NLI model not installed (pip install x)" in md
    assert "n/a [1]" in report["html"] and "NLI model not installed" in report["html"]


def test_before_after_examples(report):
    md, html = report["md"], report["html"]
    section = md.split("## Before / after", 1)[1]
    # the questions where the first run's ROUGE is lowest, median and highest, captioned
    assert "the questions where continual\\_me\\_gd's ROUGE is lowest, median and highest" in section
    for i, which in enumerate(("lowest", "median", "highest"), 1):
        assert re.search(rf"### Forget {i} \({which} ROUGE, \d\.\d\d\): ", section), which
        assert re.search(rf"### Retain {i} \({which} ROUGE, \d\.\d\d\): ", section), which
    assert "Forget 4" not in section
    assert "| target (baseline) | BASELINE answer " in section
    assert "| ground truth | truth Forget " in section
    assert "| ga\\_gd | GA answer " in section
    # the continual run was evaluated on other questions (its last task's file has the same ones here)
    assert "CONT3 answer " in section
    assert "BASELINE answer " in html


def test_text_is_escaped(report):
    md, html = report["md"], report["html"]
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<title>Test &lt;report&gt;</title>" in html
    assert "\\<script\\>alert(1)\\</script\\> a\\|b \\*c\\*" in md
    row = next(line for line in md.splitlines() if "alert(1)" in line)
    assert row.count(" | ") == 1  # two cells: no stray column from the '|' in the text
    assert md_escape("a_b\nc") == "a\\_b c"


def test_short_labels_drop_shared_parts():
    names = ["sw/method=ME+GD,lr=1e-05,split=forget01", "sw/method=GA+GD,lr=1e-05,split=forget01"]
    assert short_labels(names) == ["method=ME+GD", "method=GA+GD"]  # sweeps named the old way
    names = [
        "sw/method-ME+GD__lr-1e-05__split-forget01",
        "sw/method-GA+GD__lr-1e-05__split-forget01",
        "sw/method-GA+GD__lr-5e-06__split-forget01",
    ]
    assert short_labels(names) == ["method-ME+GD__lr-1e-05", "method-GA+GD__lr-1e-05", "method-GA+GD__lr-5e-06"]
    names = [
        "cont",
        "sw/method=ME+GD,lr=1e-05,split=forget01",
        "sw/method=GA+GD,lr=1e-05,split=forget01",
        "sw/method=GA+GD,lr=5e-06,split=forget01",
    ]
    assert short_labels(names) == [
        "cont",
        "sw/method=ME+GD,lr=1e-05",
        "sw/method=GA+GD,lr=1e-05",
        "sw/method=GA+GD,lr=5e-06",
    ]
    assert short_labels(["only"]) == ["only"]
    # one run of a sweep beside a reference: the key only it has is what names it
    assert short_labels(["methods/method-GA+GD", "retain_eval"]) == ["methods/method-GA+GD", "retain_eval"]


def test_report_names_relative_paths_and_the_scatter(tmp_path, monkeypatch):
    """A report written in a project names its runs by project path, and a TOFU-only scatter is not
    followed by "No run has both ..."."""
    from unlearn.report import write_report

    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "runs" / "sw" / "method-GA+GD", "GA", 0.3, 0.8, method="GA+GD")
    base = write_run(tmp_path / "base", "B", 0.6, 0.1, method=None)
    out = write_report([tmp_path / "runs"], tmp_path / "rep", baseline=base)
    md = (out / "report.md").read_text()
    assert "(base)" in md and str(tmp_path) not in md
    assert "tradeoff.png" in md and "No run has both" not in md
    assert str(tmp_path) not in (out / "table.csv").read_text()


def test_report_without_baseline_and_errors(results, capsys):
    out = results["out"]
    assert main(["report", str(results["root"] / "ga_gd"), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "No --baseline given" in md and "| ga\\_gd | GA answer 0 |" in md
    assert not (out / "continual.png").exists()
    assert main(["report", str(results["root"] / "missing"), "--out", str(out)]) == 2
    assert "result folder not found" in capsys.readouterr().err
    empty = results["root"].parent / "empty"
    empty.mkdir()
    assert main(["report", str(empty), "--out", str(out)]) == 2
    assert "no evaluated runs" in capsys.readouterr().err
    assert main(["report", str(results["root"]), "--out", str(out), "--baseline", str(empty)]) == 2
    assert "no summary.json" in capsys.readouterr().err


def test_one_scatter_per_benchmark(tmp_path):
    """TOFU and real-world runs are never drawn on one scatter."""
    from unlearn.report import write_report

    write_run(tmp_path / "runs" / "tofu_run", "t", 0.6, 0.5)
    real = write_run(tmp_path / "runs" / "real_run", "r", 0.4, 0.7)
    (real / "data.json").write_text(json.dumps({"layout": "real_world"}))
    out = write_report([tmp_path / "runs"], tmp_path / "rep")
    assert (out / "tradeoff.png").is_file() and (out / "tradeoff_real_world.png").is_file()
    assert "tradeoff_real_world.png" in (out / "report.md").read_text()


def _chromium() -> str | None:
    """The system's Chromium; installed with apt-get (Debian's `chromium`) when missing and allowed."""
    import shutil
    import subprocess

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
        if subprocess.run(install, capture_output=True, timeout=900, env=env).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=900, env=env)
            subprocess.run(install, capture_output=True, timeout=900, env=env)
        found = shutil.which("chromium")
    return found


@pytest.mark.slow
def test_report_html_in_a_real_browser(report, tmp_path):
    """report.html opened in headless Chromium: no console error, every image loaded; a screenshot is
    kept (UNLEARN_SCREENSHOT=path to keep it elsewhere) for a person to look at."""
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no Chromium, and it cannot be installed here (apt-get as root)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright (the driver; the browser is Chromium's)"
    )
    shot = Path(os.environ.get("UNLEARN_SCREENSHOT", tmp_path / "report.png"))
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((report["out"] / "report.html").resolve().as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => [e.getAttribute('src'), e.complete && e.naturalWidth > 0])"
        )
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert not errors, errors
    assert images and all(ok for _, ok in images), images
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_the_tradeoff_axes_hold_every_interval_whole(tmp_path, monkeypatch):
    """Axes fitted to the points alone cut wide bars at the frame, where they read as lines across the
    plot: the limits take in every interval's ends (inside [0, 1])."""
    from types import SimpleNamespace

    from unlearn.report import plots

    def run(name, fe, mu, fe_iv, mu_iv):
        values = {"Forget Efficacy": fe, "Model Utility": mu}
        intervals = {
            k: SimpleNamespace(lo=lo, hi=hi) for k, (lo, hi) in (("Forget Efficacy", fe_iv), ("Model Utility", mu_iv))
        }
        return SimpleNamespace(
            name=name, method="ME+GD", is_continual=False, config={}, value=values.get, intervals=intervals
        )

    drawn = {}
    monkeypatch.setattr(plots, "save_png", lambda fig, path: drawn.update(ax=fig.axes[0]))
    runs = [run("a", 0.4, 0.65, (0.2, 0.67), (0.53, 0.71)), run("b", 0.67, 0.64, (0.43, 0.85), (0.52, 0.71))]
    assert plots.plot_tradeoff(runs, tmp_path / "t.png")
    (x0, x1), (y0, y1) = drawn["ax"].get_xlim(), drawn["ax"].get_ylim()
    assert x0 <= 0.2 and x1 >= 0.85 and y0 <= 0.52 and y1 >= 0.71
