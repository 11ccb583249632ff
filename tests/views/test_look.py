"""``front --plot``, ``compare`` and ``report`` through the CLI on real digits runs: the PNGs
are the expected size and not blank, the report is one self-contained page, bad input is
one sentence with exit status 2."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from autoprune.cli import main
from autoprune.views.snapshot import take


def _png(data: bytes | Path) -> np.ndarray:
    return imread(io.BytesIO(data if isinstance(data, bytes) else data.read_bytes()), format="png")


def _drawn(image: np.ndarray, size: tuple[int, int]) -> None:
    """A plot of ``size`` (width, height) pixels with content: many colours, not one flat fill."""
    assert image.shape[1::-1] == size
    rgb = image[..., :3].reshape(-1, 3)
    assert rgb.std() > 0.05, "a blank image"
    assert len(np.unique((rgb * 255).astype(np.uint8), axis=0)) > 200, "too few colours for a plot"
    white = (rgb > 0.97).all(axis=1).mean()
    assert 0.3 < white < 0.98, f"{white:.0%} of the image is white"


def _reddish(image: np.ndarray) -> int:
    """Pixels of the red that marks the budget line and failed trials (#d62728)."""
    rgb = image[..., :3]
    return int(((abs(rgb[..., 0] - 0.84) < 0.08) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3)).sum())


def test_front_plot_marks_trials_front_budget_and_failures(random_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "front.png"
    assert main(["-q", "front", str(random_run), "--plot", str(out)]) == 0
    assert f"wrote the front plot to {out}" in capsys.readouterr().out
    image = _png(out)
    _drawn(image, (1040, 676))
    assert _reddish(image) > 150, "the budget line and the failed trials' crosses are red"
    snap = take(random_run)
    trials = snap.trials
    assert (trials["status"] == "failed").sum() == 2 and len(trials) == 11 and trials["flops_ratio"].notna().all(), \
        "failed trials are placed at their candidate's priced FLOPs"
    assert (~trials["within_budget"] & (trials["status"] == "ok")).any(), "some trials are over the budget"


def test_front_plot_of_a_staged_search_fades_early_stages(darwin_run: Path, tmp_path: Path) -> None:
    snap = take(darwin_run)
    assert set(snap.trials["stage"]) == {"early", "last"}
    assert set(snap.front["trial_id"]) <= set(snap.trials.loc[snap.trials["stage"] == "last", "trial_id"])
    out = tmp_path / "darwin.png"
    assert main(["-q", "front", str(darwin_run), "--plot", str(out)]) == 0
    _drawn(_png(out), (1040, 676))


def test_compare_two_searchers_prints_both_hypervolumes_and_overlays_both_fronts(
        random_run: Path, darwin_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "compare.png"
    assert main(["-q", "compare", str(random_run), str(darwin_run), "--plot", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in printed.splitlines()[1:3]}
    assert set(rows) == {"random", "darwin"}
    assert rows["random"][1] == "random" and rows["darwin"][1] == "darwin"
    header = printed.splitlines()[0].split()
    hv = header.index("hypervolume")  # the columns before it are one word each
    volumes = [float(rows[name][hv]) for name in ("random", "darwin")]
    assert all(0 < v < 1 for v in volumes)
    assert "one reference point for all runs" in printed
    image = _png(out)
    _drawn(image, (1040, 676))
    # both runs' colours are drawn: blue (#1f77b4) and red (#d62728)
    rgb = image[..., :3]
    blue = ((abs(rgb[..., 0] - 0.12) < 0.08) & (abs(rgb[..., 1] - 0.47) < 0.08) & (rgb[..., 2] > 0.6)).sum()
    assert blue > 100 and _reddish(image) > 100


def test_compare_uses_one_reference_point(random_run: Path, darwin_run: Path) -> None:
    from autoprune.store.front import hypervolume
    from autoprune.views.compare import comparison_table

    snaps = [take(random_run), take(darwin_run)]
    table = comparison_table(snaps)
    reference = {k: v for k, v in snaps[0].dense.items() if k != "latency_ms"}
    assert table["hypervolume"].tolist() == pytest.approx([hypervolume(s.front, reference, s.quality) for s in snaps])
    assert table["its flops_ratio"].iloc[1] <= 0.3 + 1e-9 and table["its flops_ratio"].iloc[0] <= 0.4 + 1e-9


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        for key in ("href", "src"):
            if values.get(key) and tag != "img":
                self.links.append(values[key])


def test_report_is_one_self_contained_page(random_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sub" / "report.html"
    assert main(["-q", "report", str(random_run), "--out", str(out)]) == 0
    text = out.read_text()
    page = _Page()
    page.feed(text)
    assert "script" not in page.tags and not page.links, "no scripts, nothing fetched"
    assert not re.search(r"https?://", text), "no network address anywhere"
    assert len(page.images) == 3
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        image = _png(base64.b64decode(src.split(",", 1)[1]))
        assert image.shape[0] > 500 and image[..., :3].std() > 0.05
    for heading in ("Summary", "The front", "Quality against latency and params", "How the search progressed",
                    "The searcher's choice", "Failed trials", "Configuration", "Environment", "Sessions"):
        assert f"<h2>{heading}</h2>" in text
    assert "the loss diverged (NaN) while retraining" in text and "torch" in text
    assert (random_run / "report.html").exists() is False, "written only where --out says"


def test_report_defaults_into_the_run_directory(darwin_run: Path) -> None:
    assert main(["-q", "report", str(darwin_run)]) == 0
    assert (darwin_run / "report.html").read_text().startswith("<!DOCTYPE html>")


def _refused(capsys, args: list[str], expected: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_input_is_one_sentence(random_run: Path, darwin_run: Path, tmp_path: Path, capsys) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    _refused(capsys, ["front", str(tmp_path / "missing"), "--plot", str(tmp_path / "f.png")], "is not a folder")
    _refused(capsys, ["front", str(random_run), "--plot", str(a_file / "f.png")], "choose another --plot")
    _refused(capsys, ["front", str(random_run), "--plot", str(tmp_path / "f.jpg")], "must end in .png")
    _refused(capsys, ["report", str(random_run), "--out", str(a_file / "r.html")], "choose another --out")
    _refused(capsys, ["report", str(random_run), "--out", str(tmp_path)], "must end in .html")
    _refused(capsys, ["compare", str(random_run)], "at least two run directories")
    _refused(capsys, ["compare", str(random_run), str(random_run)], "is named twice")
    # a run whose first trial has not finished yet: run.json written, the journal still empty
    empty = tmp_path / "empty"
    shutil.copytree(random_run, empty)
    (empty / "trials.jsonl").write_text("")
    _refused(capsys, ["report", str(empty)], "has no trials yet")
    _refused(capsys, ["front", str(empty), "--plot", str(tmp_path / "e.png")], "has no trials yet")
    _refused(capsys, ["compare", str(random_run), str(empty)], "has no trials yet")
    # the same model searched on other data, as its run.json records it
    other = tmp_path / "other-data"
    shutil.copytree(random_run, other)
    info = json.loads((other / "run.json").read_text())
    info["data_fingerprint"] = "0" * 16
    (other / "run.json").write_text(json.dumps(info))
    _refused(capsys, ["compare", str(random_run), str(other), "--plot", str(tmp_path / "c.png")],
             "was searched on a different data than")
    info["model_spec"]["name"] = "resnet20"
    (other / "run.json").write_text(json.dumps(info))
    _refused(capsys, ["compare", str(darwin_run), str(other)], "was searched on a different model than")
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.html")), "nothing written on bad input"
