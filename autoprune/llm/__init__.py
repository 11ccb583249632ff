"""Language models: Hugging Face causal LMs (loading, structure, search space, exact costs,
pruning), text data, and their evaluator.

Needs the ``llm`` extra (transformers); nothing here is imported by the image path.
"""

from autoprune.torchvision_compat import make_torchvision_importable

# transformers imports torchvision whenever it is installed; every module here imports
# transformers, so the package itself makes a CUDA-built torchvision importable first
# (scripts that import autoprune.llm before transformers then work too).
make_torchvision_importable()
