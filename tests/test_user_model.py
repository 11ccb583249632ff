"""A user's own data and model: factory data reaches the model as given, a checkpoint trained
on it keeps its accuracy in autoprune, an untrained factory model is flagged, and an export
carries the input normalisation that reproduces its reported accuracy."""

from __future__ import annotations

import logging
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import autoprune
from autoprune.config import SearchConfig
from autoprune.data import load_data
from autoprune.errors import UserError
from autoprune.evaluation.training import measure
from autoprune.setup_run import prepare
from autoprune.tasks import prepare_task

MODULE = "autoprune_test_user_model"

#: images preprocessed the user's way, far from mean 0 / std 1, so any re-normalisation shows
SOURCE = '''
import numpy as np
import torch
from torch import nn


def images(n, seed):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.normal(0.0, 1.0, size=(n, 1, 8, 8)).astype(np.float32)
    x[y == 0, :, :4, :] += 1.5
    x[y == 1, :, :, :4] += 1.5
    return torch.from_numpy(40.0 + 6.0 * x), torch.from_numpy(y)


def data():
    return images(300, 0), images(90, 1)


def net(in_channels, num_classes):
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
'''


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory):
    """The user's module on sys.path, and a checkpoint trained on exactly its data (a second or so)."""
    folder = tmp_path_factory.mktemp("user")
    (folder / f"{MODULE}.py").write_text(textwrap.dedent(SOURCE))
    sys.path.insert(0, str(folder))
    module = __import__(MODULE)
    (x, y), _ = module.data()
    torch.manual_seed(0)
    model = module.net(1, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    checkpoint = folder / "net.pt"
    torch.save(model.state_dict(), checkpoint)
    yield module, str(checkpoint)
    sys.path.remove(str(folder))
    sys.modules.pop(MODULE, None)


def _own_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy as the user measures it: the factory's tensors straight into the model."""
    with torch.no_grad():
        return float((model.eval()(x).argmax(1) == y).float().mean())


def test_float_factory_data_is_the_model_input_as_given(user) -> None:
    module, checkpoint = user
    task = prepare_task(model=f"{MODULE}:net", data=f"{MODULE}:data", checkpoint=checkpoint)
    seen: list[torch.Tensor] = []
    task.dense.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    measure(task.dense, task.data, task.data.test)
    _, (x_test, _) = module.data()
    assert len(seen) == 1 and torch.equal(seen[0], x_test)


def test_a_checkpoint_trained_on_factory_data_keeps_its_accuracy(user) -> None:
    module, checkpoint = user
    task = prepare_task(model=f"{MODULE}:net", data=f"{MODULE}:data", checkpoint=checkpoint)
    _, (x_test, y_test) = module.data()
    own = _own_accuracy(task.dense, x_test, y_test)
    assert own >= 0.9, "the checkpoint learned the task"
    assert measure(task.dense, task.data, task.data.test)[0] == pytest.approx(own)
    val_accuracy = measure(task.dense, task.data, task.data.val)[0]
    assert val_accuracy == pytest.approx(_own_accuracy(task.dense, task.data.val.x, task.data.val.y))


def test_an_untrained_factory_model_is_flagged_when_a_run_is_prepared(user, caplog) -> None:
    config = SearchConfig(model=f"{MODULE}:net", data=f"{MODULE}:data", budget=("flops=0.9",), fidelity=2)
    with caplog.at_level(logging.WARNING, logger="autoprune"):
        prepared = prepare(config)
    prepared.executor.close()
    warnings = [r.getMessage() for r in caplog.records if "near chance" in r.getMessage()]
    assert prepared.dense_metrics["accuracy"] <= 0.5
    assert len(warnings) == 1 and "without --checkpoint" in warnings[0] and "(0.3333 for 3 classes)" in warnings[0]


def test_a_trained_checkpoint_is_not_flagged(user, caplog) -> None:
    _, checkpoint = user
    config = SearchConfig(model=f"{MODULE}:net", data=f"{MODULE}:data", checkpoint=checkpoint,
                          budget=("flops=0.9",), fidelity=2)
    with caplog.at_level(logging.WARNING, logger="autoprune"):
        prepared = prepare(config)
    prepared.executor.close()
    assert prepared.dense_metrics["accuracy"] >= 0.9
    assert not [r for r in caplog.records if "near chance" in r.getMessage()]


def _accuracy_from_raw(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy after turning raw images into input with the loaded model's own normalisation."""
    n = model.autoprune_normalization
    mean, std = (torch.tensor(n[k]).view(1, -1, 1, 1) for k in ("mean", "std"))
    return _own_accuracy(model, (x.float() / n["scale"] - mean) / std, y)


def test_an_exported_user_model_says_its_input_is_used_as_given(user, tmp_path: Path) -> None:
    module, checkpoint = user
    run = autoprune.search(run_dir=tmp_path / "run", model=f"{MODULE}:net", data=f"{MODULE}:data",
                           checkpoint=checkpoint, budget=["flops=0.9"], trials=2, fidelity=2, bn_batches=1,
                           progress=False)
    recipe = run.export(tmp_path / "out", pick="best", steps=0)  # a run from search() trusts its own factories
    with pytest.raises(UserError, match="names the model factory"):  # never imported unless the caller says so
        autoprune.load(tmp_path / "out")
    model = autoprune.load(tmp_path / "out", factory=f"{MODULE}:net")
    assert model.autoprune_normalization == {"mean": [0.0], "std": [1.0], "scale": 1.0}
    assert model.autoprune_normalization == recipe["normalization"]
    _, (x_test, y_test) = module.data()
    assert _own_accuracy(model, x_test, y_test) == pytest.approx(recipe["metrics"]["test_accuracy"])


def test_an_exported_digits_model_carries_the_normalisation_of_its_data(tmp_path: Path) -> None:
    run = autoprune.search(run_dir=tmp_path / "run", budget=["flops=0.5"], trials=2, fidelity=2, bn_batches=1,
                           progress=False)
    recipe = run.export(tmp_path / "out", pick="best", steps=0)
    model = autoprune.load(str(tmp_path / "out"))
    data = load_data("digits")
    assert model.autoprune_normalization == {"mean": list(data.mean), "std": list(data.std), "scale": 16.0}
    assert data.test.x.dtype == torch.uint8 and data.mean != (0.0,)
    accuracy = _accuracy_from_raw(model, data.test.x, data.test.y)
    assert accuracy == pytest.approx(recipe["metrics"]["test_accuracy"]) and accuracy > 0.5


@pytest.mark.parametrize("path", [5, None, b"folder"])
def test_loading_something_that_is_not_a_path_says_what_it_expects(path) -> None:
    from autoprune.errors import UserError
    from autoprune.export import load_exported

    with pytest.raises(UserError, match=f"expects the path of an export folder, got {type(path).__name__}"):
        load_exported(path)
