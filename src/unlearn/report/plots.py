"""The report's plots: utility against forgetting, and continual curves (PNG, atomic)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from unlearn.io import atomic_write_bytes
from unlearn.report.runs import Run, short_labels
from unlearn.rundir import KEPT


def new_figure(width: float, height: float):
    # The Agg canvas directly, not pyplot: no global state, no display needed. (matplotlib is
    # imported where a plot is drawn: about a second of every command's start-up otherwise.)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: str | Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def colors_for(keys: list[str]) -> dict[str, str]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {k: cmap(i % 10) for i, k in enumerate(dict.fromkeys(keys))}


REFERENCE_METHODS = ("finetune", "–")  # a fine-tuned (target / retain) or evaluated model, not an unlearning run


def scenario_of(run: Run) -> str:
    """``real_world`` or ``tofu``: runs of different scenarios are never drawn on one scatter."""
    return "real_world" if run.data_info.get("layout") == "real_world" else "tofu"


def plot_tradeoff(runs: list[Run], path: str | Path, baseline: Run | None = None) -> bool:
    """MU (y) against FE (x): one numbered point per run, coloured by method, keyed in the legend
    (numbers instead of names, so nothing overlaps); fine-tuned or evaluated models are grey
    references; axes fit the data. False when nothing to plot."""
    from matplotlib.lines import Line2D

    points = [r for r in runs if r.value("Model Utility") is not None and r.value("Forget Efficacy") is not None]
    if not points:
        return False
    fig = new_figure(8.5, 5.5)
    ax = fig.add_subplot()
    methods = [r.method for r in points if r.method not in REFERENCE_METHODS]
    colors = colors_for(methods)
    handles, placed = [], []
    ends: tuple[list, list] = ([], [])  # the intervals' ends: the axes show every bar whole
    span = _spans(points, baseline)
    for n, (r, label) in enumerate(zip(points, short_labels([r.name for r in points]), strict=False), 1):
        x, y = r.value("Forget Efficacy"), r.value("Model Utility")
        reference = r.method in REFERENCE_METHODS
        color = "grey" if reference else colors[r.method]
        marker = "D" if reference else ("s" if r.is_continual else "o")
        ax.scatter([x], [y], color=color, marker=marker, s=40, zorder=3)
        ix, iy = r.intervals.get("Forget Efficacy"), r.intervals.get("Model Utility")
        if ix is not None or iy is not None:  # the 95% bootstrap intervals over the items
            xerr = [[x - ix.lo], [ix.hi - x]] if ix is not None else None
            yerr = [[y - iy.lo], [iy.hi - y]] if iy is not None else None
            ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="none", ecolor=color, elinewidth=1, capsize=2, zorder=2)
            ends[0].extend([ix.lo, ix.hi] if ix is not None else [])
            ends[1].extend([iy.lo, iy.hi] if iy is not None else [])
        ax.annotate(str(n), (x, y), xytext=_free_offset(x, y, span, placed), textcoords="offset points", fontsize=7)
        kind = (
            " (fine-tuned model)"
            if r.method == "finetune"
            else f" (evaluation of {r.config.get('model', 'a model')})"
            if reference
            else " (continual, last task)"
            if r.is_continual
            else ""
        )
        handles.append(Line2D([], [], marker=marker, linestyle="", color=color, label=f"{n}  {label}{kind}"))
    xs = [r.value("Forget Efficacy") for r in points]
    ys = [r.value("Model Utility") for r in points]
    if baseline and baseline.value("Model Utility") is not None:
        x, y = baseline.value("Forget Efficacy"), baseline.value("Model Utility")
        if x is not None:  # hollow and beneath the runs: a run at the same place stays visible
            ax.scatter([x], [y], marker="*", s=160, facecolors="none", edgecolors="black", zorder=2)
            handles.append(
                Line2D(
                    [], [], marker="*", markersize=10, linestyle="", color="black", label="target (before unlearning)"
                )
            )
            xs, ys = xs + [x], ys + [y]
        else:
            ax.axhline(y, color="black", linestyle="--", linewidth=1)
            handles.append(Line2D([], [], linestyle="--", color="black", label="target MU"))
            ys = ys + [y]
    for values, setter in ((xs + ends[0], ax.set_xlim), (ys + ends[1], ax.set_ylim)):  # fit the data, in [0, 1]
        lo, hi = min(values), max(values)
        pad = max(0.03, 0.08 * (hi - lo))
        setter(max(-0.02, lo - pad), min(1.02, hi + pad))
    ax.set_xlabel("Forget Efficacy (higher: more forgotten; the metric lies in [0, 1])")
    ax.set_ylabel("Model Utility (higher: more kept; in [0, 1])")
    ax.set_title("Utility vs forgetting (bars: 95% intervals over the items)")
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    save_png(fig, path)
    return True


OFFSETS = [(4, 3), (4, -10), (-12, 3), (-12, -10), (10, 10), (-18, 10), (10, -16), (-18, -16)]


def _spans(points: list[Run], baseline: Run | None) -> tuple[float, float]:
    xs = [r.value("Forget Efficacy") for r in points] + ([baseline.value("Forget Efficacy")] if baseline else [])
    ys = [r.value("Model Utility") for r in points] + ([baseline.value("Model Utility")] if baseline else [])
    xs, ys = [v for v in xs if v is not None], [v for v in ys if v is not None]
    return max(max(xs) - min(xs), 0.06), max(max(ys) - min(ys), 0.06)


def _free_offset(x: float, y: float, span: tuple[float, float], placed: list) -> tuple[int, int]:
    """A label offset (points) whose label does not sit on an earlier one: the labels of points closer
    than about a label's size are staggered around them, never piled into one blob."""
    # one point of offset is about 1/300 of the axis at this figure size
    for dx, dy in OFFSETS:
        spot = (x / span[0] + dx / 300, y / span[1] + dy / 250)
        if all(abs(spot[0] - a) > 0.035 or abs(spot[1] - b) > 0.045 for a, b in placed):
            placed.append(spot)
            return dx, dy
    placed.append((x / span[0] + 4 / 300, y / span[1] + 3 / 250))
    return OFFSETS[0]


