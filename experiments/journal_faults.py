"""Damage a run's journal in each way an append or a disk can, then resume: is any trial
lost, any evaluated twice, and is the user told what happened? (issue 15)

Faults: a torn last line (the process died mid-append), a corrupt middle line (a bad
sector, a stray edit), a file truncated mid-line (a crash before the data reached the
disk), a file truncated at a line boundary, and a full disk (ENOSPC injected at the
journal's write seam in the middle of a line). Each starts from a real run of the CLI
(digitnet on digits, tiny fidelity), is damaged, then read with ``autoprune front`` and
resumed with ``autoprune search --resume``; where the resume refuses, the user's fix the
message asks for (delete the named line) is applied and the resume run again. The final
journal is compared with an uninterrupted run of the same seed.

    python experiments/journal_faults.py            # about 3 minutes on 2 busy cores
    python experiments/journal_faults.py --out /tmp/faults
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRIALS = 6
SEARCH = ["search", "--fidelity", "2", "--bn-batches", "1", "--budget", "flops=0.5", "--seed", "7"]
FULL_DISK = """
import errno, os, sys
import autoprune.store.journal as journal
calls = {"n": 0}
def write(fd, data):
    calls["n"] += 1
    if calls["n"] > 3:  # the 4th line finds the disk full halfway
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return os.write(fd, data)
journal._write = write
from autoprune.cli import main
sys.exit(main(sys.argv[1:]))
"""


def cli(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    head = [sys.executable, "-c", code] if code else [sys.executable, "-m", "autoprune.cli"]
    return subprocess.run([*head, "-q", *args], capture_output=True, text=True, env=env, timeout=900)


def records(run: Path) -> list[dict]:
    out = []
    for raw in (run / "trials.jsonl").read_bytes().splitlines(keepends=True):
        try:
            out.append(json.loads(raw))
        except json.JSONDecodeError:
            pass
    return [r for r in out if isinstance(r, dict) and "trial_id" in r]


def key(record: dict) -> tuple:
    return record["trial_id"], tuple(record["levels"]), record["status"], record["metrics"].get("accuracy")


def first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0][:150] if lines else ""


def damage(kind: str, run: Path) -> None:
    journal = run / "trials.jsonl"
    raw = journal.read_bytes()
    lines = raw.splitlines(keepends=True)
    if kind == "torn last line":
        journal.write_bytes(raw + lines[-1][: len(lines[-1]) // 2].replace(b'"trial_id":5', b'"trial_id":6'))
    elif kind == "corrupt middle line":
        lines[2] = b'{"trial_id":2,"levels":[\x00\x00\x00\n'
        journal.write_bytes(b"".join(lines))
    elif kind == "truncated mid-line":
        journal.write_bytes(raw[: sum(map(len, lines[:4])) + len(lines[4]) // 3])
    elif kind == "truncated at a line":
        journal.write_bytes(b"".join(lines[:4]))


def scenario(kind: str, work: Path, reference: dict[int, tuple]) -> dict:
    run = work / kind.replace(" ", "-")
    row: dict = {"fault": kind}
    if kind == "full disk":
        started = cli(*SEARCH, "--trials", str(TRIALS), "--run-dir", str(run), code=FULL_DISK)
        row["search"] = f"exit {started.returncode}: {first_line(started.stderr)}"
    else:
        shutil.copytree(work / "base", run)
        damage(kind, run)
        row["search"] = "-"
    before = {r["trial_id"]: r for r in records(run)}
    before_bytes = (run / "trials.jsonl").read_bytes()
    front = cli("front", str(run), "--all")
    row["front"] = f"exit {front.returncode}: {first_line(front.stderr) or 'no warning'}"
    row["front wrote"] = "yes" if (run / "trials.jsonl").read_bytes() != before_bytes else "no"
    resumed = cli("search", "--resume", str(run), "--trials", str(TRIALS + 2))
    row["resume"] = f"exit {resumed.returncode}: {first_line(resumed.stderr) or 'ok'}"
    if resumed.returncode == 2 and "is damaged" in resumed.stderr:  # the user's fix, as the message says
        number = int(resumed.stderr.split("line ", 1)[1].split(" ", 1)[0])
        shutil.copy(run / "trials.jsonl", run / "trials.jsonl.copy")
        lines = (run / "trials.jsonl").read_bytes().splitlines(keepends=True)
        del lines[number - 1]
        (run / "trials.jsonl").write_bytes(b"".join(lines))
        again = cli("search", "--resume", str(run), "--trials", str(TRIALS + 2))
        row["after the user's fix"] = f"exit {again.returncode}: {first_line(again.stderr) or 'ok'}"
    else:
        row["after the user's fix"] = "-"
    after = records(run)
    ids = [r["trial_id"] for r in after]
    sessions = json.loads((run / "run.json").read_text())["sessions"]
    row["kept"] = f"{sum(1 for t, r in before.items() if any(a == r for a in after))}/{len(before)}"
    row["evaluated on resume"] = sum(s["evaluated"] for s in sessions[-1:])
    row["every trial once"] = "yes" if sorted(ids) == list(range(TRIALS + 2)) else f"no: {sorted(ids)}"
    row["same as uninterrupted"] = "yes" if {r["trial_id"]: key(r)[:2] for r in after} == \
        {t: k[:2] for t, k in reference.items()} else "no"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "journal_faults"))
    args = parser.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        os.environ.setdefault("AUTOPRUNE_CACHE", str(work / "cache"))
        full = cli(*SEARCH, "--trials", str(TRIALS + 2), "--run-dir", str(work / "full"))
        assert full.returncode == 0, full.stderr
        reference = {r["trial_id"]: key(r) for r in records(work / "full")}
        base = cli(*SEARCH, "--trials", str(TRIALS), "--run-dir", str(work / "base"))
        assert base.returncode == 0, base.stderr
        faults = ["torn last line", "corrupt middle line", "truncated mid-line", "truncated at a line", "full disk"]
        rows = [scenario(kind, work, reference) for kind in faults]
    columns = list(rows[0])
    header = (f"# Journal faults\n\n`python experiments/journal_faults.py` on {platform.node()} "
              f"({platform.platform()}, Python {platform.python_version()}), {time.time() - started:.0f} s. "
              f"Each run: digitnet on digits, seed 7, {TRIALS} trials journaled, damaged, then resumed to "
              f"{TRIALS + 2}. *kept*: records of the damaged journal found unchanged after the resume; "
              "*same as uninterrupted*: every trial id holds the candidate an uninterrupted run of "
              f"{TRIALS + 2} trials evaluated.\n\n")
    table = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    for row in rows:
        table += "| " + " | ".join(str(row[c]).replace("|", "/") for c in columns) + " |\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(header + table)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print(header + table)


if __name__ == "__main__":
    main()
