"""Benchmark the exact cost model against counting materialised models, for the whole zoo.

For every zoo model this measures: how many random candidates the cost model prices
exactly as counting the materialised model does (and the largest miss); how fast it
prices candidates, vectorised, next to materialising and counting them; what
materialising one candidate costs (deep copy, dependency-graph tracing, scoring and
pruning), expressed as training steps of the pruned model; and the size of the space.
FLOPs are multiply-accumulates (MACs) per input, the pruning literature's convention.

    python experiments/cost_model.py                          # whole zoo, 200 candidates each
    python experiments/cost_model.py --threads 1              # on a machine shared with other jobs
    python experiments/cost_model.py --models resnet20 --candidates 20 --out /tmp/cost_model

Writes ``cost_model.md`` (tables, with the command and the machine) and
``cost_model.csv`` (one row per model) under ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import datetime
import io
import logging
import os
import platform
import shlex
import statistics
import sys
import time
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

import autoprune.space.materialize as materialize_module
from autoprune.models import MODEL_NAMES, build_model, model_family
from autoprune.space.analysis import build_search_space
from autoprune.space.config import SpaceConfig, load_space_config
from autoprune.space.counting import count
from autoprune.space.graph import trace_groups
from autoprune.space.materialize import materialize
from autoprune.space.search_space import SearchSpace

logger = logging.getLogger("autoprune.experiments.cost_model")

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
CLASSES = 10


def input_shape(name: str) -> tuple[int, int]:
    """(in_channels, image_size): the digits' 8x8 for digitnet, CIFAR's 3x32x32 otherwise."""
    return (1, 8) if name == "digitnet" else (3, 32)


def cpu_stall_seconds() -> float | None:
    """Seconds, since boot, during which some task waited for a CPU (Linux PSI), or None.

    Other processes on a shared machine inflate every timing here; the share of a run's
    wall time spent stalled says how much to trust it.
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return int(some.rsplit("total=", 1)[1]) / 1e6
    return None


def stall_share(stall_at_start: float | None, wall: float) -> float:
    """Share of ``wall`` seconds during which some task waited for a CPU (NaN if unknown)."""
    stall_now = cpu_stall_seconds()
    if stall_at_start is None or stall_now is None or wall <= 0:
        return float("nan")
    return (stall_now - stall_at_start) / wall


