"""The run record: run.json read and written by one typed object, unknown keys kept, damage
named in one sentence; export no longer imports the API module."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoprune.errors import UserError
from autoprune.store.quality import ACCURACY, PERPLEXITY
from autoprune.store.record import RunRecord
from autoprune.store.run_dir import FORMAT_VERSION


def _record(**changes) -> RunRecord:
    values = dict(config={"trials": 3}, space={"groups": []}, limits={"flops": 10.0},
                  dense={"accuracy": 0.9, "flops": 20, "params": 5}, quality=ACCURACY, data_fingerprint="abc",
                  model_spec={"name": "digitnet"}, sessions=[])
    values.update(changes)
    return RunRecord(**values)


def test_create_read_write_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "run"
    record = _record(quality=PERPLEXITY)
    with record.create(path):
        pass
    raw = json.loads((path / "run.json").read_text())
    assert raw["format_version"] == FORMAT_VERSION and raw["quality"]["metric"] == "perplexity"
    read = RunRecord.read(path)
    assert read == record
    read.sessions.append({"started": 1.0, "running": True})
    read.incumbent = 2
    read.write(path)
    again = RunRecord.read(path)
    assert again.sessions == [{"started": 1.0, "running": True}] and again.incumbent == 2
    assert again.to_dict() == json.loads((path / "run.json").read_text())


def test_keys_of_a_newer_version_are_kept_as_read(tmp_path: Path) -> None:
    path = tmp_path / "run"
    with _record().create(path):
        pass
    raw = json.loads((path / "run.json").read_text())
    raw["tokenizer"] = {"kind": "bpe"}
    (path / "run.json").write_text(json.dumps(raw))
    record = RunRecord.read(path)
    assert record.extra == {"tokenizer": {"kind": "bpe"}}
    record.write(path)
    assert json.loads((path / "run.json").read_text())["tokenizer"] == {"kind": "bpe"}


@pytest.mark.parametrize(("section", "value", "expected"), [
    ("dense", {"accuracy": "high"}, "its 'dense' section cannot be read"),
    ("limits", [1, 2], "its 'limits' section is list, not a mapping"),
    ("quality", {"metric": "bleu"}, "names the quality metric 'bleu'"),
    ("format_version", 99, "is not a run file this version of autoprune can read"),
])
def test_damaged_sections_are_one_sentence(tmp_path: Path, section: str, value, expected: str) -> None:
    path = tmp_path / "run"
    with _record().create(path):
        pass
    raw = json.loads((path / "run.json").read_text())
    raw[section] = value
    (path / "run.json").write_text(json.dumps(raw))
    with pytest.raises(UserError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        RunRecord.read(path)


def test_export_does_not_import_the_api_module() -> None:
    """The api <-> export cycle is gone: export modules import the API only for type checking."""
    import ast

    import autoprune

    root = Path(autoprune.__file__).parent
    for module in ("export.py", "llm/export.py", "onnx_export.py"):
        tree = ast.parse((root / module).read_text())
        typing_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and getattr(block.test, "id", None) == "TYPE_CHECKING" for node in ast.walk(block)}
        runtime = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                   and node.module in ("autoprune.api", "autoprune") and id(node) not in typing_only
                   and (node.module == "autoprune.api" or any(a.name == "api" for a in node.names))]
        assert runtime == [], f"{module} imports autoprune.api at line {runtime}"
