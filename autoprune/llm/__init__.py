"""Hugging Face causal language models: structure, search space, exact costs and pruning.

Needs the ``llm`` extra (transformers); nothing here is imported by the image path.
"""
