"""``export --format onnx``: torch.onnx export, checked in onnxruntime against PyTorch within
1e-4 and timed there, on the digits run through the CLI and on every zoo model pruned."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from autoprune.cli import main
from autoprune.models import MODEL_NAMES, build_model, model_family
from autoprune.space.analysis import build_search_space
from autoprune.space.config import load_space_config
from autoprune.space.materialize import materialize

ort = pytest.importorskip("onnxruntime")


def test_export_onnx_of_the_digits_run(random_run: Path, tmp_path: Path, capsys) -> None:
    import autoprune
    from autoprune.data import load_data

    out = tmp_path / "onnx-export"
    assert main(["-q", "export", str(random_run), "--pick", "knee", "--format", "onnx", "--steps", "5",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ONNX: " in printed and "onnxruntime" in printed and "PyTorch" in printed
    recipe = json.loads((out / "recipe.json").read_text())
    summary = recipe["onnx"]
    assert summary["max_abs_diff"] <= 1e-4 and summary["checked_inputs"] == 256
    assert summary["onnxruntime_latency_ms"] > 0 and summary["torch_latency_ms"] > 0
    # the file on its own, in a fresh onnxruntime session, agrees with the exported safetensors model
    model = autoprune.load(out)
    data = load_data("digits")
    x = data.normalize(data.test.x[:100])
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    found = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        expected = model(x).numpy()
    assert found.shape == (100, 10)
    assert np.abs(found - expected).max() <= 1e-4
    assert not list(tmp_path.glob(".onnx-export.*")), "no staging folder left"


def _refused(capsys, args: list[str], expected: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err


def test_onnx_without_its_packages_or_for_a_language_model_is_one_sentence(
        random_run: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    with monkeypatch.context() as patched:
        patched.setitem(sys.modules, "onnxruntime", None)  # as when the package is not installed
        _refused(capsys, ["-q", "export", str(random_run), "--format", "onnx", "--out", str(tmp_path / "a")],
                 "--format onnx needs onnxruntime, which are not installed; install the onnx extra")
    # a language-model run, as its run.json records it: refused before anything is rebuilt
    lm = tmp_path / "lm-run"
    shutil.copytree(random_run, lm)
    info = json.loads((lm / "run.json").read_text())
    info["quality"] = {"metric": "perplexity", "goal": "min", "label": "held-out perplexity"}
    (lm / "run.json").write_text(json.dumps(info))
    _refused(capsys, ["-q", "export", str(lm), "--pick", "0", "--format", "onnx", "--out", str(tmp_path / "b")],
             "--format onnx exports image models only")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _realistic(model: torch.nn.Module, x: torch.Tensor, seed: int) -> torch.nn.Module:
    """Random BatchNorm scales and shifts (zoo blocks start with some at zero), statistics
    calibrated on ``x``: outputs of the size a trained model gives, not a near-constant."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            with torch.no_grad():
                module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        for batch in x.split(16):
            model(batch)
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_zoo_model_pruned_runs_in_onnxruntime_within_1e4(name: str, tmp_path: Path) -> None:
    from autoprune.onnx_export import TOLERANCE, export_onnx

    torch.manual_seed(0)
    channels, size = (1, 8) if name == "digitnet" else (3, 32)
    model = build_model(name, in_channels=channels, image_size=size, num_classes=10).eval()
    config = load_space_config(model_family(name))
    example = torch.randn(1, channels, size, size)
    space = build_search_space(model, example, grid=config.grid, never_prune=list(config.never_prune))
    levels = np.random.default_rng(0).integers(0, space.n_levels, size=space.n_groups)
    pruned, _ = materialize(model, space, levels, example, never_prune=list(config.never_prune))
    x = torch.randn(64, channels, size, size)
    pruned = _realistic(pruned, x, seed=1)
    summary = export_onnx(pruned, x, tmp_path)
    assert TOLERANCE == 1e-4 and summary["max_abs_diff"] <= 1e-4
    with torch.no_grad():
        scale = pruned(x).abs().max().item()
    assert scale > 0.1, "the check compared outputs of a realistic size, not a near-constant"
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    single = session.run(None, {"input": x[:1].numpy()})[0]  # the batch dimension is dynamic
    assert single.shape == (1, 10)
