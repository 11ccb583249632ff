"""One self-contained HTML page about a run: plots, the front, progress, failures, setup.

The page needs nothing but itself: the PNG plots are embedded as base64 ``data:`` URLs,
the style is inline, there is no script and no link to fetch; so it can be mailed,
archived with the run, or opened on a machine without network.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from autoprune import __version__
from autoprune.knee import knee_row
from autoprune.views.compare import search_seconds
from autoprune.views.plots import front_figure, png_bytes, progress_figure, tradeoff_figure
from autoprune.views.snapshot import Snapshot

logger = logging.getLogger(__name__)

#: at most this many failed trials are listed one by one (all are counted by reason)
MAX_FAILED_LISTED = 50

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; background: #fff; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 1.8em;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.muted { color: #666; } img { max-width: 100%; height: auto; border: 1px solid #eee; margin: 0.5em 0; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } td.text, th.text { text-align: left; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1.2em; }
dt { font-weight: 600; } dd { margin: 0; font-family: monospace; white-space: pre-wrap; }
"""

FRONT_COLUMNS = ("trial_id", "accuracy", "perplexity", "loss", "kl_to_dense", "flops_ratio", "params_ratio",
                 "latency_ms", "predicted_latency_ms", "decode_ms_per_token", "fidelity", "draws")


def _image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, border=0, na_rep="", float_format=lambda v: f"{v:.4g}")


def _definitions(items: dict[str, Any]) -> str:
    rows = []
    for key, value in items.items():
        shown = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        rows.append(f"<dt>{html.escape(str(key))}</dt><dd>{html.escape(shown)}</dd>")
    return "<dl>" + "".join(rows) + "</dl>"


def _summary(snap: Snapshot) -> dict[str, Any]:
    quality, dense, trials = snap.quality, snap.dense, snap.trials
    ok = int((trials["status"] == "ok").sum())
    summary: dict[str, Any] = {
        "searcher": snap.searcher,
        "budget": ", ".join(snap.run.config.budget),
        "trials": f"{len(trials)} ({ok} ok, {len(trials) - ok} failed)",
        "search time": f"{search_seconds(snap) / 60:.1f} minutes",
        "dense model": f"{snap.model_name}: {quality.label} {quality.format(dense[quality.metric])}, "
                       f"{int(dense['flops']):,} FLOPs (MACs), {int(dense['params']):,} params"
                       + (f", {dense['latency_ms']:.3g} ms" if dense.get("latency_ms") else ""),
        "Pareto front": f"{len(snap.front)} models, hypervolume {snap.hypervolume:.4f}",
    }
    if not snap.front.empty:
        best = snap.front.iloc[0]
        summary["best on the front"] = (f"trial {int(best['trial_id'])}: {quality.label} "
                                        f"{quality.format(best[quality.metric])} at "
                                        f"{best['flops_ratio']:.3f} of the dense FLOPs")
        knee = knee_row(snap.front, quality)
        summary["knee (--pick knee)"] = (f"trial {int(knee['trial_id'])}: {quality.format(knee[quality.metric])} at "
                                         f"{knee['flops_ratio']:.3f} of the dense FLOPs")
    return summary


def _choice(snap: Snapshot) -> str:
    chosen = snap.run.record.incumbent
    options = snap.run.record.searcher
    lines = [f"<p>Searcher <b>{html.escape(snap.searcher)}</b>; its options:</p>", _definitions(options)]
    if chosen is None:
        lines.append("<p class='muted'>It keeps no choice of its own (or has not chosen yet); "
                     "<code>autoprune export</code> picks the front's best.</p>")
    else:
        row = snap.trials[snap.trials["trial_id"] == chosen]
        lines.append(f"<p>Its choice, what <code>autoprune export</code> picks by default: trial {int(chosen)}.</p>")
        if not row.empty:
            lines.append(_table(row[[c for c in FRONT_COLUMNS if c in row and row[c].notna().any()]]))
    return "\n".join(lines)


def _failures(snap: Snapshot) -> str:
    failed = snap.trials[snap.trials["status"] != "ok"]
    if failed.empty:
        return "<p>No trial failed.</p>"
    reasons = failed["error"].fillna("(no reason recorded)").value_counts()
    parts = [f"<p>{len(failed)} trials failed, by reason:</p>",
             _table(pd.DataFrame({"reason": reasons.index, "trials": reasons.to_numpy()}))]
    listed = failed[["trial_id", "fidelity", "flops_ratio", "error"]].head(MAX_FAILED_LISTED)
    parts.append(f"<p>The first {len(listed)}:</p>" + _table(listed))
    return "\n".join(parts)


def _front_table(snap: Snapshot) -> str:
    if snap.front.empty:
        return "<p>The front is empty: no successful trial within budget.</p>"
    front = snap.front
    return _table(front[[c for c in FRONT_COLUMNS if c in front and front[c].notna().any()]])


def _progress_table(snap: Snapshot) -> str:
    progress = snap.progress()
    shown = progress.iloc[sorted({*range(0, len(progress), max(1, len(progress) // 8)), len(progress) - 1})]
    return _table(shown.rename(columns={"best": f"best {snap.quality.metric}"}))


def render_report(snap: Snapshot) -> str:
    """The report of ``snap`` as one HTML document (see the module docstring)."""
    record = snap.run.record
    title = f"autoprune run {snap.name}"
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='muted'>{html.escape(snap.path)}; created {html.escape(str(record.created_at or '?'))}; "
        f"report written {datetime.now(timezone.utc).isoformat(timespec='seconds')} by autoprune {__version__}. "
        "FLOPs are multiply-accumulates (MACs) per input.</p>",
        "<h2>Summary</h2>", _definitions(_summary(snap)),
        "<h2>The front</h2>",
        _image(png_bytes(front_figure(snap)), "quality against FLOPs for every trial, with the Pareto front"),
        _front_table(snap),
        "<h2>Quality against latency and params</h2>",
        _image(png_bytes(tradeoff_figure(snap)), "quality against measured latency and against params"),
        "<h2>How the search progressed</h2>",
        _image(png_bytes(progress_figure(snap)), "the front's best quality and hypervolume against trials and time"),
        _progress_table(snap),
        "<h2>The searcher's choice</h2>", _choice(snap),
        "<h2>Failed trials</h2>", _failures(snap),
        "<h2>Configuration</h2>", _definitions(snap.run.config.to_dict()),
        "<h2>Environment</h2>", _definitions(record.environment),
        "<h2>Sessions</h2>", _definitions({f"session {i + 1}": s for i, s in enumerate(record.sessions)}),
    ]
    body = "\n".join(sections)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")
