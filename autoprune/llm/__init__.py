"""Language models: Hugging Face causal LMs (loading, structure, search space, exact costs,
pruning), text data, and their evaluator.

Needs the ``llm`` extra (transformers); nothing here is imported by the image path.
"""
