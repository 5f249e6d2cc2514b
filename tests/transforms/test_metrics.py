"""Metrics equal their reference implementations: scikit-learn and cityscapesscripts."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from transforms.metrics import (
    CITYSCAPES_OVERLAPS,
    ComponentMetrics,
    InstanceMetrics,
    PixelMetrics,
    PointMetrics,
    instance_ap,
    pixel_metrics,
    point_metrics,
)

# ------------------------------------------------------------------------------- pixel level


def sklearn_reference(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    keep = labels != 255
    y_true, y_score = labels[keep] == 1, scores[keep]
    fpr, tpr, _ = roc_curve(y_true, y_score)
    return {
        "ap": average_precision_score(y_true, y_score),
        "fpr95": fpr[np.argmax(tpr > 0.95)],
        "auroc": roc_auc_score(y_true, y_score),
    }


def fused_like_frames(rng: np.random.Generator, n: int, shape=(24, 32)) -> tuple:
    """Scores with the ties of real fused maps: -1 fill, -30 ignore, coarse quantisation."""
    scores = rng.normal(-1.0, 0.6, size=(n, *shape)).astype(np.float32)
    scores = np.round(scores, 2)  # many exact ties
    scores[rng.random(scores.shape) < 0.4] = -1.0
    scores[:, :3, :] = -30.0
    labels = (rng.random(scores.shape) < 0.1 + 0.3 * (scores > -0.8)).astype(np.uint8)
    labels[rng.random(scores.shape) < 0.1] = 255
    return scores, labels


def assert_metrics_equal(ours: dict, reference: dict) -> None:
    assert ours.keys() == reference.keys()
    for key in reference:
        assert ours[key] == pytest.approx(reference[key], abs=1e-9, rel=0), key


@pytest.mark.parametrize("seed", range(5))
def test_pixel_metrics_equal_sklearn_with_ties(seed):
    scores, labels = fused_like_frames(np.random.default_rng(seed), 3)
    assert_metrics_equal(pixel_metrics(scores, labels), sklearn_reference(scores, labels))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([-30.0, -1.0, -0.5, 0.0, 0.25, 3.0]), st.sampled_from([0, 1])),
        min_size=2,
        max_size=40,
    ).filter(lambda pairs: len({label for _, label in pairs}) == 2)
)
def test_pixel_metrics_equal_sklearn_on_any_tie_pattern(pairs):
    scores = np.array([score for score, _ in pairs], np.float32)
    labels = np.array([label for _, label in pairs], np.uint8)
    assert_metrics_equal(pixel_metrics(scores, labels), sklearn_reference(scores, labels))


def test_curves_are_sklearns_pr_and_roc_points_subsampled():
    from sklearn.metrics import precision_recall_curve, roc_curve

    scores, labels = fused_like_frames(np.random.default_rng(3), 2)
    accumulator = PixelMetrics()
    accumulator.update(scores, labels)
    curves = accumulator.curves(max_points=10_000_000)  # all of them
    valid = labels != 255
    precision, recall, _ = precision_recall_curve(labels[valid], scores[valid])
    # sklearn lists the PR curve by ascending threshold, with a last (recall 0, 1) point.
    want_pr = np.stack([recall[:-1], precision[:-1]], 1)[::-1]
    np.testing.assert_allclose(curves["pr"], want_pr, atol=1e-5)
    fpr, tpr, _ = roc_curve(labels[valid], scores[valid], drop_intermediate=False)
    np.testing.assert_allclose(curves["roc"], np.stack([fpr, tpr], 1), atol=1e-5)
    small = accumulator.curves(max_points=16)
    assert len(small["pr"]) == 16
    assert small["pr"][-1] == curves["pr"][-1]
    assert small["roc"][-1] == [1.0, 1.0]


def test_accumulator_over_frames_and_merge_equal_one_shot():
    scores, labels = fused_like_frames(np.random.default_rng(7), 6)
    reference = sklearn_reference(scores, labels)
    first, second = PixelMetrics(), PixelMetrics()
    for frame in range(3):
        first.update(scores[frame], labels[frame])
    for frame in range(3, 6):
        second.update(torch.from_numpy(scores[frame]), torch.from_numpy(labels[frame]))
    assert_metrics_equal(first.merge(second).compute(), reference)
    # Memory is one row per distinct kept score, not per pixel.
    values, positives, negatives = first.counts()
    kept = labels != 255
    assert np.array_equal(values, np.unique(scores[kept]))
    assert positives.sum() == (labels == 1).sum()
    assert negatives.sum() == (labels == 0).sum()


def test_float64_scores_keep_their_ties():
    rng = np.random.default_rng(3)
    scores = rng.random((50, 40))  # float64 values that would collide in float32
    scores[:, ::2] = scores[:, 1::2] + 1e-12
    labels = (rng.random(scores.shape) < 0.3).astype(np.int64)
    assert_metrics_equal(pixel_metrics(scores, labels), sklearn_reference(scores, labels))


def test_fpr95_uses_roc_curve_with_collinear_points_dropped():
    # 100 anomalies: 94 alone at the top, then 4 thresholds holding 1 anomaly + 1 inlier each
    # (collinear ROC steps), then 2 anomalies among 94 inliers. On the full curve the first
    # TPR > 0.95 is TPR 0.96 at FP 2; roc_curve drops the collinear points, so it is TPR 0.98
    # at FP 4 of 98 inliers: FPR95 = 4 / 98.
    scores = np.concatenate(
        [np.arange(200, 106, -1), np.repeat([50, 49, 48, 47], 2), np.zeros(96)]
    ).astype(np.float32)
    labels = np.concatenate([np.ones(94), np.tile([1, 0], 4), [1, 1], np.zeros(94)]).astype(
        np.uint8
    )
    ours = pixel_metrics(scores, labels)
    assert ours["fpr95"] == 4 / 98
    assert_metrics_equal(ours, sklearn_reference(scores, labels))


def test_perfect_and_inverted_scores():
    labels = np.array([0, 0, 1, 1, 255])
    assert pixel_metrics(np.array([0.0, 0.1, 0.8, 0.9, 5.0]), labels) == {
        "ap": 1.0,
        "fpr95": 0.0,
        "auroc": 1.0,
    }
    # Inverted: anomalies ranked 3rd and 4th -> AP = (1/2)(1/3) + (1/2)(2/4) = 5/12.
    inverted = pixel_metrics(np.array([0.9, 0.8, 0.1, 0.0, -5.0]), labels)
    assert inverted == {"ap": pytest.approx(5 / 12, abs=1e-15), "fpr95": 1.0, "auroc": 0.0}


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        (np.zeros((2, 2)), np.zeros((2, 3), np.uint8), "same shape"),
        (np.zeros(3), np.array([0, 1, 2]), r"found \[2\]"),
        (np.array([0.0, np.nan]), np.array([0, 1]), "NaN"),
        (np.zeros(2), np.array([0.0, 1.0]), "labels must be integers"),
    ],
)
def test_pixel_metrics_reject_bad_input(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        pixel_metrics(scores, labels)


def test_pixel_metrics_need_both_classes():
    with pytest.raises(ValueError, match="no anomaly pixels"):
        pixel_metrics(np.arange(4.0), np.array([0, 0, 0, 255]))
    with pytest.raises(ValueError, match="no in-distribution"):
        pixel_metrics(np.arange(4.0), np.array([1, 1, 255, 1]))


# ---------------------------------------------------------------------------- instance level


def random_instance_case(rng: np.random.Generator, shape=(40, 56)) -> tuple[list, list]:
    """Images with instances of assorted sizes (some < 10 px), void, and predictions that
    match at every overlap, duplicate, miss, sit on void, on tiny instances, or are empty."""
    height, width = shape
    predictions, targets = [], []
    for _ in range(int(rng.integers(2, 5))):
        ids = np.zeros(shape, np.int32)
        for k in range(int(rng.integers(0, 5))):
            h, w = rng.integers(2, 12, size=2)
            y, x = rng.integers(0, height - h), rng.integers(0, width - w)
            ids[y : y + h, x : x + w] = k + 1 + int(rng.integers(0, 3)) * 10  # sparse ids
        void = np.zeros(shape, bool)
        vy, vx = rng.integers(0, height - 8), rng.integers(0, width - 8)
        void[vy : vy + int(rng.integers(3, 9)), vx : vx + int(rng.integers(3, 16))] = True
        void &= ids == 0
        masks = []
        for value in np.unique(ids[ids > 0]):
            for _ in range(int(rng.integers(0, 3))):  # 0, 1 or 2 (duplicate) predictions
                # Keep a random fraction of the instance, sometimes grow it by a 1 px shift:
                # IoUs spread over all of 0.5:0.95.
                mask = (ids == value) & (rng.random(shape) < rng.uniform(0.45, 1.0))
                if rng.random() < 0.3:
                    mask |= np.roll(mask, 1, axis=int(rng.integers(0, 2)))
                masks.append(mask)
        for _ in range(int(rng.integers(0, 3))):
            mask = np.zeros(shape, bool)
            h, w = rng.integers(1, 10, size=2)
            y, x = rng.integers(0, height - h), rng.integers(0, width - w)
            mask[y : y + h, x : x + w] = True
            masks.append(mask)
        masks.append(void | (rng.random(shape) < 0.01 * void.sum() / void.size))  # on void
        if rng.random() < 0.3:
            masks.append(np.zeros(shape, bool))  # empty: skipped by Cityscapes
        scores = np.round(rng.random(len(masks)), 1)  # ties across and within images
        predictions.append((np.stack(masks), scores))
        targets.append((ids, void))
    return predictions, targets


def cityscapes_reference(tmp_path: Path, monkeypatch, predictions, targets) -> np.ndarray:
    """Run cityscapesscripts on the case written in Cityscapes' file format: AP per overlap."""
    from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as cs
    from cityscapesscripts.helpers.labels import name2label

    # Shims for cityscapesscripts 2.3 under NumPy 2.4, only here: np.in1d is gone, and its
    # JSON writer cannot serialise NumPy integers.
    monkeypatch.setattr(np, "in1d", lambda a, b: np.isin(a, b).ravel(), raising=False)

    def write_json(data, file_name):
        # NumPy scalars (pixel counts) -> Python numbers; anything else stays an error.
        Path(file_name).write_text(json.dumps(data, default=lambda value: value.item()))

    monkeypatch.setattr(cs, "writeDict2JSON", write_json)
    monkeypatch.chdir(tmp_path)  # evaluateImgLists writes matches.json into the cwd
    for name, value in {
        "predictionPath": str(tmp_path),
        "predictionWalk": None,
        "gtInstancesFile": str(tmp_path / "gtInstances.json"),
        "exportFile": str(tmp_path / "result.json"),
        "minRegionSizes": np.array([10]),
        "JSONOutput": False,
        "quiet": True,
        "distanceAvailable": False,
    }.items():
        monkeypatch.setattr(cs.args, name, value)

    car = name2label["car"].id  # every anomaly becomes a car instance: 26001, 26002, ...
    road, unlabeled = name2label["road"].id, name2label["unlabeled"].id
    gt_files, pred_files = [], []
    for image, ((masks, scores), (ids, void)) in enumerate(zip(predictions, targets, strict=True)):
        stem = f"city_000000_{image:06d}"
        gt = np.where(ids > 0, car * 1000 + ids, road)
        gt[void] = unlabeled
        gt_file = tmp_path / f"{stem}_gtFine_instanceIds.png"
        cv2.imwrite(str(gt_file), gt.astype(np.uint16))
        lines = []
        for index, (mask, score) in enumerate(zip(masks, scores, strict=True)):
            cv2.imwrite(str(tmp_path / f"{stem}_{index}.png"), mask.astype(np.uint8) * 255)
            lines.append(f"{stem}_{index}.png {car} {float(score)!r}\n")
        pred_file = tmp_path / f"{stem}_pred.txt"
        pred_file.write_text("".join(lines))
        gt_files.append(str(gt_file))
        pred_files.append(str(pred_file))
    result = cs.evaluateImgLists(pred_files, gt_files, cs.args)
    car_index = result["instLabels"].index("car")
    return np.array(result["resultApMatrix"][0][car_index])


