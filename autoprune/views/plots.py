"""Figures of runs, drawn with matplotlib's Agg canvas (no display, no pyplot state).

- :func:`front_figure`: quality against FLOPs over every trial, the front as a staircase;
- :func:`tradeoff_figure`: quality against measured latency and against params;
- :func:`progress_figure`: the front's best quality and hypervolume against trials and time;
- :func:`compare_figure`: several runs' fronts overlaid.

Trials are drawn by kind: successful within budget (coloured by measured latency where it
was measured), over budget (hollow grey), failed (red crosses on the lower edge, at the
FLOPs their candidate has), and a staged searcher's early stages faded (their scores come
from less retraining and are not comparable with the last stage's).
"""

from __future__ import annotations

import io
import logging

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from autoprune.knee import knee_row, staircase
from autoprune.views.snapshot import Snapshot

logger = logging.getLogger(__name__)

#: figure size in inches and resolution: 1040 x 680 pixels, legible on a laptop and in a report
SIZE = (8.0, 5.2)
DPI = 130
FLOPS_LABEL = "FLOPs (multiply-accumulates), fraction of the dense model"
#: front members are labelled with their trial ids (what --pick takes) up to this many
MAX_LABELLED = 20
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    FigureCanvasAgg(figure)
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _figure(size: tuple[float, float] = SIZE) -> Figure:
    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _quality_axis(ax, snap: Snapshot) -> None:
    quality = snap.quality
    unit = "fraction correct" if quality.metric == "accuracy" else "lower is better"
    ax.set_ylabel(f"{quality.label} ({unit})")
    if quality.metric == "perplexity":
        ax.set_yscale("log")


def _latency_colours(snap: Snapshot) -> tuple[float, float] | None:
    latency = snap.trials["latency_ms"] if "latency_ms" in snap.trials else pd.Series(dtype=float)
    latency = latency.dropna()
    if latency.empty:
        return None
    low, high = float(latency.min()), float(latency.max())
    return (low, high if high > low else low * 1.01 + 1e-9)


def _draw_trials(ax, snap: Snapshot, x: str, colour_range: tuple[float, float] | None):  # noqa: ANN202
    """Every trial of ``snap`` at ``x`` (a trial-table column); returns the latency scatter for a colour bar."""
    trials, metric = snap.trials, snap.quality.metric
    ok = trials["status"] == "ok"
    within = ok & trials["within_budget"]
    last = trials["stage"] == "last"
    mappable = None
    for mask, alpha, size, label in ((within & last, 0.9, 34, "trial within budget"),
                                     (within & ~last, 0.25, 18, "early stage (less retraining)")):
        part = trials[mask]
        if part.empty:
            continue
        if colour_range is not None and part["latency_ms"].notna().all():
            mappable = ax.scatter(part[x], part[metric], c=part["latency_ms"], cmap="viridis", vmin=colour_range[0],
                                  vmax=colour_range[1], s=size, alpha=alpha, linewidths=0, label=label, zorder=3)
        else:
            ax.scatter(part[x], part[metric], color="#4c72b0", s=size, alpha=alpha, linewidths=0, label=label,
                       zorder=3)
    for mask, alpha, label in ((last, 0.9, "over budget"), (~last, 0.3, "over budget, early stage")):
        over = trials[ok & ~trials["within_budget"] & mask]
        if not over.empty:
            ax.scatter(over[x], over[metric], facecolors="none", edgecolors="#888888", s=30, linewidths=1.0,
                       alpha=alpha, label=label, zorder=2)
    return mappable


def _draw_failed(ax, snap: Snapshot, x: str) -> None:
    failed = snap.trials[snap.trials["status"] != "ok"]
    if failed.empty or failed[x].isna().all():
        return
    low, high = ax.get_ylim()
    ax.scatter(failed[x], np.full(len(failed), low), marker="x", color="#d62728", s=40, linewidths=1.5,
               clip_on=False, label=f"failed ({len(failed)})", zorder=4)
    ax.set_ylim(low, high)


def _draw_staircase(ax, front: pd.DataFrame, snap: Snapshot, x: str, colour: str, label: str) -> None:
    """The front's best quality at each cost, as a step line through its members."""
    if front.empty:
        return
    steps = staircase(front.assign(flops=front[x]), snap.quality)
    ax.step(steps[x], steps[snap.quality.metric], where="post", color=colour, linewidth=1.8, label=label, zorder=5)
    ax.scatter(front[x], front[snap.quality.metric], facecolors="none", edgecolors=colour, s=70, linewidths=1.4,
               zorder=5)
    if len(front) <= MAX_LABELLED:
        for _, row in front.iterrows():
            ax.annotate(str(int(row["trial_id"])), (row[x], row[snap.quality.metric]), textcoords="offset points",
                        xytext=(5, 5), fontsize=7, color=colour)


def _reference_lines(ax, snap: Snapshot, resource: str | None) -> None:
    """The dense model's quality, and the budget on ``resource`` (a ratio of dense) where there is one."""
    quality = snap.quality
    dense = snap.dense.get(quality.metric)
    if dense is not None:
        ax.axhline(dense, color="#333333", linestyle="--", linewidth=1.0,
                   label=f"dense model ({quality.format(dense)})", zorder=1)
    budget = snap.budget_ratio(resource) if resource else None
    if budget is not None:
        ax.axvline(budget, color="#d62728", linestyle=":", linewidth=1.3, label=f"{resource} budget ({budget:.2f})",
                   zorder=1)


