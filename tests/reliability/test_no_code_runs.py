"""Loading an export or exporting a run never imports code a file names on its own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import cli, python

PLANTED = "import pathlib\npathlib.Path(__file__).with_name('PLANTED_RAN').write_text('ran')\n\ndef build(**kw):\n    pass\n"


@pytest.fixture(scope="module")
def export(finished_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "out"
    done = cli("export", str(finished_run), "--pick", "best", "--steps", "0", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


def _hostile(export: Path, tmp_path: Path, model: str) -> Path:
    folder = tmp_path / "downloaded"
    shutil.copytree(export, folder)
    recipe = json.loads((folder / "recipe.json").read_text())
    recipe["model_spec"]["name"] = model
    (folder / "recipe.json").write_text(json.dumps(recipe))
    (folder / "planted.py").write_text(PLANTED)
    return folder


@pytest.mark.parametrize("model", ["os:abort", "planted:build"])
def test_loading_an_export_that_names_code_runs_none(export: Path, tmp_path: Path, model: str) -> None:
    folder = _hostile(export, tmp_path, model)
    done = python("import autoprune\ntry:\n    autoprune.load('.')\nexcept autoprune.UserError as e:\n"
                  "    print('refused:', e)\n", cwd=folder)
    assert done.returncode == 0, done.stderr  # os.abort would end it with SIGABRT
    assert f"refused: the recipe in '.' names the model factory '{model}'" in done.stdout
    assert "factory=" in done.stdout, "the sentence says how to consent"
    assert not (folder / "PLANTED_RAN").exists(), "the planted module never ran"


def test_a_zoo_export_loads_from_a_folder_with_a_planted_module(export: Path, tmp_path: Path) -> None:
    folder = tmp_path / "downloaded"
    shutil.copytree(export, folder)
    for name in ("torch_pruning.py", "safetensors.py", "autoprune_planted.py"):  # names autoprune imports lazily
        (folder / name).write_text(PLANTED)
    done = python("import autoprune\nm = autoprune.load('.')\nprint(type(m).__name__)", cwd=folder)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "DigitNet"
    assert not (folder / "PLANTED_RAN").exists()


def test_a_consented_factory_is_the_callers_not_the_files(export: Path, tmp_path: Path) -> None:
    folder = _hostile(export, tmp_path, "os:abort")
    (tmp_path / "mine.py").write_text("from autoprune.models import build_model\n\n"
                                      "def net(in_channels, image_size, num_classes):\n"
                                      "    return build_model('digitnet', in_channels=in_channels, "
                                      "image_size=image_size, num_classes=num_classes)\n")
    done = python(f"import sys; sys.path.insert(0, {str(tmp_path)!r})\nimport autoprune\n"
                  "print(type(autoprune.load('downloaded', factory='mine:net')).__name__)", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "DigitNet"


def test_exporting_a_run_that_names_a_factory_needs_consent(run_copy: Path, tmp_path: Path) -> None:
    info = json.loads((run_copy / "run.json").read_text())
    info["config"]["model"] = "planted:build"
    (run_copy / "run.json").write_text(json.dumps(info))
    (run_copy / "planted.py").write_text(PLANTED)
    out = tmp_path / "out"
    for args in (["export", str(run_copy), "--out", str(out)], ["search", "--resume", str(run_copy)]):
        done = cli(*args, cwd=run_copy)
        assert done.returncode == 2, done.stderr
        assert "names the factory 'planted:build'" in done.stderr and "--trust-factory" in done.stderr
    assert not (run_copy / "PLANTED_RAN").exists() and not out.exists()
