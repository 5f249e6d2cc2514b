"""The review dataset's vocabulary: field and label names, review tags, saved views, classes."""

from __future__ import annotations

REVIEW_TAGS = ("confirmed", "rejected", "relabel")
LABEL = "anomaly"
ANOMALIES = "anomalies"
PATCHES_VIEW = "anomaly-patches"
OBJECTS_VIEW = "distinct-objects"  # patches without near-duplicates of other logs' objects
TRACKS_VIEW = "tracks"  # patches grouped by their object's track, best sighting first
SIMILARITY_KEY = "ugains_similarity"  # FiftyOne Brain index of the patches' embeddings
RANKED_VIEW = "ranked"  # every frame, highest candidate score first: where the App opens
EXPORT_FORMATS = {
    "coco": "COCODetectionDataset",
    "cvat": "CVATImageDataset",
    "fiftyone": "FiftyOneDataset",
}
# Cityscapes train ids 0..18 (the 19 classes of the in-distribution model); 255 = ignore.
CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
CITYSCAPES_MASK_TARGETS = {**dict(enumerate(CITYSCAPES_CLASSES)), 255: "ignore"}
MATCH_IOU = 0.5
# The App's heatmap is stored in the sample as float scores at most this many pixels long.
HEATMAP_LONG_SIDE = 512
# Bumped when a sample's fields change meaning, so `build` rewrites samples of older builds.
SAMPLE_FORMAT = 3


class ReviewError(ValueError):
    """Input the review workflow cannot use; the message names the file, field or row."""
