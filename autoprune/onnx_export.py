"""ONNX beside the safetensors export (``autoprune export RUN --format onnx``).

The pruned model is exported with ``torch.onnx`` (the torch.export-based exporter, batch
dimension dynamic), loaded back in ``onnxruntime`` and checked against the PyTorch
model on test inputs: the largest absolute difference of the outputs is recorded, and an
export further than :data:`TOLERANCE` from PyTorch is refused rather than written. Both
runtimes are then timed alike (same input shape, threads, warm-up and repeats) so the
export's summary can put onnxruntime's latency next to PyTorch's.

Image models only: a Hugging Face language model's export stays safetensors and ``hf/``.
The ``onnx`` extra (onnx, onnxruntime, onnxscript) is imported only here.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autoprune.errors import UserError
from autoprune.evaluation.latency import measure_latency

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
#: the largest absolute difference from PyTorch's output an export may have
TOLERANCE = 1e-4
#: the opset of the exported graph
OPSET = 18
FORMATS = ("safetensors", "onnx")


def check_onnx_available() -> None:
    """Refuse ``--format onnx`` in one sentence when the ``onnx`` extra is not installed."""
    missing = []
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UserError(f"--format onnx needs {', '.join(missing)}, which are not installed; install the onnx "
                        "extra (pip install 'autoprune[onnx]') or export without --format onnx.")


def check_format(export_format: str, *, language_model: bool) -> None:
    """Refuse an unknown format, ONNX for a language model, or ONNX without its packages, before any work."""
    if export_format not in FORMATS:
        raise UserError(f"--format {export_format!r} is not known; choose {' or '.join(FORMATS)}.")
    if export_format != "onnx":
        return
    if language_model:
        raise UserError("--format onnx exports image models only; a language model is exported as safetensors "
                        "and a Hugging Face folder (hf/), so drop --format onnx.")
    check_onnx_available()


def export_onnx(model: torch.nn.Module, inputs: torch.Tensor, folder: Path, *, latency_batch_size: int = 1,
                repeats: int = 30) -> dict[str, Any]:
    """Write ``model`` (eval mode, CPU) as ``folder/model.onnx`` and return its check and timings.

    ``inputs``: test inputs (N, C, H, W) as the model takes them (normalised). Refuses, in
    one sentence, an export whose onnxruntime output differs from PyTorch's by more than
    :data:`TOLERANCE`."""
    import onnxruntime

    model = model.eval().cpu()
    path = folder / ONNX_FILE
    started = time.perf_counter()
    batch = torch.export.Dim("batch", min=1)
    try:
        with torch.no_grad(), _exporter_quiet():
            program = torch.onnx.export(model, (inputs[:2],), dynamo=True, opset_version=OPSET,
                                        input_names=["input"], output_names=["logits"],
                                        dynamic_shapes=({0: batch},), verbose=False)
    except Exception as exc:  # an operator or construct the exporter cannot translate
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"the pruned model cannot be exported to ONNX ({type(exc).__name__}: {first}); "
                        "export without --format onnx.") from None
    program.save(str(path))
    export_seconds = time.perf_counter() - started
    session = _session(path, onnxruntime)
    with torch.no_grad():
        expected = model(inputs).numpy()
    found = session.run(None, {"input": inputs.numpy()})[0]
    difference = float(np.abs(found - expected).max())
    if not difference <= TOLERANCE:
        raise UserError(f"the ONNX export differs from the PyTorch model by up to {difference:.3g} on the test inputs "
                        f"(more than {TOLERANCE:g}); it was not written. Export without --format onnx.")
    shape = tuple(int(v) for v in inputs.shape[1:])
    onnx_ms = _onnx_latency_ms(session, shape, latency_batch_size, repeats)
    torch_ms = measure_latency(model, shape, batch_size=latency_batch_size, repeats=repeats).median_ms
    return {"file": ONNX_FILE, "opset": OPSET, "onnxruntime_version": onnxruntime.__version__,
            "checked_inputs": int(inputs.shape[0]), "max_abs_diff": difference, "tolerance": TOLERANCE,
            "latency_batch_size": latency_batch_size, "threads": torch.get_num_threads(),
            "onnxruntime_latency_ms": onnx_ms, "torch_latency_ms": torch_ms,
            "export_seconds": export_seconds}


@contextmanager
def _exporter_quiet() -> Iterator[None]:
    """Hide the exporter's notes that concern other models (torchvision's operators not
    registered) and its internal deprecation warnings; its errors still come through."""
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        exporter_log.setLevel(level)


def _session(path: Path, onnxruntime: Any) -> Any:
    """An onnxruntime session on the CPU with as many threads as torch uses, so timings compare."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _onnx_latency_ms(session: Any, shape: tuple[int, ...], batch_size: int, repeats: int, warmup: int = 5) -> float:
    """Median milliseconds of ``session`` on random input, measured as :func:`measure_latency` measures torch."""
    x = np.random.default_rng(0).standard_normal((batch_size, *shape)).astype(np.float32)
    for _ in range(warmup):
        session.run(None, {"input": x})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {"input": x})
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def staged_onnx(model: torch.nn.Module, inputs: torch.Tensor, *,
                latency_batch_size: int) -> tuple[Path, dict[str, Any]]:
    """Export into a fresh temporary folder (the caller copies the file into the export and
    removes the folder); returns the folder and the summary. Nothing is left on failure."""
    folder = Path(tempfile.mkdtemp(prefix="autoprune-onnx-"))
    try:
        return folder, export_onnx(model, inputs, folder, latency_batch_size=latency_batch_size)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
