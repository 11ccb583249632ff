"""A damaged journal as a user meets it: readers never change it, a torn last line is the
only repair the run's owner makes, anything else is named by line and refuses the resume."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import cli, lines, sessions, trial_ids

from autoprune.store.journal import TORN_NAME


def _damage_middle(run_dir: Path, replacement: bytes) -> bytes:
    content = lines(run_dir)
    content[1] = replacement
    damaged = b"".join(content)
    (run_dir / "trials.jsonl").write_bytes(damaged)
    return damaged


@pytest.mark.parametrize("replacement, reason", [
    (b'{"trial_id": 1, "levels": [1, 2\n', "not valid JSON"),
    (b"[1,2,3]\n", "JSON list, not a trial record"),
    (b'{"foo": 1}\n', "not a trial record (no trial_id, levels, fidelity, status)"),
])
def test_a_damaged_middle_line_is_named_never_dropped(run_copy: Path, replacement: bytes, reason: str) -> None:
    damaged = _damage_middle(run_copy, replacement)
    front = cli("front", str(run_copy), "--all")
    assert front.returncode == 0 and "Traceback" not in front.stderr
    assert f"line 2 of {run_copy / 'trials.jsonl'} is damaged (" in front.stderr and reason in front.stderr
    assert "trial_id" in front.stdout  # the readable trials are still shown
    assert (run_copy / "trials.jsonl").read_bytes() == damaged, "a reader never writes"

    resumed = cli("search", "--resume", str(run_copy), "--trials", "6")
    assert resumed.returncode == 2 and "Traceback" not in resumed.stderr
    message = resumed.stderr.strip()
    assert message.count("\n") == 0 and f"line 2 of '{run_copy / 'trials.jsonl'}' is damaged (" in message
    assert reason in message
    assert "keep a copy of the file" in message
    assert (run_copy / "trials.jsonl").read_bytes() == damaged, "a refused resume never writes"
    assert len(sessions(run_copy)) == 1


def test_a_torn_last_line_is_left_by_readers_and_cut_by_the_owner(run_copy: Path) -> None:
    whole = lines(run_copy)
    torn = b'{"trial_id":4,"levels":[3,'
    (run_copy / "trials.jsonl").write_bytes(b"".join(whole) + torn)
    front = cli("front", str(run_copy), "--all")
    assert front.returncode == 0 and "damaged" not in front.stderr
    assert (run_copy / "trials.jsonl").read_bytes().endswith(torn), "a reader never cuts (it may be being written)"

    resumed = cli("search", "--resume", str(run_copy), "--trials", "6")
    assert resumed.returncode == 0, resumed.stderr
    assert lines(run_copy)[:4] == whole, "what was journaled is untouched"
    assert all(line.endswith(b"\n") for line in lines(run_copy)), "no torn line left"
    assert sorted(trial_ids(run_copy)) == list(range(6)), "every trial once"
    assert (run_copy / TORN_NAME).read_bytes() == torn + b"\n", "the cut bytes are kept"
    assert sessions(run_copy)[-1]["evaluated"] == 2 and sessions(run_copy)[-1]["replayed"] == 4


def test_a_trial_written_twice_is_named(run_copy: Path) -> None:
    content = lines(run_copy)
    (run_copy / "trials.jsonl").write_bytes(b"".join(content + [content[0]]))
    resumed = cli("search", "--resume", str(run_copy), "--trials", "6")
    assert resumed.returncode == 2
    assert "line 5 of" in resumed.stderr and "trial 0 appears on an earlier line too" in resumed.stderr


@pytest.mark.parametrize("kept, told", [(3, "1 was lost (the file was truncated or replaced); it is evaluated again"),
                                        (2, "2 were lost (the file was truncated or replaced); they are evaluated again")])
def test_a_journal_cut_at_a_line_boundary_is_told_and_its_trials_evaluated_again(run_copy: Path, kept: int,
                                                                                  told: str) -> None:
    (run_copy / "trials.jsonl").write_bytes(b"".join(lines(run_copy)[:kept]))  # no torn line: nothing to see but a count
    resumed = cli("search", "--resume", str(run_copy), "--trials", "6")
    assert resumed.returncode == 0, resumed.stderr
    assert f"holds {kept} trials, but the run's sessions journaled 4: {told}" in resumed.stderr
    assert sorted(trial_ids(run_copy)) == list(range(6)), "every trial once"
