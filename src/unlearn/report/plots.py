"""The report's plots: utility against forgetting, and continual curves (PNG, atomic)."""

from __future__ import annotations

import io
from pathlib import Path

from ..io import atomic_write_bytes
from .runs import Run, short_labels


def _new_figure(width: float, height: float):
    # The Agg canvas directly, not pyplot: no global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig, path: str | Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def _colors(keys: list[str]) -> dict[str, str]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {k: cmap(i % 10) for i, k in enumerate(dict.fromkeys(keys))}


def plot_tradeoff(runs: list[Run], path: str | Path, baseline: Run | None = None) -> bool:
    """MU (y) against FE (x), one labelled point per run, colour by method; False when nothing to plot."""
    points = [r for r in runs if r.value("Model Utility") is not None and r.value("Forget Efficacy") is not None]
    if not points:
        return False
    fig = _new_figure(7.5, 5.5)
    ax = fig.add_subplot()
    colors = _colors([r.method for r in points])
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="", color=c, label=m) for m, c in colors.items()]
    if any(r.is_continual for r in points):
        handles.append(Line2D([], [], marker="s", linestyle="", color="grey", label="continual (last task)"))
    at: dict[tuple[float, float], list[str]] = {}  # runs on the same spot share one label
    for r, label in zip(points, short_labels([r.name for r in points])):
        x, y = r.value("Forget Efficacy"), r.value("Model Utility")
        ax.scatter([x], [y], color=colors[r.method], marker="s" if r.is_continual else "o", s=36, zorder=3)
        at.setdefault((round(x, 4), round(y, 4)), []).append(label)
    for (x, y), labels in at.items():
        right = x > 0.6  # labels point inwards so they stay inside the axes
        ax.annotate("\n".join(labels), (x, y), xytext=(-5 if right else 5, 4), textcoords="offset points",
                    fontsize=7, ha="right" if right else "left", va="bottom")
    if baseline and baseline.value("Model Utility") is not None:
        x = baseline.value("Forget Efficacy")
        y = baseline.value("Model Utility")
        if x is not None:
            ax.scatter([x], [y], marker="*", s=160, color="black", zorder=4)
            handles.append(Line2D([], [], marker="*", markersize=10, linestyle="", color="black", label="baseline"))
        else:
            ax.axhline(y, color="black", linestyle="--", linewidth=1)
            handles.append(Line2D([], [], linestyle="--", color="black", label="baseline MU"))
    xs = [r.value("Forget Efficacy") for r in points]
    ys = [r.value("Model Utility") for r in points]
    ax.set_xlim(min(0.0, *xs) - 0.03, max(1.0, *xs) + 0.03)
    ax.set_ylim(min(0.0, *ys) - 0.03, max(1.0, *ys) + 0.03)
    ax.set_xlabel("Forget Efficacy (higher: more forgotten)")
    ax.set_ylabel("Model Utility (higher: more kept)")
    ax.set_title("Utility vs forgetting")
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, fontsize=8, loc="best")
    _save_png(fig, path)
    return True


def plot_continual(runs: list[Run], path: str | Path, baseline: Run | None = None) -> bool:
    """MU and FE against the number of tasks unlearned, one line per continual run."""
    from matplotlib.ticker import MaxNLocator

    keys = ("Model Utility", "Forget Efficacy")
    curves = [r for r in runs if any(row.get(k) is not None for row in r.curve or [] for k in keys)]
    if not curves:
        return False
    fig = _new_figure(11, 4.2)
    axes = fig.subplots(1, 2)
    colors = _colors([r.name for r in curves])
    labels = dict(zip([r.name for r in curves], short_labels([r.name for r in curves])))
    for ax, key in zip(axes, keys):
        for r in curves:
            pts = [(i + 1 if row.get("n_unlearned") is None else row["n_unlearned"], row.get(key))
                   for i, row in enumerate(r.curve)]
            pts = [(x, y) for x, y in pts if y is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", markersize=4, color=colors[r.name], label=labels[r.name])
        if baseline and baseline.value(key) is not None:
            ax.axhline(baseline.value(key), color="black", linestyle="--", linewidth=1, label="baseline")
        ax.set_xlabel("tasks unlearned")
        ax.set_ylabel(key)
        ax.set_ylim(-0.03, 1.03)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.set_title(key)
    axes[0].legend(fontsize=8, loc="best")
    _save_png(fig, path)
    return True
