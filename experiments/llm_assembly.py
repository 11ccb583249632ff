"""Building pruned causal LMs: from scratch, pre-scored, and assembled from the level database.

For a Llama-architecture model with random weights (the timings do not depend on what
the weights are), per random candidate of the default space (``kv_groups``, removable
sub-blocks, grid step 1/16):

- ``scratch``: score importance (magnitude) on the dense weights, deep-copy the dense
  model, slice (:func:`autoprune.llm.prune.prune` without ``orders``);
- ``pre-scored``: the same with the importance order computed once beforehand (deep copy
  and slicing only);
- ``assembled``: :class:`autoprune.llm.assembly.LMLevelDatabase`, structure-only copy and
  copies of cached slices, once every (group, level) it needs is cached (``cold``: the
  first assembly of each candidate, which slices and caches as it goes).

For scale it also times one forward pass over ``--seq-len`` tokens of the dense model
(what one KL evaluation spends per sequence) and the activation-aware scoring on
``--calibration`` sequences (done once per search).

    python experiments/llm_assembly.py --threads 1
    python experiments/llm_assembly.py --config tiny --candidates 20

Writes ``results/llm_assembly.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from autoprune.llm.assembly import LMLevelDatabase
from autoprune.llm.importance import unit_orders
from autoprune.llm.prune import prune
from autoprune.llm.space import build_lm_space
from autoprune.llm.structure import find_structure
from autoprune.space.levels import LevelGrid
from proxy_fidelity import command_and_machine, markdown

HERE = Path(__file__).parent
RESULTS = HERE / "results"

#: SmolLM2-135M's geometry (30 blocks, hidden 576, FFN 1536, 9 query / 3 key-value heads of 64, tied
#: embeddings over 49152 tokens), and a small one of the same shape
CONFIGS = {
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, head_dim=64, vocab_size=49152, max_position_embeddings=2048,
                    tie_word_embeddings=True),
    "tiny": dict(hidden_size=192, intermediate_size=512, num_hidden_layers=8, num_attention_heads=6,
                 num_key_value_heads=2, head_dim=32, vocab_size=4096, max_position_embeddings=1024,
                 tie_word_embeddings=True),
}


def build(config_name: str) -> torch.nn.Module:
    import transformers

    config = transformers.LlamaConfig(**CONFIGS[config_name])
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def measure(config_name: str, args: argparse.Namespace) -> dict:
    dense = build(config_name)
    grid = LevelGrid.from_step(step=1 / 16, min_ratio=1 / 16)
    space = build_lm_space(dense, grid=grid, seq_len=args.seq_len)
    rng = np.random.default_rng(0)
    candidates = rng.integers(0, space.n_levels, size=(args.candidates, space.n_groups))
    structure = find_structure(dense)
    order_s, orders = timed(lambda: unit_orders(dense, structure, space))
    calibration = torch.randint(0, dense.config.vocab_size, (args.calibration, args.seq_len))
    activation_s, _ = timed(lambda: unit_orders(dense, structure, space, importance="activation",
                                                calibration=calibration))
    database = LMLevelDatabase(dense=dense, space=space, orders=orders)
    scratch, prescored, cold, warm = [], [], [], []
    for levels in candidates:
        scratch.append(timed(lambda: prune(dense, space, levels))[0])
        prescored.append(timed(lambda: prune(dense, space, levels, orders=orders))[0])
        cold.append(timed(lambda: database.assemble(levels))[0])
        warm.append(timed(lambda: database.assemble(levels))[0])
    ids = torch.randint(0, dense.config.vocab_size, (1, args.seq_len))
    with torch.no_grad():
        forward = statistics.median(timed(lambda: dense(ids, use_cache=False))[0] for _ in range(3))
    median = statistics.median
    return {
        "model": config_name,
        "dense params (M)": round(sum(p.numel() for p in dense.parameters()) / 1e6, 1),
        "groups": space.n_groups,
        "magnitude order once (s)": order_s,
        f"activation order once, {args.calibration}x{args.seq_len} tokens (s)": activation_s,
        "scratch (s)": median(scratch),
        "pre-scored (s)": median(prescored),
        "assembled cold (s)": median(cold),
        "assembled (s)": median(warm),
        "speed-up vs scratch": median(scratch) / median(warm),
        "speed-up vs pre-scored": median(prescored) / median(warm),
        f"dense forward 1x{args.seq_len} (s)": forward,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), action="append",
                        help="model geometry (repeatable; default: tiny and smollm2)")
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--calibration", type=int, default=4, help="calibration sequences for activation scoring")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(name, args) for name in (args.config or ["tiny", "smollm2"])]
    table = pd.DataFrame(rows)
    lines = [
        "# Building pruned causal LMs: from scratch, pre-scored, assembled",
        "",
        *command_and_machine("llm_assembly.py"),
        "",
        f"Median seconds per candidate over {args.candidates} random candidates of the default space "
        "(kv_groups, removable sub-blocks, 16 levels); random weights. `scratch` scores magnitude importance, "
        "deep-copies and slices; `pre-scored` deep-copies and slices with the order computed once; "
        "`assembled` copies cached slices into a structure-only copy (`cold`: first time, slicing and caching).",
        "",
        markdown(table.set_index("model").T.reset_index().rename(columns={"index": "quantity"})),
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "llm_assembly.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
