"""The mining config: one typed schema, errors that name the key, overrides, fingerprint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipelines.config import (
    ConfigError,
    ImageSource,
    MiningConfig,
    VideoSource,
    load_config,
    parse_config,
)

CONFIGS = Path(__file__).resolve().parents[2] / "mining_configs"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_config_is_valid(name: str) -> None:
    config = load_config(CONFIGS / name)
    assert config.name == Path(name).stem


def test_an_empty_file_is_the_default_config(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == MiningConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: [unclosed\n", "is not valid YAML"),
        ("- a\n- b\n", "expected a mapping at the top level"),
    ],
)
def test_unreadable_files_are_config_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"nmae": "x"}, "nmae"),
        ({"sources": [{"kind": "images", "path": "p", "stride": 2}]}, "sources.0.stride"),
        ({"sources": [{"kind": "video", "path": "p", "fps": 2}]}, "sources.0.fps"),
        ({"models": {"devise": "cpu"}}, "models.devise"),
        ({"models": {"sam": {"checkpont": "x"}}}, "models.sam.checkpont"),
        (
            {"models": {"mask2former": {"format": "random", "layers": 1}}},
            "models.mask2former.layers",
        ),
        ({"models": {"method": {"num_point": 3}}}, "models.method.num_point"),
        ({"inference": {"batch": 3}}, "inference.batch"),
        ({"output": {"topn": 3}}, "output.topn"),
        ({"runner": {"workers": 3}}, "runner.workers"),
        ({"review": {"top": 3}}, "review.top"),
    ],
)
def test_unknown_keys_are_rejected_at_every_level_with_their_path(data: dict, where: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(data, "c.yaml")
    assert f"  {where}: unknown key" in str(error.value)
    assert str(error.value).startswith("invalid mining config c.yaml:")


@pytest.mark.parametrize(
    ("data", "where", "message"),
    [
        (
            {"sources": [{"kind": "video", "path": "p", "stride": 0}]},
            "sources.0.stride",
            "greater than or equal to 1",
        ),
        ({"sources": [{"kind": "tape", "path": "p"}]}, "sources.0", "does not match any"),
        ({"sources": [{"kind": "video"}]}, "sources.0.path", "Field required"),
        ({"output": {"compression": "lz4"}}, "output.compression", "'zstd'"),
        ({"output": {"top_n": 0}}, "output.top_n", "greater than or equal to 1"),
        ({"runner": {"runner": "DaskRunner"}}, "runner.runner", "'DirectRunner'"),
        (
            {"models": {"method": {"nms_iou_threshold": 2}}},
            "models.method.nms_iou_threshold",
            "less than or equal to 1",
        ),
        (
            {"inference": {"min_batch_size": 8, "max_batch_size": 2}},
            "inference",
            "min_batch_size (8) is larger than max_batch_size (2)",
        ),
    ],
)
def test_bad_values_are_rejected_with_their_path(data: dict, where: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(data)
    line = next(ln for ln in str(error.value).splitlines() if ln.startswith(f"  {where}:"))
    assert message in line


def test_overrides_set_nested_keys_list_items_and_missing_sections(tmp_path: Path) -> None:
    path = write(tmp_path, "sources:\n  - {kind: images, path: a}\nmodels:\n")
    config = load_config(
        path,
        {
            "sources.0.path": "b",
            "models.sam.model_type": "vit_b",
            "output.top_n": 7,
            "inference.max_batch_size": 8,
        },
    )
    assert config.sources == [ImageSource(path="b")]
    assert config.models.sam.model_type == "vit_b"
    assert (config.output.top_n, config.inference.max_batch_size) == (7, 8)
    # The override is validated like the file.
    with pytest.raises(ConfigError, match=r"output\.top_n: Input should be greater"):
        load_config(path, {"output.top_n": 0})
    with pytest.raises(ConfigError, match=r"output\.topn: unknown key"):
        load_config(path, {"output.topn": 3})


@pytest.mark.parametrize(
    ("dotted", "message"),
    [
        ("sources.3.path", "sources is a list of 1 items; '3' is not an index"),
        ("sources.path", "sources is a list of 1 items; 'path' is not an index"),
        ("name.first", "name is 'c', not a section"),
    ],
)
def test_overrides_that_cannot_apply_are_config_errors(
    tmp_path: Path, dotted: str, message: str
) -> None:
    path = write(tmp_path, "name: c\nsources:\n  - {kind: images, path: a}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, {dotted: "x"})
    assert message in str(error.value)


def test_the_command_applies_set_overrides(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from pipelines.cli import main

    path = write(tmp_path, "name: c\n")
    assert main(["mine", "--config", str(path), "--set", "output.top_n=0"]) == 2
    assert "output.top_n: Input should be greater than or equal to 1" in capsys.readouterr().err


def _config(tmp_path: Path, **output: object) -> MiningConfig:
    return parse_config(
        {
            "sources": [{"kind": "images", "path": str(tmp_path / "log")}],
            "models": {
                "mask2former": {"format": "huggingface", "checkpoint": str(tmp_path / "m2f")},
                "sam": {"checkpoint": str(tmp_path / "sam.pth")},
            },
            "output": output,
        }
    )


def _touch(path: Path, data: bytes, mtime_ns: int) -> None:
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.fixture
def checkpoints(tmp_path: Path) -> Path:
    (tmp_path / "m2f").mkdir()
    _touch(tmp_path / "m2f" / "config.json", b"{}", 10**18)
    _touch(tmp_path / "m2f" / "model.safetensors", b"weights", 10**18)
    _touch(tmp_path / "sam.pth", b"sam", 10**18)
    return tmp_path


def test_fingerprint_ignores_where_outputs_go_and_what_is_read(checkpoints: Path) -> None:
    base = _config(checkpoints).fingerprint()
    assert len(base) == 12
    assert _config(checkpoints).fingerprint() == base
    other = _config(
        checkpoints, root="gs://b/runs", top_n=3, store_maps=False, compression="snappy"
    )
    assert other.fingerprint() == base
    moved = other.model_copy(update={"name": "x", "sources": [VideoSource(path="v.mp4")]})
    assert moved.fingerprint() == base
    # What changes results does change it: the method, and the crops written.
    assert _config(checkpoints, crop_margin=0.5).fingerprint() != base


def test_fingerprint_changes_when_a_checkpoint_file_changes(checkpoints: Path) -> None:
    base = _config(checkpoints).fingerprint()
    _touch(checkpoints / "sam.pth", b"new", 10**18)  # same size and mtime, other bytes: same
    assert _config(checkpoints).fingerprint() == base
    _touch(checkpoints / "sam.pth", b"newer", 10**18 + 1)
    assert _config(checkpoints).fingerprint() != base


def test_fingerprint_changes_when_a_file_inside_a_checkpoint_folder_changes(
    checkpoints: Path,
) -> None:
    folder = checkpoints / "m2f"
    folder_mtime = folder.stat().st_mtime_ns
    base = _config(checkpoints).fingerprint()
    # Overwritten in place: the folder's own mtime stays, the weights changed.
    _touch(folder / "model.safetensors", b"retrained", 10**18 + 5)
    os.utime(folder, ns=(folder_mtime, folder_mtime))
    assert _config(checkpoints).fingerprint() != base
