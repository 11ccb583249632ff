"""Language models: Hugging Face causal LMs, text data, their search space and evaluator."""
