"""The demo at a reduced size: every stage runs and writes what the full demo writes."""

import json

from unlearn.demo import check_demo, run_demo


def test_demo_reduced(tmp_path, capsys):
    summaries = run_demo(tmp_path / "demo", scale=0.2)
    out = capsys.readouterr().out
    assert "Before and after unlearning" in out and "Forget ROUGE" in out
    assert "Estimated time: about" in out and "Estimated time left: about" in out  # said before it trains
    for name in ("target", "retain_model", "me_gd", "idk_ap"):
        summary = json.loads((tmp_path / "demo" / name / "summary.json").read_text())
        assert summary["Forget ROUGE"] == summaries[name]["Forget ROUGE"]
        assert summary["Retain Entailment Score"] is None  # offline: no NLI
        assert "Entailment Score" in summary["unavailable"]
    assert summaries["retain_model"]["Forget Quality"] > summaries["target"]["Forget Quality"]
    assert summaries["me_gd"]["Forget ROUGE"] < summaries["target"]["Forget ROUGE"]
    report = tmp_path / "demo" / "report"
    assert (report / "report.md").exists() and (report / "tradeoff.png").exists()
    assert isinstance(check_demo(summaries), list)
