"""Measuring the latency model: which layers get tables, their shapes, calibration, caching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from autoprune.evaluation import latency_table
from autoprune.evaluation.latency_table import build_latency_model, calibrate, measure_tables
from autoprune.models import build_model
from autoprune.space.analysis import analyse
from autoprune.space.config import load_space_config
from autoprune.space.latency_model import LatencyModel, LayerTable
from autoprune.space.levels import LevelGrid
from autoprune.space.materialize import materialize


@pytest.fixture(scope="module")
def digitnet():
    torch.manual_seed(0)
    model = build_model("digitnet", in_channels=1, image_size=8, num_classes=10).eval()
    config = load_space_config("digitnet")
    example = torch.randn(1, 1, 8, 8)
    grid = LevelGrid.from_step(step=0.25, min_ratio=0.25)  # 4 levels: few shapes to time
    space, couplings = analyse(model, example, grid=grid, never_prune=list(config.never_prune))
    return model, space, couplings, example, list(config.never_prune)


def test_every_conv_linear_and_batchnorm_gets_a_table_over_its_groups_levels(digitnet) -> None:
    model, space, couplings, example, _ = digitnet
    tables = {t.name: t for t in measure_tables(model, space, couplings, example, batch_size=2, repeats=1)}
    modules = dict(model.named_modules())
    timed = {n for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))}
    assert set(tables) == timed
    n = space.n_levels
    for name, table in tables.items():
        assert np.all(table.table > 0), name
        rows = n if table.in_group >= 0 else 1
        cols = n if table.out_group >= 0 else 1
        assert table.table.shape == (rows, cols), name
    stem_conv, stem_norm = tables["stem.0"], tables["stem.1"]
    assert stem_conv.in_group == -1 and stem_conv.out_group >= 0  # the image's channels are never pruned
    # a BatchNorm follows its channels' group, with one count for input and output
    assert stem_norm.in_group == -1 and stem_norm.out_group == stem_conv.out_group
    assert tables["classifier"].out_group == -1


def test_calibration_recovers_an_affine_relation() -> None:
    tables = [LayerTable(name="a", in_group=-1, out_group=0, table=np.array([[4.0, 3.0, 2.0, 1.0]])),
              LayerTable(name="b", in_group=0, out_group=1, table=np.arange(16, dtype=float).reshape(4, 4) + 1)]
    model = LatencyModel(layers=tables)
    candidates = [np.array([i, j]) for i in range(4) for j in range(0, 4, 2)]
    calibrate(model, candidates, lambda levels: 3.0 * float(model.layer_sum(levels)[0]) + 0.25)
    assert model.scale == pytest.approx(3.0)
    assert model.offset == pytest.approx(0.25)
    assert len(model.context["calibration"]["measured_ms"]) == len(candidates)


def test_built_once_then_read_from_the_cache(digitnet, tmp_path, monkeypatch) -> None:
    model, space, couplings, example, never = digitnet

    def build(levels):
        return materialize(model, space, levels, example, never_prune=never)[0]

    kwargs = dict(model=model, space=space, couplings=couplings, example_input=example, materialize=build,
                  batch_size=1, device="cpu", cache_folder=tmp_path, cache_key={"model": "digitnet"})
    first = build_latency_model(**kwargs)
    assert len(list(tmp_path.glob("latency-*.json"))) == 1
    assert first.scale > 0
    calls = []
    real = latency_table.measure_tables
    monkeypatch.setattr(latency_table, "measure_tables", lambda *a, **k: calls.append(k) or real(*a, **k))
    again = build_latency_model(**kwargs)
    assert calls == []  # read from the cache
    levels = np.array([space.dense_candidate(), space.sparsest_candidate()])
    np.testing.assert_allclose(again.predict(levels), first.predict(levels), rtol=1e-4)  # tables kept to 1e-6 ms
    build_latency_model(**{**kwargs, "batch_size": 4})  # another batch size is another model
    assert [k["batch_size"] for k in calls] == [4]
    assert len(list(tmp_path.glob("latency-*.json"))) == 2


@pytest.mark.parametrize("text", ["[1, 2]", '{"layers": 3}', "not json", '{"layers": [{"name": 1}]}'])
def test_a_damaged_cached_latency_model_is_measured_again_not_trusted(tmp_path, text: str) -> None:
    from autoprune.evaluation.latency_table import cached_latency_model
    from autoprune.testing.searcher_suite import SUITE_GRID
    from autoprune.testing.synthetic import chain_space

    space = chain_space([4, 6, 8], SUITE_GRID)
    path, cached = cached_latency_model(tmp_path, "latency", {"device": "cpu"}, space)
    assert cached is None
    path.write_text(text)
    assert cached_latency_model(tmp_path, "latency", {"device": "cpu"}, space) == (path, None)
    assert path.read_text() == text, "nothing deleted: the measurement writes over it"
