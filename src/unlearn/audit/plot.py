"""The audit's plot (``DIR/audit.png``)."""

from __future__ import annotations

from pathlib import Path

from unlearn.audit.scores import ROLES, forget_scores
from unlearn.report.plots import colors_for, new_figure, save_png


def audit_plot(audit: dict, path: str | Path) -> None:
    """The audit's plot: forget-set ROUGE under each attack, one bar per model audited (the
    unlearned model beside the target and retain models), and the MIA AUCs when measured."""
    rows = forget_scores(audit)
    aucs = (audit.get("mia") or {}).get("auc", {})
    roles = [r for r in ROLES if r in audit.get("models", {})]
    panels = 1 + bool(aucs)
    fig = new_figure(max(7.0, 0.75 * len(rows) + 2) + (4.5 if aucs else 0), 4.2)
    axes = fig.subplots(1, panels, squeeze=False, width_ratios=[max(len(rows), 1), 4][:panels])[0]
    colors = colors_for(roles)
    width = 0.8 / max(len(roles), 1)
    ax = axes[0]
    for j, role in enumerate(roles):
        xs = [i + (j - (len(roles) - 1) / 2) * width for i in range(len(rows))]
        ax.bar(xs, [v.get(role, float("nan")) for v in rows.values()], width, label=role, color=colors[role])
    ax.set_xticks(range(len(rows)), list(rows), rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("forget-set ROUGE-L recall")
    ax.set_ylim(0, 1.05)
    ax.set_title("Forget set under each attack (higher: remembered)", fontsize=10)
    ax.legend(fontsize=8)
    if aucs:
        ax = axes[1]
        names = list(next(iter(aucs.values())))
        for j, role in enumerate(r for r in roles if r in aucs):
            xs = [i + (j - (len(roles) - 1) / 2) * width for i in range(len(names))]
            ax.bar(xs, [aucs[role].get(n, float("nan")) for n in names], width, label=role, color=colors[role])
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("AUC forget vs holdout")
        ax.set_title("Membership inference (0.5: never seen)", fontsize=10)
    save_png(fig, path)