def front_figure(snap: Snapshot) -> Figure:
    """Quality against FLOPs over every trial, with the front, the dense model, the budget and the knee."""
    figure = _figure()
    ax = figure.add_subplot()
    colours = _latency_colours(snap)
    mappable = _draw_trials(ax, snap, "flops_ratio", colours)
    _draw_staircase(ax, snap.front, snap, "flops_ratio", "#111111", f"Pareto front ({len(snap.front)} models)")
    if not snap.front.empty:
        knee = knee_row(snap.front, snap.quality)
        ax.scatter([knee["flops_ratio"]], [knee[snap.quality.metric]], marker="*", s=220, color="#ff7f0e",
                   edgecolors="black", linewidths=0.8, label=f"knee (--pick knee: trial {int(knee['trial_id'])})",
                   zorder=6)
    _reference_lines(ax, snap, "flops")
    _quality_axis(ax, snap)
    ax.set_xlabel(FLOPS_LABEL)
    _draw_failed(ax, snap, "flops_ratio")
    if mappable is not None:
        bar = figure.colorbar(mappable, ax=ax)
        bar.set_label(f"measured latency (ms, batch {snap.run.config.latency_batch_size})")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.85)
    ax.set_title(f"{snap.name}: {snap.searcher}, {len(snap.trials)} trials; higher and further left is better"
                 if snap.quality.higher_is_better else
                 f"{snap.name}: {snap.searcher}, {len(snap.trials)} trials; lower and further left is better",
                 fontsize=10)
    return figure


def tradeoff_figure(snap: Snapshot) -> Figure:
    """Quality against measured latency (left) and params (right), last-stage trials only."""
    figure = _figure((10.0, 4.6))
    last = snap.trials[(snap.trials["stage"] == "last") & (snap.trials["status"] == "ok")]
    panels = (("latency_ms", f"measured latency (ms, batch {snap.run.config.latency_batch_size})", None),
              ("params_ratio", "parameters, fraction of the dense model", "params"))
    for index, (column, label, resource) in enumerate(panels):
        ax = figure.add_subplot(1, 2, index + 1)
        if column not in last or last[column].isna().all():
            ax.text(0.5, 0.5, f"{column.split('_')[0]} was not measured in this run", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_axis_off()
            continue
        within = last[last["within_budget"]]
        over = last[~last["within_budget"]]
        ax.scatter(within[column], within[snap.quality.metric], color="#4c72b0", s=26, alpha=0.8, linewidths=0,
                   label="trial within budget")
        if not over.empty:
            ax.scatter(over[column], over[snap.quality.metric], facecolors="none", edgecolors="#888888", s=26,
                       label="over budget")
        front = snap.front.dropna(subset=[column])
        _draw_staircase(ax, front, snap, column, "#111111", "Pareto front")
        _reference_lines(ax, snap, resource)
        if column == "latency_ms" and snap.dense.get("latency_ms"):
            ax.axvline(snap.dense["latency_ms"], color="#555555", linestyle="-.", linewidth=1.0,
                       label=f"dense latency ({snap.dense['latency_ms']:.3g} ms)")
        _quality_axis(ax, snap)
        ax.set_xlabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8, framealpha=0.85)
    return figure


def progress_figure(snap: Snapshot) -> Figure:
    """The front's best quality (solid) and hypervolume (dashed) against trials and against wall time."""
    figure = _figure((10.0, 4.2))
    progress = snap.progress()
    minutes = progress["seconds"] / 60.0
    use_minutes = bool(minutes.max() >= 3) if not minutes.empty else False
    axes_x = (("trials", progress["trials"], "trials finished"),
              ("time", minutes if use_minutes else progress["seconds"],
               "wall time since the first trial started (" + ("minutes)" if use_minutes else "seconds)")))
    for index, (_, x, label) in enumerate(axes_x):
        ax = figure.add_subplot(1, 2, index + 1)
        ax.plot(x, progress["best"], color="#1f77b4", linewidth=1.8, label=f"front's best {snap.quality.metric}")
        _quality_axis(ax, snap)
        ax.set_xlabel(label)
        ax.grid(True, alpha=0.3)
        twin = ax.twinx()
        twin.plot(x, progress["hypervolume"], color="#d62728", linestyle="--", linewidth=1.6, label="hypervolume")
        twin.set_ylabel("hypervolume (normalised, larger is better)")
        lines = ax.get_lines() + twin.get_lines()
        ax.legend(lines, [line.get_label() for line in lines], loc="lower right", fontsize=8)
    return figure


def compare_figure(snaps: list[Snapshot]) -> Figure:
    """The fronts of several runs on one model and data, overlaid, one colour per run."""
    figure = _figure()
    ax = figure.add_subplot()
    first = snaps[0]
    for index, snap in enumerate(snaps):
        colour = COLOURS[index % len(COLOURS)]
        eligible = snap.trials[(snap.trials["status"] == "ok") & snap.trials["within_budget"]
                               & (snap.trials["stage"] == "last")]
        ax.scatter(eligible["flops_ratio"], eligible[snap.quality.metric], color=colour, s=12, alpha=0.25,
                   linewidths=0)
        label = f"{snap.name} ({snap.searcher}): {len(snap.front)} on the front"
        _draw_staircase(ax, snap.front, snap, "flops_ratio", colour, label)
        budget = snap.budget_ratio("flops")
        if budget is not None:
            ax.axvline(budget, color=colour, linestyle=":", linewidth=1.2)
    dense = first.dense.get(first.quality.metric)
    if dense is not None:
        ax.axhline(dense, color="#333333", linestyle="--", linewidth=1.0,
                   label=f"dense model ({first.quality.format(dense)})")
    _quality_axis(ax, first)
    ax.set_xlabel(FLOPS_LABEL + " (dotted: each run's budget)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.85)
    ax.set_title(f"{len(snaps)} runs of {first.model_name} on {first.run.config.data}; faint dots: their trials",
                 fontsize=10)
    return figure