@pytest.mark.parametrize("seed", range(6))
def test_instance_ap_equals_cityscapesscripts(tmp_path, monkeypatch, seed):
    predictions, targets = random_instance_case(np.random.default_rng(seed))
    reference = cityscapes_reference(tmp_path, monkeypatch, predictions, targets)
    accumulator = InstanceMetrics(min_region_size=10)
    for (masks, scores), (ids, void) in zip(predictions, targets, strict=True):
        accumulator.update(masks, scores, ids, void)
    np.testing.assert_allclose(accumulator.ap_per_overlap(), reference, rtol=0, atol=1e-9)
    ours = instance_ap(predictions, targets, min_region_size=10)
    assert ours["ap"] == pytest.approx(float(np.mean(reference)), abs=1e-9)
    assert ours["ap50"] == pytest.approx(float(reference[0]), abs=1e-9)


def test_instance_ap_hand_computed_case():
    # One 4x4 instance (16 px). Prediction A: the instance, score 0.9 (IoU 1). Prediction B:
    # 12 px of it + 4 px outside, score 0.8 (IoU 12/20 = 0.6) -> a duplicate: false positive.
    # Prediction C: 4x4 entirely on void -> ignored. A second 4x4 instance is missed.
    ids = np.zeros((10, 12), np.int32)
    ids[0:4, 0:4] = 1
    ids[6:10, 8:12] = 2
    void = np.zeros_like(ids, dtype=bool)
    void[6:10, 0:4] = True
    a = ids == 1
    b = np.zeros_like(a)
    b[1:5, 0:4] = True
    c = void.copy()
    masks, scores = np.stack([a, b, c]), np.array([0.9, 0.8, 0.95])
    # Detections by descending score: A (TP), B (FP). 2 instances.
    # Thresholds 0.8: tp 1, fp 1, prec 1/2, rec 1/2; 0.9: tp 1, fp 0, prec 1, rec 1/2; end (0,1).
    # Widths: 0.5*(r0 - r1) = 0, 0.5*(r0 - r2) = 0.25, 0.5*(r1 - 0) = 0.25 -> AP = 0.5.
    aps = InstanceMetrics(10)
    aps.update(masks, scores, ids, void)
    per_overlap = aps.ap_per_overlap()
    assert per_overlap[0] == 0.5  # IoU 0.6 > 0.5 and 0.55: B is a duplicate match
    # From 0.6 on, B matches nothing; 4 of its 16 px lie outside everything -> FP again.
    assert np.all(per_overlap == 0.5)
    assert aps.compute() == {"ap": 0.5, "ap50": 0.5}


