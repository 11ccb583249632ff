"""Bad input at every boundary gets one sentence naming what was wrong, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import SEARCH, cli

import autoprune
from autoprune.cli import main
from autoprune.errors import UserError


@pytest.mark.parametrize("flag, value", [("--lr", "nan"), ("--lr", "inf"), ("--time-limit", "inf"),
                                         ("--time-limit", "nan"), ("--distill-weight", "nan"),
                                         ("--gpus-per-worker", "nan")])
def test_every_float_option_refuses_nan_and_inf(capsys, tmp_path: Path, flag: str, value: str) -> None:
    code = main([*SEARCH, flag, value, "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "must be a finite number" in err and value in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("section, value, said", [
    ("space", None, "its 'space' section is missing"),
    ("limits", [1, 2], "its 'limits' section is list, not a mapping"),
    ("sessions", {}, "its 'sessions' section is dict, not a list"),
    ("dense", {"flops": "many"}, "its 'dense' section cannot be read"),
    ("space", {"groups": []}, "its 'space' section cannot be read"),
])
def test_a_damaged_run_json_section_is_named(run_copy: Path, section: str, value: object, said: str) -> None:
    info = json.loads((run_copy / "run.json").read_text())
    if value is None:
        del info[section]
    else:
        info[section] = value
    (run_copy / "run.json").write_text(json.dumps(info))
    for args in (["front", str(run_copy)], ["search", "--resume", str(run_copy)]):
        done = cli(*args)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert said in done.stderr and done.stderr.count("\n") == 1


def test_the_python_api_refuses_wrong_types_in_one_sentence(finished_run: Path) -> None:
    with pytest.raises(UserError, match="run_dir must be the path of a run directory"):
        autoprune.open_run(None)
    with pytest.raises(UserError, match="run_dir must be the path of a run directory"):
        autoprune.search(run_dir=123)
    with pytest.raises(UserError, match="run_dir must be the path of a run directory"):
        autoprune.resume(3.5)
    run = autoprune.open_run(finished_run)
    with pytest.raises(UserError, match="export needs the path of an output folder, got None"):
        run.export(None)
    with pytest.raises(UserError, match="pick is empty"):
        run.pick("")
    with pytest.raises(UserError, match="pick is empty"):
        run.pick("   ")
    with pytest.raises(UserError, match="trust_factory must be True or False"):
        autoprune.open_run(finished_run, trust_factory="yes")


def test_a_damaged_export_says_what_is_wrong(finished_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["-q", "export", str(finished_run), "--steps", "0", "--out", str(out)]) == 0
    truncated = tmp_path / "truncated"
    shutil.copytree(out, truncated)
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(UserError, match="is not a readable safetensors file, perhaps truncated"):
        autoprune.load(truncated)
    for key in ("keep_indices", "model_spec", "input_shape"):
        missing = tmp_path / f"no-{key}"
        shutil.copytree(out, missing)
        recipe = json.loads((missing / "recipe.json").read_text())
        del recipe[key]
        (missing / "recipe.json").write_text(json.dumps(recipe))
        with pytest.raises(UserError, match=f"has no '{key}'; the export is incomplete"):
            autoprune.load(missing)
    unknown = tmp_path / "unknown"
    shutil.copytree(out, unknown)
    recipe = json.loads((unknown / "recipe.json").read_text())
    recipe["model_spec"]["name"] = "resnet9000"
    (unknown / "recipe.json").write_text(json.dumps(recipe))
    with pytest.raises(UserError, match="names the model 'resnet9000', which autoprune does not know"):
        autoprune.load(unknown)
