"""A full disk (ENOSPC injected where the journal and the export write) during a search
and an export: one sentence, exit 2, the journal whole and resumable, no folder left."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import SEARCH, child_env, cli, lines, sessions, trial_ids

#: after ``after`` whole journal lines, the next write puts half a line and then finds the disk full
FULL_AFTER = """
import errno, os, sys
import autoprune.store.journal as journal
calls = {{"n": 0}}
def write(fd, data):
    calls["n"] += 1
    if calls["n"] > {after}:
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return os.write(fd, data)
journal._write = write
from autoprune.cli import main
sys.exit(main(sys.argv[1:]))
"""

EXPORT_FULL = """
import errno, os, sys
import autoprune.export as export
def save_weights(state, path, **kw):
    path.write_bytes(b"x" * 100)  # part of a file, then the disk is full
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
export.save_weights = save_weights
from autoprune.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _cli_with(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, "-q", *args], capture_output=True, text=True, timeout=300,
                          env=child_env())


def test_a_full_disk_during_a_search_keeps_the_journal_resumable(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = _cli_with(FULL_AFTER.format(after=2), *SEARCH, "--run-dir", str(run_dir))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert f"no space left on the device of '{run_dir}' (2 trials are journaled and kept)" in done.stderr
    assert f"resume with: autoprune search --resume {run_dir}" in done.stderr
    assert trial_ids(run_dir) == [0, 1] and all(line.endswith(b"\n") for line in lines(run_dir)), "no half line"
    assert sessions(run_dir)[-1]["stopped_by"] == "disk full"
    resumed = cli("search", "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(trial_ids(run_dir)) == [0, 1, 2, 3], "nothing lost, nothing twice"


def test_a_full_disk_during_an_export_leaves_no_folder(finished_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "new" / "out"
    done = _cli_with(EXPORT_FULL, "export", str(finished_run), "--steps", "0", "--out", str(out))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "No space left on device" in done.stderr
    assert not (tmp_path / "new").exists(), "no empty or half-written folder is left"
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_keeps_an_earlier_export_whole(finished_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert cli("export", str(finished_run), "--steps", "0", "--out", str(out)).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    done = _cli_with(EXPORT_FULL, "export", str(finished_run), "--steps", "0", "--out", str(out))
    assert done.returncode == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