def test_instance_ap_no_predictions_and_no_ground_truth():
    ids = np.zeros((6, 6), np.int32)
    ids[:4, :4] = 3
    none = (np.zeros((0, 6, 6), bool), np.zeros(0))
    assert instance_ap([none], [(ids, None)]) == {"ap": 0.0, "ap50": 0.0}
    result = instance_ap([none], [(np.zeros((6, 6), np.int32), None)])
    assert np.isnan(result["ap"])
    assert np.isnan(result["ap50"])
    assert CITYSCAPES_OVERLAPS.tolist() == np.arange(0.5, 1.0, 0.05).tolist()


def test_instance_metrics_merge_equals_single_pass():
    predictions, targets = random_instance_case(np.random.default_rng(11))
    single = InstanceMetrics()
    halves = InstanceMetrics(), InstanceMetrics()
    for index, ((masks, scores), (ids, void)) in enumerate(zip(predictions, targets, strict=True)):
        single.update(torch.from_numpy(masks), torch.from_numpy(scores), ids, void)
        halves[index % 2].update(masks, scores, torch.from_numpy(ids), void)
    merged = halves[0].merge(halves[1]).ap_per_overlap()
    np.testing.assert_allclose(merged, single.ap_per_overlap(), rtol=0, atol=1e-12)