def plot_continual(runs: list[Run], path: str | Path, baseline: Run | None = None) -> bool:
    """MU and FE against the number of tasks unlearned, one line per continual run."""
    from matplotlib.ticker import MaxNLocator

    keys = ("Model Utility", "Forget Efficacy")
    curves = [r for r in runs if any(row.get(k) is not None for row in r.curve or [] for k in keys)]
    if not curves:
        return False
    fig = new_figure(11, 4.2)
    axes = fig.subplots(1, 2)
    colors = colors_for([r.name for r in curves])
    labels = dict(zip([r.name for r in curves], short_labels([r.name for r in curves]), strict=False))
    for ax, key in zip(axes, keys, strict=False):
        for r in curves:
            pts = [
                (i + 1 if row.get("n_unlearned") is None else row["n_unlearned"], row.get(key))
                for i, row in enumerate(r.curve)
            ]
            pts = [(x, y) for x, y in pts if y is not None]
            if pts:
                ax.plot(*zip(*pts, strict=False), marker="o", markersize=4, color=colors[r.name], label=labels[r.name])
        if baseline and baseline.value(key) is not None:
            ax.axhline(baseline.value(key), color="black", linestyle="--", linewidth=1, label="baseline")
        ax.set_xlabel("tasks unlearned")
        ax.set_ylabel(key)
        ax.set_ylim(-0.03, 1.03)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.set_title(key)
    axes[0].legend(fontsize=8, loc="best")
    save_png(fig, path)
    return True


def plot_trajectories(runs: list[Run], path: str | Path, keys=("Model Utility", "Forget Efficacy")) -> bool:
    """MU and FE (or ``keys``) against optimiser steps, one line per run evaluated while it trained
    (``--eval-every``); a marked point where a run looked collapsed, a star at a kept step."""
    traced = [r for r in runs if r.trajectory]
    if not traced:
        return False
    fig = new_figure(5.5 * len(keys), 4.2)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    colors = colors_for([r.name for r in traced])
    labels = dict(zip([r.name for r in traced], short_labels([r.name for r in traced]), strict=False))
    for ax, key in zip(axes, keys, strict=False):
        for r in traced:
            pts = [(row["step"], row.get(key)) for row in r.trajectory if row.get(key) is not None]
            if not pts:
                continue
            ax.plot(*zip(*pts, strict=False), marker="o", markersize=3, color=colors[r.name], label=labels[r.name])
            bad = [
                (row["step"], row.get(key)) for row in r.trajectory if row.get("collapse") and row.get(key) is not None
            ]
            if bad:
                ax.scatter(*zip(*bad, strict=False), marker="x", s=40, color="red", zorder=3)
            kept = _kept_step(r)
            if kept is not None:
                y = next((row.get(key) for row in r.trajectory if row["step"] == kept), None)
                if y is not None:
                    ax.scatter([kept], [y], marker="*", s=120, color=colors[r.name], edgecolor="black", zorder=4)
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(key)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(True, alpha=0.3)
        ax.set_title(f"{key} while unlearning")
        if not ax.get_lines():
            ax.text(
                0.5,
                0.5,
                "not evaluated while unlearning",
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=9,
                color="grey",
            )
    legend_ax = next((ax for ax in axes if ax.get_lines()), None)
    if legend_ax is not None:
        legend_ax.legend(fontsize=8, loc="best")
    save_png(fig, path)
    return True


def _kept_step(run: Run) -> int | None:
    path = Path(run.path) / KEPT
    try:
        return json.loads(path.read_text(encoding="utf-8"))["step"] if path.is_file() else None
    except (OSError, ValueError, KeyError):
        return None
