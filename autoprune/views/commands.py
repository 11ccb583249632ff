"""The CLI commands that look at runs: ``compare``, ``report``, ``status``, and ``front --plot``.

Kept beside the views they drive so that :mod:`autoprune.cli` only registers them
(:func:`add_commands`, :data:`HANDLERS`).
"""

from __future__ import annotations

import argparse
import logging

import pandas as pd

logger = logging.getLogger(__name__)


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]",
                 quiet: argparse.ArgumentParser) -> None:
    """Register ``compare``, ``report`` and ``status`` on the CLI's sub-command parser."""
    compare = commands.add_parser("compare", parents=[quiet],
                                  help="compare runs of one model on one data set: fronts, hypervolume, best quality")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="two or more run directories")
    compare.add_argument("--plot", metavar="FILE.png", help="also draw the fronts overlaid into this PNG file")

    report = commands.add_parser("report", parents=[quiet],
                                 help="write one self-contained HTML page about a run (plots, front, failures, setup)")
    report.add_argument("run_dir", help="a run directory, as `autoprune search` printed it")
    report.add_argument("--out", metavar="FILE.html", help="where to write the page [RUN_DIR/report.html]")

    status = commands.add_parser("status", parents=[quiet],
                                 help="how a run is doing (running or finished): trials, best, rate, time left")
    status.add_argument("run_dir", help="a run directory, as `autoprune search` printed it")


def plot_front(run_dir: str, plot: str) -> None:
    """``autoprune front RUN --plot FILE.png``."""
    from autoprune.views.output import check_output, write_output
    from autoprune.views.plots import front_figure, png_bytes
    from autoprune.views.snapshot import take

    path = check_output(plot, "--plot", ".png")
    snap = take(run_dir)
    write_output(path, png_bytes(front_figure(snap)), "--plot")
    print(f"wrote the front plot to {path}")


def cmd_compare(args: argparse.Namespace) -> int:
    from autoprune.views.compare import comparison_table
    from autoprune.views.output import check_output, write_output
    from autoprune.views.plots import compare_figure, png_bytes
    from autoprune.store.front import describe_reference, reference_point
    from autoprune.views.snapshot import take

    path = check_output(args.plot, "--plot", ".png") if args.plot is not None else None
    snaps = [take(run_dir) for run_dir in args.run_dirs]
    table = comparison_table(snaps)
    quality = snaps[0].quality
    with pd.option_context("display.width", 200, "display.max_columns", None,
                           "display.float_format", "{:.4f}".format):
        print(table.to_string(index=False))
    dense = {k: v for k, v in snaps[0].dense.items() if k != "latency_ms"}
    reference = describe_reference(reference_point(snaps[0].front, dense, quality), dense, quality)
    print(f"\nhypervolume: one reference point for all runs (objectives normalised by {snaps[0].name}'s dense "
          f"model: {quality.label} error, FLOPs and params ratios; latency left out), at {reference}; best "
          f"{quality.metric}: the front's best within each run's own budget")
    if path is not None:
        write_output(path, png_bytes(compare_figure(snaps)), "--plot")
        print(f"wrote the fronts overlaid to {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from autoprune.views.output import check_output, write_output
    from autoprune.views.report import render_report
    from autoprune.views.snapshot import take

    out = check_output(args.out if args.out is not None else str(Path(args.run_dir) / "report.html"), "--out",
                       ".html")
    snap = take(args.run_dir)
    write_output(out, render_report(snap).encode(), "--out")
    print(f"wrote the report to {out}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from autoprune.views.status import read_status

    print(read_status(args.run_dir).describe())
    return 0


HANDLERS = {"compare": cmd_compare, "report": cmd_report, "status": cmd_status}