def test_instance_ap_rejects_bad_input():
    ids = np.zeros((4, 4), np.int32)
    ids[0, 0] = 1
    with pytest.raises(ValueError, match="void pixels must not belong"):
        instance_ap([(np.zeros((0, 4, 4), bool), np.zeros(0))], [(ids, ids > 0)])
    with pytest.raises(ValueError, match="2 masks but 1 scores"):
        instance_ap([(np.zeros((2, 4, 4), bool), np.zeros(1))], [(ids, None)])
    with pytest.raises(ValueError, match=r"masks must be \[M, H, W\]"):
        instance_ap([(np.zeros((2, 4, 5), bool), np.zeros(2))], [(ids, None)])
    with pytest.raises(ValueError, match="1 predictions but 2 targets"):
        instance_ap([(np.zeros((0, 4, 4), bool), np.zeros(0))], [(ids, None)] * 2)


# ------------------------------------------------------------------------------- point level


def test_point_metrics_precision_and_recall():
    ids = np.zeros((8, 10), np.int32)
    ids[0:2, 0:2] = 1
    ids[5:8, 5:10] = 4
    ids[0:1, 9:10] = 7
    other = np.zeros((4, 4), np.int32)
    other[1, 1] = 2
    points = [
        np.array([[0, 0], [1, 1], [6, 6], [3, 3], [9.4, 0.2]]),  # hits 1 (twice), 4, 7; 1 miss
        torch.tensor([[0, 0]]),  # miss; instance 2 not hit
    ]
    # precision: 4 of 6 points on anomalies; recall: 3 of 4 instances hit.
    assert point_metrics(points, [ids, other]) == {"precision": 4 / 6, "recall": 3 / 4}
    accumulator = PointMetrics()
    accumulator.update(points[0], ids)
    second = PointMetrics()
    second.update(points[1], other)
    assert accumulator.merge(second).compute() == {"precision": 4 / 6, "recall": 3 / 4}


def test_point_metrics_reject_points_outside_the_image():
    with pytest.raises(ValueError, match="outside the 4x3 image"):
        point_metrics([np.array([[4, 0]])], [np.zeros((3, 4), np.int32)])


# ---------------------------------------------------------------- component level (SMIYC)


