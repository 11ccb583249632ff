"""Try every torchvision classification model as a user would, and table what autoprune makes of it.

For each of ``torchvision.models.list_models(module=torchvision.models)`` (weights None,
10 classes, a small input): is a search space built, or refused in one sentence (and
why)? A refusal that gives a ``never_prune`` line is pasted, as a user would, and the space
built again ("built with its refusal's line"). For built spaces: the dense model and random
candidates are materialised, run forward in eval and train mode (batch 2) with the output
shape unchanged, and their
FLOPs and params are held to an independent count: ``torch.utils.flop_counter.FlopCounterMode``
(MACs = its FLOPs / 2, run with grad enabled) and the parameter count. Each model runs in
its own process under a memory cap and a time limit, so one that blows up is a row, not
the end of the survey.

    python experiments/torchvision_survey.py                      # every model, 3 candidates each
    python experiments/torchvision_survey.py --models resnet18 vit_b_16 --candidates 2

Writes ``torchvision_survey.md`` and ``torchvision_survey.csv`` under ``--out``. torchvision
is the ``vision`` extra (a CUDA build on the package index; :mod:`autoprune.torchvision_compat`
makes it importable beside CPU torch).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import logging
import multiprocessing
import os
import platform
import resource
import shlex
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
CLASSES = 10
FIELDS = ("model", "input", "outcome", "groups", "exact", "candidates", "train_forward", "seconds", "detail")

logger = logging.getLogger("autoprune.experiments.torchvision_survey")

#: input side and constructor arguments where the default small input does not fit the model
SPECIAL: dict[str, tuple[int, dict[str, Any]]] = {
    "alexnet": (64, {}),
    "inception_v3": (299, {"init_weights": True}),  # its auxiliary head needs 17x17 maps in training mode
    "googlenet": (32, {"init_weights": True}),
    "maxvit_t": (224, {}),
}
SIDE = 32
MEMORY_CAP = "over the survey's memory cap"
WITH_LINE = "built with its refusal's line"
LINE = "--space file: "
TIME_LIMIT = "over the survey's time limit"


def model_input(name: str) -> tuple[int, dict[str, Any]]:
    """The input side and constructor arguments the survey uses for ``name``."""
    if name in SPECIAL:
        return SPECIAL[name]
    if name.startswith("vit_"):
        patch = 14 if name.endswith("14") else (32 if name.endswith("32") else 16)
        return 2 * patch, {"image_size": 2 * patch}
    return SIDE, {}


def survey_one(name: str, *, candidates: int, seed: int = 0) -> dict[str, Any]:
    """One row of the table for torchvision model ``name`` (run in a process of its own)."""
    import numpy as np
    import torch
    import yaml

    from autoprune.errors import UserError
    from autoprune.space.analysis import build_search_space
    from autoprune.space.config import load_space_config
    from autoprune.space.materialize import materialize
    from autoprune.space.verify import independent_count
    from autoprune.torchvision_compat import make_torchvision_importable

    make_torchvision_importable()
    import torchvision

    torch.manual_seed(seed)
    side, kwargs = model_input(name)
    row: dict[str, Any] = {"model": name, "input": side, "groups": "", "exact": "", "candidates": 0,
                           "train_forward": "", "detail": ""}
    model = torchvision.models.get_model(name, weights=None, num_classes=CLASSES, **kwargs).eval()
    x = torch.randn(1, 3, side, side)
    grid = load_space_config("resnet").grid
    never_prune: list[str] = []
    try:
        space = build_search_space(model, x, grid=grid, never_prune=never_prune)
    except UserError as exc:
        if LINE not in str(exc):
            return {**row, "outcome": "refused", "detail": str(exc)}
        never_prune = yaml.safe_load(str(exc).split(LINE)[1])["never_prune"]  # pasted, as a user would
        try:
            space = build_search_space(model, x, grid=grid, never_prune=never_prune)
        except UserError as again:
            return {**row, "outcome": "refused", "detail": f"{exc} With that line: {again}"}
        row["outcome"] = WITH_LINE
        row["detail"] = f"never_prune: [{', '.join(never_prune)}]"
    row["groups"] = space.n_groups
    rng = np.random.default_rng(seed)
    levels = [space.dense_candidate()] + [rng.integers(0, space.n_levels, space.n_groups)
                                          for _ in range(candidates)]
    exact, trained = True, True
    misses = []
    for i, candidate in enumerate(levels):
        pruned = model if i == 0 else materialize(model, space, candidate, x, never_prune=never_prune)[0]
        counted = independent_count(pruned, x)
        predicted = (int(space.cost("flops", candidate)), int(space.cost("params", candidate)))
        if (counted.flops, counted.params) != predicted:
            exact = False
            misses.append(f"candidate {i}: predicted {predicted}, counted {(counted.flops, counted.params)}")
        batch = torch.randn(2, 3, side, side)
        with torch.no_grad():
            assert pruned.eval()(batch).shape == (2, CLASSES)
        try:
            out = pruned.train()(batch)
            out = out.logits if hasattr(out, "logits") else out
            trained = trained and tuple(out.shape) == (2, CLASSES)
        except Exception as exc:  # noqa: BLE001  (the table records it)
            trained = False
            misses.append(f"train forward of candidate {i}: {type(exc).__name__}: {str(exc)[:120]}")
        pruned.eval()
    return {**row, "outcome": row.get("outcome") or "built", "exact": exact, "candidates": len(levels) - 1,
            "train_forward": trained, "detail": "; ".join([row["detail"]] * bool(row["detail"]) + misses)}


def _child(name: str, candidates: int, memory_gb: float, queue: multiprocessing.Queue) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (int(memory_gb * 2**30), int(memory_gb * 2**30)))
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        row = survey_one(name, candidates=candidates)
    except MemoryError as exc:  # the survey's own cap, not autoprune's failure
        row = {"model": name, "outcome": MEMORY_CAP, "detail": f"MemoryError: {str(exc)[:200]}"}
    except RuntimeError as exc:
        outcome = MEMORY_CAP if "can't allocate memory" in str(exc) else "crashed"
        row = {"model": name, "outcome": outcome, "detail": f"RuntimeError: {str(exc)[:200]}"}
    except BaseException as exc:  # noqa: BLE001  (a crash is what the survey looks for)
        row = {"model": name, "outcome": "crashed", "detail": f"{type(exc).__name__}: {str(exc)[:200]}"}
    row["seconds"] = round(time.perf_counter() - start, 1)
    queue.put(row)


def run_isolated(name: str, *, candidates: int, memory_gb: float, time_limit: float) -> dict[str, Any]:
    """:func:`survey_one` in a fresh process with an address-space cap and a time limit."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(name, candidates, memory_gb, queue))
    process.start()
    try:
        row = queue.get(timeout=time_limit)
    except Exception:  # noqa: BLE001  (no row: killed by the cap or out of time)
        row = {"model": name, "outcome": TIME_LIMIT,
               "detail": f"no result within {time_limit:.0f} s (exit code {process.exitcode})"}
    process.join(timeout=10)
    if process.is_alive():
        process.kill()
        process.join()
    return row