@contextlib.contextmanager
def phase_clock() -> Iterator[dict[str, float]]:
    """Time the deep copy and the tracing inside :func:`materialize` while the block runs.

    Only the references that ``materialize`` itself uses are wrapped, so Torch-Pruning's
    own deep copies (if any) are not mistaken for the model's.
    """
    phases = {"deepcopy": 0.0, "trace": 0.0}

    def timed(key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[key] += time.perf_counter() - start

        return wrapper

    fake_copy = types.SimpleNamespace(deepcopy=timed("deepcopy", copy.deepcopy))
    with mock.patch.object(materialize_module, "copy", fake_copy), mock.patch.object(
        materialize_module, "trace_groups", timed("trace", trace_groups)
    ):
        yield phases


def time_build(model: nn.Module, x: torch.Tensor, config: SpaceConfig, repeats: int) -> tuple[SearchSpace, float]:
    """The search space, and the median seconds of building it from scratch."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        space = build_search_space(model, x, grid=config.grid, never_prune=list(config.never_prune))
        seconds.append(time.perf_counter() - start)
    return space, statistics.median(seconds)


def time_pricing(space: SearchSpace, rng: np.random.Generator, *, n: int, repeats: int) -> tuple[float, float]:
    """Candidates priced per second: vectorised over ``n`` rows (best of ``repeats``),
    and one ``cost`` call per candidate (best of ``repeats`` over up to 2,000 calls)."""
    matrix = rng.integers(0, space.n_levels, size=(n, space.n_groups))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        space.cost("flops", matrix)
        best = min(best, time.perf_counter() - start)
    rows = matrix[: min(n, 2000)]
    best_single = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for row in rows:
            space.cost("flops", row)
        best_single = min(best_single, time.perf_counter() - start)
    return n / best, len(rows) / best_single


def check_agreement(
    model: nn.Module, space: SearchSpace, x: torch.Tensor, config: SpaceConfig, candidates: np.ndarray
) -> dict[str, Any]:
    """Materialise and count every candidate; compare with the cost model and time each step."""
    predicted = {r: space.cost(r, candidates) for r in ("flops", "params")}
    counted = {"flops": [], "params": []}
    unsupported: set[str] = set()
    times: dict[str, list[float]] = {"materialize": [], "deepcopy": [], "trace": [], "prune": [], "count": []}
    for levels in candidates:
        with phase_clock() as phases:
            start = time.perf_counter()
            pruned, _ = materialize(model, space, levels, x, never_prune=list(config.never_prune))
            total = time.perf_counter() - start
        start = time.perf_counter()
        measured = count(pruned, x)
        times["count"].append(time.perf_counter() - start)
        times["materialize"].append(total)
        times["deepcopy"].append(phases["deepcopy"])
        times["trace"].append(phases["trace"])
        times["prune"].append(total - phases["deepcopy"] - phases["trace"])
        counted["flops"].append(measured.flops)
        counted["params"].append(measured.params)
        unsupported.update(measured.unsupported)
    result: dict[str, Any] = {}
    for resource in ("flops", "params"):
        diff = np.abs(np.asarray(counted[resource], dtype=np.int64) - predicted[resource])
        result[f"{resource}_exact"] = int((diff == 0).sum())
        result[f"max_abs_diff_{resource}"] = int(diff.max())
    both = (np.asarray(counted["flops"]) == predicted["flops"]) & (np.asarray(counted["params"]) == predicted["params"])
    result["both_exact"] = int(both.sum())
    result["unsupported_layers"] = len(unsupported)
    for key, values in times.items():
        result[f"{key}_s"] = statistics.median(values)
    # medians, robust to other processes' bursts; the wall-clock rate is in the CSV too
    result["counted_per_s"] = 1.0 / (result["materialize_s"] + result["count_s"])
    result["counted_wall_per_s"] = len(candidates) / (sum(times["materialize"]) + sum(times["count"]))
    return result


def time_train_step(model: nn.Module, in_channels: int, size: int, *, batch: int, steps: int, seed: int) -> float:
    """Median seconds of one SGD step (forward, cross-entropy, backward, update) at ``batch``."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch, in_channels, size, size, generator=generator)
    labels = torch.randint(0, CLASSES, (batch,), generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    seconds = []
    for step in range(steps + 3):  # three warm-up steps are not timed
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs), labels).backward()
        optimizer.step()
        if step >= 3:
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def benchmark_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One row of the tables for zoo model ``name``."""
    started = time.perf_counter()
    stall_at_start = cpu_stall_seconds()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    in_channels, size = input_shape(name)
    model = build_model(name, in_channels=in_channels, image_size=size, num_classes=CLASSES).eval()
    x = torch.randn(1, in_channels, size, size)
    config = load_space_config(model_family(name))
    space, build_s = time_build(model, x, config, repeats=3)
    dense = count(model, x)
    if (dense.flops, dense.params) != (space.dense["flops"], space.dense["params"]):
        logger.warning("%s: dense cost model %s differs from counting %s", name, space.dense, dense)
    vectorised, single = time_pricing(space, rng, n=args.priced, repeats=args.repeats)
    candidates = rng.integers(0, space.n_levels, size=(args.candidates, space.n_groups))
    candidates[0] = space.sparsest_candidate()
    if len(candidates) > 1:
        candidates[1] = space.uniform_candidate(space.n_levels // 2)
    agreement = check_agreement(model, space, x, config, candidates)
    middle = space.uniform_candidate(space.n_levels // 2)
    pruned, _ = materialize(model, space, middle, x, never_prune=list(config.never_prune))
    step_s = time_train_step(pruned, in_channels, size, batch=args.batch, steps=args.train_steps, seed=args.seed)
    row: dict[str, Any] = {
        "model": name,
        "input": f"{in_channels}x{size}x{size}",
        "groups": space.n_groups,
        "levels": space.n_levels,
        "dense_flops": space.dense["flops"],
        "dense_params": space.dense["params"],
        "candidates": args.candidates,
        **agreement,
        "build_space_s": build_s,
        "priced_per_s": vectorised,
        "priced_one_call_per_s": single,
        "speedup": vectorised / agreement["counted_per_s"],
        "train_keep_ratio": space.grid.keep_ratios[space.n_levels // 2],
        "train_step_s": step_s,
        "materialize_in_steps": agreement["materialize_s"] / step_s,
    }
    row["model_wall_s"] = time.perf_counter() - started
    row["cpu_stall_share"] = stall_share(stall_at_start, row["model_wall_s"])
    logger.info(
        "%s: %d/%d exact, %.3g candidates/s priced, materialise %.1f ms, train step %.1f ms (%.0f s)",
        name, row["both_exact"], args.candidates, vectorised, 1e3 * row["materialize_s"], 1e3 * step_s,
        row["model_wall_s"],
    )
    return row


def machine_info(threads: int, stall: float) -> dict[str, str]:
    """What a reader needs to compare timings: cores, CPU model, library versions, date, and
    how busy the machine was (other processes slow every timing here)."""
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cores (nproc)": str(len(os.sched_getaffinity(0))),
        "CPU": cpu,
        "torch": f"{torch.__version__}, torch.set_num_threads({threads})",
        "torch-pruning": tp.__version__,
        "numpy": np.__version__,
        "Python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU contention": f"some task waited for a CPU {stall:.0%} of the run (/proc/pressure/cpu); "
        f"1-minute load average at the end {os.getloadavg()[0]:.2f}",
    }


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(
    rows: list[dict[str, Any]], *, command: str, machine: dict[str, str], args: argparse.Namespace, wall: float
) -> str:
    """The three tables (agreement, throughput, materialisation overhead) with their context."""
    ms = lambda seconds: f"{1e3 * seconds:.1f}"  # noqa: E731
    rate = lambda per_s: f"{per_s:,.0f}"  # noqa: E731
    agreement = _table(
        ["model", "input", "groups x levels", "dense FLOPs (MACs)", "dense params", "candidates",
         "FLOPs exact", "params exact", "max abs diff FLOPs", "max abs diff params", "unsupported layers"],
        [[r["model"], r["input"], f"{r['groups']} x {r['levels']}", f"{r['dense_flops']:,}", f"{r['dense_params']:,}",
          str(r["candidates"]), str(r["flops_exact"]), str(r["params_exact"]), f"{r['max_abs_diff_flops']:,}",
          f"{r['max_abs_diff_params']:,}", str(r["unsupported_layers"])] for r in rows],
    )
    throughput = _table(
        ["model", "cost model, vectorised (cand/s)", "cost model, one call each (cand/s)",
         "materialise + count (cand/s)", "speed-up, vectorised vs counting"],
        [[r["model"], rate(r["priced_per_s"]), rate(r["priced_one_call_per_s"]), f"{r['counted_per_s']:.1f}",
          f"{r['speedup']:,.0f}x"] for r in rows],
    )
    overhead = _table(
        ["model", "build space (ms)", "materialise (ms)", "deepcopy (ms)", "trace graph (ms)", "score + prune (ms)",
         "count (ms)", f"train step, batch {args.batch} (ms)", "materialise / train step", "CPU contention"],
        [[r["model"], ms(r["build_space_s"]), ms(r["materialize_s"]), ms(r["deepcopy_s"]), ms(r["trace_s"]),
          ms(r["prune_s"]), ms(r["count_s"]), ms(r["train_step_s"]), f"{r['materialize_in_steps']:.2f}",
          f"{r['cpu_stall_share']:.0%}"]
         for r in rows],
    )
    setup = "\n".join(f"- {key}: {value}" for key, value in machine.items())
    return f"""# Cost model: exactness and speed