def smiyc_reference(frames, threshold, min_segment_size, min_instance_size):
    """SegmentMeIfYouCan's component metrics, component by component, from its definition."""
    from scipy import ndimage

    eight = np.ones((3, 3), dtype=int)
    siou_gt, ppv = [], []
    for scores, labels in frames:
        gt, num_gt = ndimage.label(labels == 1, eight)
        pred, num_pred = ndimage.label((scores > threshold) & (labels != 255), eight)
        for component in range(1, num_pred + 1):
            if (pred == component).sum() < min_segment_size:
                pred[pred == component] = 0
        roi = labels != 255
        for component in range(num_gt + 1):
            if (gt == component).sum() < min_instance_size:
                roi &= gt != component
        gt, pred = gt[roi], pred[roi]
        for k in np.unique(gt[gt > 0]):
            touching = np.unique(pred[(gt == k) & (pred > 0)])
            union_pred = np.isin(pred, touching)
            intersection = np.sum((gt == k) & union_pred)
            # Adjusted union: pixels of other ground-truth components do not count.
            union = np.sum(((gt == k) | union_pred) & ~((gt > 0) & (gt != k)))
            siou_gt.append(intersection / union)
        for j in np.unique(pred[pred > 0]):
            ppv.append(np.sum((pred == j) & (gt > 0)) / np.sum(pred == j))
    f1 = []
    for t in np.linspace(0.25, 0.75, 11):
        tp = sum(value >= t for value in siou_gt)
        fn = len(siou_gt) - tp
        fp = sum(value < t for value in ppv)
        f1.append(2 * tp / (2 * tp + fn + fp))
    return {"siou": np.mean(siou_gt), "ppv": np.mean(ppv), "mean_f1": np.mean(f1)}


def component_frames(seed: int, n: int = 3, shape=(40, 60)):
    """Blob-shaped anomalies of many sizes (some under the minimum), scores that cover them
    partly, spill over, merge neighbours and fire on in-distribution pixels and void."""
    rng = np.random.default_rng(seed)
    frames = []
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for _ in range(n):
        labels = np.zeros(shape, np.uint8)
        scores = rng.normal(0.0, 0.3, shape)
        for _ in range(int(rng.integers(1, 6))):
            cy, cx, r = rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.uniform(1, 7)
            blob = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
            labels[blob] = 1
            scores += rng.uniform(0.5, 2.0) * np.exp(
                -((yy - cy - rng.integers(-2, 3)) ** 2 + (xx - cx) ** 2) / (2 * (r + 1) ** 2)
            )
        labels[:, :4] = 255
        labels[rng.random(shape) < 0.02] = 255
        frames.append((scores.astype(np.float32), labels))
    return frames


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("min_segment_size", "min_instance_size"), [(50, 10), (5, 20)])
def test_component_metrics_equal_the_definition(seed, min_segment_size, min_instance_size):
    frames = component_frames(seed)
    metrics = ComponentMetrics(
        0.6, min_segment_size=min_segment_size, min_instance_size=min_instance_size
    )
    other = ComponentMetrics(
        0.6, min_segment_size=min_segment_size, min_instance_size=min_instance_size
    )
    metrics.update(*frames[0])
    for scores, labels in frames[1:]:
        other.update(torch.from_numpy(scores), labels)
    ours = metrics.merge(other).compute()
    reference = smiyc_reference(frames, 0.6, min_segment_size, min_instance_size)
    assert_metrics_equal(ours, reference)
    assert 0 < ours["mean_f1"] < 1  # not degenerate


def test_component_metrics_hand_computed_case():
    # Two anomalies, A (4x4 = 16 px) and B (2x2 = 4 px), one prediction covering all of A
    # plus 4 background px and touching nothing else, one prediction on background (8 px).
    labels = np.zeros((10, 12), np.uint8)
    labels[0:4, 0:4] = 1
    labels[7:9, 9:11] = 1
    scores = np.zeros((10, 12), np.float32)
    scores[0:4, 0:5] = 1.0  # A + 4 px
    scores[7:9, 0:4] = 1.0  # 8 px on background
    metrics = ComponentMetrics(0.5, min_segment_size=1, min_instance_size=1)
    metrics.update(scores, labels)
    # sIoU: A 16 / 20 = 0.8, B 0. PPV: 16/20 = 0.8 and 0.
    # t in 0.25..0.75: TP 1, FN 1, FP 1 (PPV 0 < t) -> F1 = 2 / 4 = 0.5 at every t.
    assert metrics.compute() == {"siou": 0.4, "ppv": 0.4, "mean_f1": 0.5}
