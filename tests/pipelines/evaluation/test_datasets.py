"""Dataset loaders read each release layout, normalise labels and derive instance ids."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.evaluation.datasets import (
    DATASETS,
    DatasetError,
    EvalEntry,
    instance_ids_from_labels,
    list_samples,
    load_sample,
)

H, W = 12, 16


def write_rgb(path: Path, seed: int) -> np.ndarray:
    """Write a random RGB PNG; returns the RGB pixels."""
    rgb = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return rgb


def write_label(path: Path, label: np.ndarray, colour: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.repeat(label[..., None], 3, 2) if colour else label)


def two_blobs_label(anomaly: int = 1, void: bool = True) -> np.ndarray:
    """Two anomalies: a diagonal pair of pixels (one 8-connected blob) and a 2x2 square."""
    label = np.zeros((H, W), np.uint8)
    label[1, 1] = label[2, 2] = anomaly
    label[5:7, 10:12] = anomaly
    if void:
        label[-2:, :] = 255
    return label


EXPECTED_IDS = np.zeros((H, W), np.int32)
EXPECTED_IDS[1, 1] = EXPECTED_IDS[2, 2] = 1
EXPECTED_IDS[5:7, 10:12] = 2


def test_instance_ids_are_8_connected_components():
    assert np.array_equal(instance_ids_from_labels(two_blobs_label()), EXPECTED_IDS)
    assert instance_ids_from_labels(two_blobs_label()).dtype == np.int32


def test_fishyscapes_lost_and_found_layout(tmp_path):
    # Names as in the release: <index>_<city>_<seq>_<frame>_labels.png -> ..._leftImg8bit.png
    frame = "04_Maurener_Weg_8_000000_000030"
    rgb = write_rgb(tmp_path / "laf_images" / f"{frame}_leftImg8bit.png", 0)
    write_label(
        tmp_path / "fishyscapes_lostandfound" / f"0000_{frame}_labels.png",
        two_blobs_label(),
        colour=True,
    )
    write_rgb(tmp_path / "laf_images" / "13_Elly_Beinhorn_Str_000001_000100_leftImg8bit.png", 1)
    write_label(
        tmp_path
        / "fishyscapes_lostandfound"
        / "0001_13_Elly_Beinhorn_Str_000001_000100_labels.png",
        np.zeros((H, W), np.uint8),
    )
    entries = list_samples("fishyscapes_lf", tmp_path)
    assert [e.name for e in entries] == [f"0000_{frame}", "0001_13_Elly_Beinhorn_Str_000001_000100"]
    sample = load_sample(entries[0])
    assert np.array_equal(sample.labels, two_blobs_label())
    assert sample.labels.dtype == np.uint8
    assert np.array_equal(sample.instance_ids, EXPECTED_IDS)
    assert np.array_equal(sample.image, rgb)
    assert pickle.loads(pickle.dumps(entries[0])) == entries[0]  # Beam ships entries


def test_road_anomaly_layout_maps_label_2_to_anomaly(tmp_path):
    root = tmp_path / "RoadAnomaly_jpg"
    (root / "frames").mkdir(parents=True)
    (root / "frame_list.json").write_text(json.dumps(["animals01.jpg", "cones02.jpg"]))
    for index, name in enumerate(["animals01", "cones02"]):
        write_rgb(root / "frames" / f"{name}.jpg", index)
        write_label(
            root / "frames" / f"{name}.labels" / "labels_semantic.png",
            two_blobs_label(anomaly=2, void=False),
        )
    # The archive's top folder works as root too.
    samples = [load_sample(e) for e in list_samples("road_anomaly", tmp_path)]
    assert [s.name for s in samples] == ["animals01", "cones02"]
    assert np.array_equal(samples[1].labels, two_blobs_label(anomaly=1, void=False))
    assert np.array_equal(samples[1].instance_ids, EXPECTED_IDS)
    assert samples[0].image.shape == (H, W, 3)  # JPEG: lossy, shape only


@pytest.mark.parametrize("dataset", ["smiyc_ra21", "smiyc_ro21"])
def test_segment_me_if_you_can_validation_layout(tmp_path, dataset):
    rgb = write_rgb(tmp_path / "images" / "validation0001.png", 0)
    write_rgb(tmp_path / "images" / "test0007.png", 1)  # held-out test frame: no label
    write_label(tmp_path / "labels_masks" / "validation0001_labels_semantic.png", two_blobs_label())
    (tmp_path / "labels_masks" / "validation0001_labels_color.png").write_bytes(b"")  # ignored
    (sample,) = [load_sample(e) for e in list_samples(dataset, tmp_path)]
    assert sample.name == "validation0001"
    assert np.array_equal(sample.image, rgb)
    assert np.array_equal(sample.labels, two_blobs_label())
    assert np.array_equal(sample.instance_ids, EXPECTED_IDS)


@pytest.mark.parametrize("dataset", DATASETS)
def test_missing_root_names_the_expected_layout(tmp_path, dataset):
    with pytest.raises(DatasetError, match="does not exist; expected the layout <root>/"):
        list_samples(dataset, tmp_path / "nope")


def test_malformed_roots_give_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"fishyscapes_lostandfound is not a directory"):
        list_samples("fishyscapes_lf", tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels_masks").mkdir()
    with pytest.raises(DatasetError, match="no labelled frames"):
        list_samples("smiyc_ra21", tmp_path)
    write_label(tmp_path / "labels_masks" / "validation0_labels_semantic.png", two_blobs_label())
    with pytest.raises(DatasetError, match="has no image"):
        list_samples("smiyc_ra21", tmp_path)
    (tmp_path / "frame_list.json").write_text('{"not": "a list"}')
    with pytest.raises(DatasetError, match="must be a JSON list"):
        list_samples("road_anomaly", tmp_path)
    (tmp_path / "frame_list.json").write_text('["gone.jpg"]')
    (tmp_path / "frames").mkdir()
    with pytest.raises(DatasetError, match=r"2 file\(s\) missing .*gone\.jpg"):
        list_samples("road_anomaly", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'cityscapes'"):
        list_samples("cityscapes", tmp_path)


def test_unexpected_label_values_are_rejected(tmp_path):
    write_rgb(tmp_path / "images" / "validation0.png", 0)
    label = two_blobs_label()
    label[0, 0] = 7
    write_label(tmp_path / "labels_masks" / "validation0_labels_semantic.png", label)
    (entry,) = list_samples("smiyc_ro21", tmp_path)
    with pytest.raises(DatasetError, match=r"labels must be 0, 1 or 255, found \[7\]"):
        load_sample(entry)
    with pytest.raises(DatasetError, match="missing"):
        load_sample(EvalEntry("smiyc_ro21", "x", str(tmp_path / "x.png"), entry.label_path))
