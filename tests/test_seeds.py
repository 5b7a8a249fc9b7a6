"""Seeds: a setting run once per seed (run --seeds, a sweep's seeds:), and the report across them."""

from __future__ import annotations

import pytest
import yaml

from unlearn.config_args import parse_seeds
from unlearn.errors import ConfigError


def test_seeds_are_parsed_with_clear_errors():
    assert parse_seeds("1001, 1002,1003") == [1001, 1002, 1003]
    assert parse_seeds([7, "8"]) == [7, 8]
    for bad, message in (("1,x", "'x' is not an integer seed"), ("1,1", "listed twice"), ("-3", "must be in")):
        with pytest.raises(ConfigError, match=message):
            parse_seeds(bad)


def test_a_sweeps_seeds_give_each_setting_one_folder_per_seed(synth_dir, tmp_path):
    from unlearn.sweep.plan import plan_sweep

    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "out": str(tmp_path / "runs"),
                "seeds": [1001, 1002],
                "base": {"model": "tiny", "data": str(synth_dir), "nli": "none", "max_length": 64},
                "grid": {"method": ["GA+GD", "NPO+GD"]},
            }
        )
    )
    _, runs = plan_sweep(sweep)
    assert [r.name for r in runs] == [
        "method-GA+GD__seed-1001",
        "method-GA+GD__seed-1002",
        "method-NPO+GD__seed-1001",
        "method-NPO+GD__seed-1002",
    ]
    assert [r.cfg.seed for r in runs] == [1001, 1002, 1001, 1002]
    _, runs = plan_sweep(sweep, seeds="5")  # --seeds replaces the file's
    assert [r.name for r in runs] == ["method-GA+GD__seed-5", "method-NPO+GD__seed-5"]
    sweep.write_text(yaml.safe_dump({"seeds": [1], "base": {"seed": 3}, "grid": {"method": ["GA"]}}))
    with pytest.raises(ConfigError, match="give 'seeds:' or a 'seed' in base/grid, not both"):
        plan_sweep(sweep, out=str(tmp_path / "x"))


def test_run_with_seeds_and_the_report_across_them(tmp_path, capsys):
    from tests.test_compare import _own_files
    from unlearn.__main__ import main

    forget, retain = _own_files(tmp_path)
    out = tmp_path / "three"
    args = [
        "run",
        "--model",
        "tiny",
        "--forget",
        str(forget),
        "--retain",
        str(retain),
        "--method",
        "GA+GD",
        "--nli",
        "none",
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
        "--lr",
        "1e-3",
        "--seeds",
        "1,2,3",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["seed-1", "seed-2", "seed-3"]
    assert "ran 3 seeds" in capsys.readouterr().out
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Across seeds" in report and "| (runs) | 3 |" in report
    assert "95% t-interval" in report


def test_the_table_across_seeds_by_hand():
    """Forget Efficacy 0.2, 0.4, 0.6 over three seeds: mean 0.4, sd 0.2, t-interval 0.4 ± 4.303 · 0.2 / √3
    = [-0.097, 0.897], cut to the metric's range [0, 1]."""
    from pathlib import Path

    from unlearn.report.runs import Run
    from unlearn.report.tables import _seed_table, seed_groups

    runs = [
        Run(f"sweep/method-GA__seed-{s}", Path("."), {"Forget Efficacy": fe})
        for s, fe in ((1, 0.2), (2, 0.4), (3, 0.6))
    ]
    runs.append(Run("sweep/method-NPO__seed-1", Path("."), {"Forget Efficacy": 0.5}))  # alone: no group
    assert list(seed_groups(runs)) == ["sweep/method-GA"]
    table = _seed_table(runs)
    half = 4.302652729911275 * 0.2 / 3**0.5
    assert 0.4 - half < 0 < 0.4 + half < 1
    assert table.rows == [["sweep/method-GA", "3", f"0.4000 ± 0.2000 [0.0000, {0.4 + half:.4f}]"]]
    high = [Run(f"s/seed-{s}", Path("."), {"Forget Quality": v}) for s, v in ((1, 0.97), (2, 0.99), (3, 0.5))]
    (cell,) = _seed_table(high).rows[0][2:]
    assert cell.endswith(", 1.0000]")  # a p-value's interval does not pass 1 either
