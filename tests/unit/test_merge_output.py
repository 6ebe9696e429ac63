"""launch/merge.py --output: a new path, an empty directory or an earlier merge's output is written; any other
directory or a file is refused in one line and left as it was."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def merge_script():
    if str(ROOT / "launch") not in sys.path:
        sys.path.insert(0, str(ROOT / "launch"))  # its `import _bootstrap`
    spec = importlib.util.spec_from_file_location("merge_script", ROOT / "launch" / "merge.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> list[str]:
    """Two PEFT adapters of one 4 -> 3 module at rank 1 (scaling 1)."""
    import torch
    from safetensors.torch import save_file

    paths = []
    for index in (1, 2):
        path = tmp_path_factory.mktemp(f"adapter{index}")
        (path / "adapter_config.json").write_text(json.dumps({"r": 1, "lora_alpha": 1, "target_modules": ["q_proj"],
                                                              "base_model_name_or_path": "tiny"}))
        save_file({"base_model.model.q_proj.lora_A.weight": torch.full((1, 4), float(index)),
                   "base_model.model.q_proj.lora_B.weight": torch.ones(3, 1)}, path / "adapter_model.safetensors")
        paths.append(str(path))
    return paths


def test_only_new_empty_or_earlier_merge_outputs_are_written(merge_script, adapters, tmp_path, capsys) -> None:
    """Before: a directory of the user's own files was deleted, and a file gave a NotADirectoryError traceback."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert merge_script.main([*adapters, "--output", str(mine)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"merge: --output {mine}: a non-empty directory that is not an earlier merge's output (it has no merge.json); "
        "choose a new directory"]
    assert [path.name for path in tmp_path.iterdir()] == ["mine"]
    assert [path.name for path in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"

    afile = tmp_path / "afile"
    afile.write_text("keep me too")
    assert merge_script.main([*adapters, "--output", str(afile)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"merge: --output {afile}: exists and is not a directory"]
    assert afile.read_text() == "keep me too"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert merge_script.main([*adapters, "--output", str(empty)]) == 0
    assert sorted(path.name for path in empty.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                             "merge.json"]
    assert json.loads((empty / "merge.json").read_text())["weights"] is None
    assert merge_script.main([*adapters, "--weights", "1,3", "--output", str(empty)]) == 0  # its own: replaced
    assert json.loads((empty / "merge.json").read_text())["weights"] == [1.0, 3.0]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["afile", "empty", "mine"]  # no scratch left
