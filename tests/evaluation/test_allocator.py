"""The allocator keeps freed buffers: re-allocating a large tensor no longer faults in its pages."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, resource, sys
import torch
from autoprune.evaluation.allocator import keep_freed_memory

def faults_per_allocation():
    for _ in range(15):  # the heap grows to its steady size (glibc aligns each buffer, and it takes
        # a few rounds before freed ones are large enough to be reused)
        torch.empty(12_000_000).fill_(1.0)  # about 48 MB, above glibc's largest default mmap threshold
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.empty(12_000_000).fill_(1.0)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5

state = keep_freed_memory()
print(json.dumps({"state": state, "again": keep_freed_memory(), "faults": faults_per_allocation()}))
"""


PAGES = 48e6 / 4096


def _probe(**env: str) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                            env={**os.environ, **env})
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_buffers_are_reused_instead_of_faulted_in_again() -> None:
    probe = _probe()
    assert probe["state"] == probe["again"] == "glibc, buffers kept"
    assert probe["faults"] < 0.05 * PAGES  # the heap's pages are reused


def test_the_environment_can_leave_the_allocator_alone() -> None:
    probe = _probe(AUTOPRUNE_KEEP_FREED_MEMORY="0")
    assert probe["state"] == "default (AUTOPRUNE_KEEP_FREED_MEMORY=0)"
    assert probe["faults"] > 0.5 * PAGES  # glibc maps fresh pages for every large buffer
