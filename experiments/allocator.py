"""What does keeping freed buffers (``autoprune/evaluation/allocator.py``) change? (issue 3)

The same measurements in two fresh processes, one with glibc's default allocator
(``AUTOPRUNE_KEEP_FREED_MEMORY=0``) and one with freed buffers kept: single layers at
batch 64 (timed as the latency tables time them, fastest block of calls), whole models
at batch 1 and 64 (the evaluator's measurement), minor page faults per forward pass,
and training steps. Weights are random and inputs synthetic, so no data is needed.

    python experiments/allocator.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).parent / "results"


def child(threads: int) -> list[dict]:
    """Every measurement in this process, under whatever allocator the environment asks for."""
    import numpy as np
    import torch
    from torch import nn

    from autoprune.evaluation.allocator import keep_freed_memory
    from autoprune.evaluation.latency import measure_latency
    from autoprune.evaluation.latency_table import _time_layer
    from autoprune.models import build_model

    torch.set_num_threads(threads)
    keep_freed_memory()
    torch.manual_seed(0)
    rows = []
    layers = {
        "depthwise 3x3, 108 channels, 32x32": (nn.Conv2d(108, 108, 3, padding=1, groups=108, bias=False), 108),
        "pointwise 1x1, 18 to 108 channels, 32x32": (nn.Conv2d(18, 108, 1, bias=False), 18),
        "BatchNorm + ReLU, 108 channels, 32x32": (nn.Sequential(nn.BatchNorm2d(108), nn.ReLU(inplace=True)), 108),
    }
    for name, (layer, channels) in layers.items():
        ms = _time_layer(layer, torch.randn(64, channels, 32, 32), repeats=7, device="cpu")
        rows.append({"what": f"layer: {name}", "batch": 64, "ms": ms})
    for name, size, channels in (("mobilenetv2", 32, 3), ("resnet20", 32, 3)):
        model = build_model(name, in_channels=channels, image_size=size, num_classes=10).eval()
        for batch in (1, 64):
            ms = measure_latency(model, (channels, size, size), batch_size=batch).median_ms
            x = torch.randn(batch, channels, size, size)
            with torch.inference_mode():
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                for _ in range(5):
                    model(x)
                faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
            rows.append({"what": f"forward: {name}", "batch": batch, "ms": ms, "page_faults": faults})
    for name, size in (("resnet20", 28), ("digitnet", 28)):
        model = build_model(name, in_channels=1, image_size=size, num_classes=10)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x, y = torch.randn(128, 1, size, size), torch.randint(0, 10, (128,))
        times = []
        for _ in range(12):
            start = time.perf_counter()
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            times.append((time.perf_counter() - start) * 1e3)
        rows.append({"what": f"training step: {name}, 1x{size}x{size}", "batch": 128, "ms": float(np.median(times[2:]))})
    rows.append({"what": "peak memory (MB)", "batch": 0, "ms": float("nan"),
                 "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    return rows


def run_child(keep: bool, threads: int) -> list[dict]:
    env = {**os.environ, "AUTOPRUNE_KEEP_FREED_MEMORY": "1" if keep else "0", "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, __file__, "--child", "--threads", str(threads)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.threads)))
        return
    import torch
    from proxy_fidelity import command_and_machine, markdown

    torch.set_num_threads(args.threads)  # as the children run, and as the header reports

    default = pd.DataFrame(run_child(False, args.threads)).set_index(["what", "batch"])
    kept = pd.DataFrame(run_child(True, args.threads)).set_index(["what", "batch"])
    table = pd.DataFrame({
        "default_ms": default["ms"], "kept_ms": kept["ms"], "speedup": default["ms"] / kept["ms"],
        "default_page_faults": default.get("page_faults"), "kept_page_faults": kept.get("page_faults"),
        "default_peak_mb": default.get("peak_mb"), "kept_peak_mb": kept.get("peak_mb"),
    }).reset_index()
    RESULTS.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS / "allocator.csv", index=False)
    text = "\n".join([
        "# Allocator: glibc's default against keeping freed buffers",
        "",
        *command_and_machine("allocator.py"),
        "",
        "Each column from its own fresh process (`AUTOPRUNE_KEEP_FREED_MEMORY=0` for the default). Layers: the "
        "fastest block of calls, as the latency tables time them; forward: median of repeated runs after "
        "warm-up, as the evaluator measures; page faults: minor faults per forward pass after that; training: "
        "median SGD step, random data. `speedup`: default over kept.",
        "",
        markdown(table),
        "",
    ])
    (RESULTS / "allocator.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
