"""The report opened in headless Chromium (Debian's ``chromium`` package): the page renders,
and its embedded plots load (their colours are on the screenshot; a page whose images did
not load shows only their alt text)."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from autoprune.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _screenshot(page: Path, out: Path) -> np.ndarray:
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={out}", "--window-size=1200,2600", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    return imread(io.BytesIO(out.read_bytes()), format="png")[..., :3]


def _plot_pixels(image: np.ndarray) -> int:
    """Pixels of the plots' own colours: the budget's red and the hypervolume's red (#d62728),
    and the front's blue (#1f77b4)."""
    red = (abs(image[..., 0] - 0.84) < 0.08) & (image[..., 1] < 0.3) & (image[..., 2] < 0.3)
    blue = (abs(image[..., 0] - 0.12) < 0.08) & (abs(image[..., 1] - 0.47) < 0.08) & (image[..., 2] > 0.6)
    return int(red.sum() + blue.sum())


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (apt-get install chromium)")
def test_the_report_renders_in_chromium_with_its_images(random_run: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    assert main(["-q", "report", str(random_run), "--out", str(page)]) == 0
    shot = _screenshot(page, tmp_path / "shot.png")
    assert shot.shape[:2] == (2600, 1200)
    assert shot.std() > 0.05, "a blank page"
    assert (shot > 0.97).all(axis=2).mean() < 0.95, "almost nothing drawn"
    # the same page with its images taken out: the plots' colours are gone from the screenshot
    broken = tmp_path / "no-images.html"
    text = page.read_text()
    broken.write_text(text.replace("data:image/png;base64,", "data:image/png;base64,AAAA"))
    without = _screenshot(broken, tmp_path / "broken.png")
    assert _plot_pixels(shot) > 1000 and _plot_pixels(without) < 50