def write_table(rows: list[dict[str, Any]], out: Path, command: str) -> None:
    """``torchvision_survey.md`` and ``.csv`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "torchvision_survey.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    built = [r for r in rows if r["outcome"] == "built"]
    good = [r for r in built if r.get("exact") is True and r.get("train_forward") is True]
    lined = [r for r in rows if r["outcome"] == WITH_LINE]
    lined_good = [r for r in lined if r.get("exact") is True and r.get("train_forward") is True]
    lines = [
        "# torchvision classifiers in autoprune",
        "",
        f"`{command}` on {platform.node() or 'this machine'} ({datetime.date.today()}), "
        f"torch {_version('torch')}, torchvision {_version('torchvision')}, torch-pruning {_version('torch_pruning')}.",
        "",
        f"{len(rows)} models: {len(built)} built, {len(good)} of them exact on every candidate and running in train "
        f"mode after pruning; {len(lined)} refused with a never_prune line and built once it was pasted "
        f"({len(lined_good)} of them exact and running in train mode); "
        f"{sum(r['outcome'] == 'refused' for r in rows)} refused in one sentence; "
        f"{sum(r['outcome'] == 'crashed' for r in rows)} crashed; "
        f"{sum(r['outcome'] == MEMORY_CAP for r in rows)} did not fit the survey's "
        f"memory cap, {sum(r['outcome'] == TIME_LIMIT for r in rows)} its time limit "
        "(a shared, busy machine), "
        f"{sum(r['outcome'] == 'not run' for r in rows)} were not reached.",
        "Exact: the cost model's FLOPs (MACs) and params equal FlopCounterMode's FLOPs / 2 (grad enabled) and the "
        "parameter count, on the dense model and each random candidate.",
        "",
        "| model | input | outcome | groups | exact | candidates | train forward | s | detail |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        detail = str(r.get("detail", "")).replace("|", "/").replace("\n", " ")
        lines.append(f"| {r['model']} | {r.get('input', '')} | {r['outcome']} | {r.get('groups', '')} | "
                     f"{r.get('exact', '')} | {r.get('candidates', '')} | {r.get('train_forward', '')} | "
                     f"{r.get('seconds', '')} | {detail} |")
    (out / "torchvision_survey.md").write_text("\n".join(lines) + "\n")


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001
        return "absent"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="torchvision model names (default: every classifier)")
    parser.add_argument("--candidates", type=int, default=3)
    parser.add_argument("--memory-gb", type=float, default=6.0, help="address-space cap per model")
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds per model")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--merge", nargs="*", type=Path, default=[],
                        help="write the table from these CSVs of earlier (partial, parallel) runs instead")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from autoprune.torchvision_compat import make_torchvision_importable

    make_torchvision_importable()
    import torchvision

    names = args.models or torchvision.models.list_models(module=torchvision.models)
    if args.merge:
        found = {}
        for path in args.merge:
            with open(path, newline="") as f:
                for row in csv.DictReader(f):
                    row = {k: {"True": True, "False": False}.get(v, v) for k, v in row.items()}
                    if row["outcome"] == "crashed" and row["detail"].startswith("no result within"):
                        row["outcome"] = TIME_LIMIT  # labelled "crashed" by an earlier version
                    if row["outcome"] == "crashed" and "can't allocate memory" in row["detail"]:
                        row["outcome"] = MEMORY_CAP  # torch's allocator under the cap, by an earlier version
                    found[row["model"]] = row
        rows = [found.get(name, {"model": name, "outcome": "not run", "detail": "not reached in the time given"})
                for name in names]
        write_table(rows, args.out, f"python experiments/torchvision_survey.py (rows of {len(args.merge)} runs, "
                                    "later runs replacing earlier rows, merged with --merge)")
        return
    rows = []
    for name in names:
        row = run_isolated(name, candidates=args.candidates, memory_gb=args.memory_gb, time_limit=args.time_limit)
        logger.info("%s", json.dumps(row))
        rows.append(row)
        write_table(rows, args.out, "python experiments/torchvision_survey.py " + shlex.join(argv or sys.argv[1:]))


if __name__ == "__main__":
    main()
