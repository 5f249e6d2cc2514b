"""Every checkpoint loader refuses a pickle that needs code: one line, the payload never runs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from models.checkpoints import pickle_globals, safe_torch_load
from models.errors import CheckpointError
from models.mask2former.conversion import load_state_dict_for
from models.sam import build_sam_model, load_sam_checkpoint


class _System:
    """Unpickling this runs a shell command (what a malicious checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _refusal(call, path: Path, marker: Path) -> str:
    with pytest.raises(CheckpointError) as error:
        call(path)
    assert not marker.exists(), "the payload ran"
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"refusing to load {str(path)!r}")
    assert f"{os.system.__module__}.system" in message.split(". Unpickling")[0]
    assert "will likely succeed" not in message
    return message


@pytest.mark.parametrize("container", ["torch.save", "plain pickle"])
def test_sam_loader_refuses_code_in_one_line(tmp_path: Path, container: str) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "sam.pth"
    state = {"image_encoder.x": torch.zeros(1), "evil": _System(marker)}
    if container == "torch.save":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state))
    sam = build_sam_model("vit_tiny")
    _refusal(lambda p: load_sam_checkpoint(sam, p), path, marker)


@pytest.mark.parametrize("fmt", ["rba", "ugains"])
def test_mask2former_converters_refuse_code_in_one_line(tmp_path: Path, fmt: str) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "model_final.pth"
    key = "model" if fmt == "rba" else "state_dict"
    torch.save({key: {"backbone.x": torch.zeros(1)}, "extra": _System(marker)}, path)
    _refusal(lambda p: load_state_dict_for(fmt, str(p), architecture="tiny_1dl"), path, marker)


def test_plain_pickles_name_their_globals_without_running_them(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    data = pickle.dumps({"w": [1.0], "evil": _System(marker)})
    assert pickle_globals(data) == [f"{os.system.__module__}.system"]
    path = tmp_path / "weights.pkl"
    path.write_bytes(data)
    _refusal(safe_torch_load, path, marker)


def test_a_file_that_is_no_checkpoint_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint at all")
    with pytest.raises(
        CheckpointError, match=r"cannot read .*notes\.pth.* as a PyTorch checkpoint"
    ):
        safe_torch_load(path)