Command: `{command}` (seed {args.seed}); whole run {wall:.0f} s.

{setup}

FLOPs are multiply-accumulates (MACs) per input at the input shape shown, 10 classes.
Search spaces are the family defaults of `search_spaces/`; models are freshly initialised.

## Agreement with counting the materialised model

Each candidate (random levels; the first is the sparsest, the second uniform at level
`n_levels // 2`) is materialised with Torch-Pruning and counted with hooks
(`autoprune.space.counting.count`); "exact" counts candidates whose counted value equals
the cost model's.

{agreement}

## Throughput

Vectorised: `space.cost("flops", levels)` on {args.priced:,} random candidates at once,
best of {args.repeats}. One call each: the same on single level vectors (up to 2,000).
Counting: one over the median seconds of materialising plus counting a candidate of the
agreement run (the CSV also has the rate over its wall-clock time, `counted_wall_per_s`).

{throughput}

## Overhead of materialising a candidate

Medians over the agreement candidates. Materialise = `materialize` (deep copy of the
dense model, dependency-graph tracing, scoring with group L2 magnitude and pruning);
build space = `build_search_space`, median of 3. Train step = one SGD step (forward,
cross-entropy, backward, update) at batch {args.batch} on random inputs, median of
{args.train_steps}, on the model pruned uniformly at level `n_levels // 2` (keep ratio
{rows[0]['train_keep_ratio']:g}); "materialise / train step" is how many such steps one
materialisation costs. CPU contention: share of the model's benchmark time during which
some task waited for a CPU (this benchmark's own threads included).

{overhead}
"""


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a reader never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def render_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    return buffer.getvalue()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=_positive_int, default=200,
                        help="random candidates materialised and counted per model (default 200)")
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES), metavar="NAME",
                        help=f"zoo models to benchmark (default: all of {', '.join(MODEL_NAMES)})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="directory for cost_model.md and cost_model.csv (default experiments/results)")
    parser.add_argument("--priced", type=_positive_int, default=100_000,
                        help="candidates priced at once for the vectorised throughput (default 100000)")
    parser.add_argument("--repeats", type=_positive_int, default=5, help="repeats of the throughput timings (best of)")
    parser.add_argument("--train-steps", type=_positive_int, default=20, help="timed training steps (default 20)")
    parser.add_argument("--batch", type=_positive_int, default=64, help="training batch size (default 64)")
    parser.add_argument("--threads", type=_positive_int, default=len(os.sched_getaffinity(0)),
                        help="torch.set_num_threads (default: the cores available)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the models, inputs and candidates (default 0)")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out must be a directory, got the file {str(args.out)!r}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    stall_at_start = cpu_stall_seconds()
    started = time.perf_counter()
    rows = [benchmark_model(name, args) for name in args.models]
    wall = time.perf_counter() - started
    stall = stall_share(stall_at_start, wall)
    command = shlex.join(["python", "experiments/cost_model.py", *argv])
    machine = machine_info(torch.get_num_threads(), stall)
    text = render_markdown(rows, command=command, machine=machine, args=args, wall=wall)
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "cost_model.md", text)
    write_atomic(args.out / "cost_model.csv", render_csv(rows))
    logger.info("wrote %s and %s in %.0f s", args.out / "cost_model.md", args.out / "cost_model.csv", wall)
    return 0


if __name__ == "__main__":
    sys.exit(main())
