"""The outlier pool on disk: reviewed candidates as cut-outs for outlier exposure.

A pool folder holds ``manifest.json`` and, per object, an RGB crop ``images/<name>.png`` and a
0/255 mask ``masks/<name>.png`` of the same size. :func:`write_pool_files` writes one (``ugains
review pool`` from a reviewer's tags, ``ugains world confirm`` from a world's ground truth);
:class:`OutlierPool` reads it into ``(crop [3, h, w] uint8, mask [h, w] bool)`` pairs, the
``outlier_pool`` of :func:`models.training.mask2former.train_mask2former`, and keeps each
object's provenance (run id, instance id, log, frame) for the trained model's card.

Each manifest entry has a ``decision``: ``confirmed`` (an anomaly; the default for entries
without one) or ``rejected`` (a candidate the reviewer turned down: an in-distribution thing
the model flagged, a hard negative for training).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

# torch is imported by the reader only: `review pool` (the writer) and `--help` stay light.

__all__ = ["OutlierPool", "PoolError", "PoolObject", "write_pool_files"]

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class PoolObject:
    """One confirmed object: its box's crop and mask, where it was found, and why."""

    name: str  # file stem, unique in the pool
    crop_bgr: np.ndarray  # [h, w, 3] uint8, OpenCV order
    mask: np.ndarray  # [h, w] bool
    record: dict[str, object]  # provenance: run_id, instance_id, log_id, frame_key, score, ...


def write_pool_files(out: str | Path, objects: list[PoolObject], **about: object) -> Path:
    """Write ``objects`` as a pool into the new folder ``out``; return the manifest's path.

    ``about``: fields of the manifest's header (e.g. ``dataset``, ``tag``, ``source``).
    """
    out = Path(out)
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    listed = []
    for obj in objects:
        if obj.crop_bgr.shape[:2] != obj.mask.shape:
            raise PoolError(
                f"object {obj.name}: mask {obj.mask.shape} != crop {obj.crop_bgr.shape}"
            )
        cv2.imwrite(str(out / "images" / f"{obj.name}.png"), obj.crop_bgr)
        cv2.imwrite(str(out / "masks" / f"{obj.name}.png"), obj.mask.astype(np.uint8) * 255)
        listed.append(
            {"image": f"images/{obj.name}.png", "mask": f"masks/{obj.name}.png", **obj.record}
        )
    manifest = out / MANIFEST
    manifest.write_text(json.dumps({**about, "count": len(listed), "objects": listed}, indent=2))
    return manifest


class PoolError(ValueError):
    """An outlier pool that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class OutlierPool:
    """The objects of one pool folder, read eagerly (pools are small: reviewed candidates)."""

    root: Path
    objects: list[tuple[torch.Tensor, torch.Tensor]]  # confirmed
    provenance: list[dict[str, object]]  # of the confirmed objects
    digest: str  # sha256 of the manifest and every file it lists: a pool's identity
    rejected: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    @classmethod
    def read(cls, root: str | Path) -> OutlierPool:
        root = Path(root)
        manifest = root / MANIFEST
        try:
            text = manifest.read_bytes()
        except FileNotFoundError:
            raise PoolError(
                f"{manifest}: missing (write a pool with `ugains review pool`)"
            ) from None
        try:
            listed = json.loads(text)["objects"]
        except (ValueError, KeyError, TypeError) as error:
            raise PoolError(f"{manifest}: not a pool manifest ({error})") from None
        digest = hashlib.sha256(text)
        objects, provenance, rejected = [], [], []
        for entry in listed:
            crop, mask, data = _read_object(root, entry)  # a malformed entry fails here
            decision = entry.get("decision", "confirmed")
            if decision not in ("confirmed", "rejected"):
                raise PoolError(
                    f"{manifest}: decision {decision!r} of {entry['image']} is not confirmed "
                    "or rejected"
                )
            digest.update(data)
            if decision == "rejected":
                rejected.append((crop, mask))
                continue
            objects.append((crop, mask))
            provenance.append(
                {
                    key: entry.get(key)
                    for key in ("run_id", "instance_id", "log_id", "frame_key", "score")
                }
            )
        if not objects:
            raise PoolError(f"{manifest}: the pool holds no confirmed object")
        return cls(root, objects, provenance, digest.hexdigest()[:16], rejected)

    def card(self) -> dict[str, object]:
        """What a model card records of the pool: its digest and each object's provenance."""
        return {"digest": self.digest, "objects": self.provenance, "rejected": len(self.rejected)}

    def describe(self) -> str:
        runs = sorted({str(p["run_id"]) for p in self.provenance})
        rejected = f", {len(self.rejected)} rejected" if self.rejected else ""
        return (
            f"outlier pool {self.root} ({len(self.objects)} objects{rejected} from runs "
            f"{', '.join(runs)})"
        )


def _read_object(root: Path, entry: dict) -> tuple[torch.Tensor, torch.Tensor, bytes]:
    import torch

    try:
        image_path, mask_path = root / entry["image"], root / entry["mask"]
    except (KeyError, TypeError):
        raise PoolError(f"{root / MANIFEST}: an object lacks its 'image' or 'mask'") from None
    data = b""
    arrays = []
    for path, flags in ((image_path, cv2.IMREAD_COLOR), (mask_path, cv2.IMREAD_GRAYSCALE)):
        raw = path.read_bytes() if path.is_file() else b""
        array = cv2.imdecode(np.frombuffer(raw, np.uint8), flags) if raw else None
        if array is None:
            raise PoolError(f"{path}: missing or not a readable image")
        data += raw
        arrays.append(array)
    image, mask = arrays
    if image.shape[:2] != mask.shape:
        raise PoolError(f"{mask_path}: mask {mask.shape} does not match its crop {image.shape[:2]}")
    if not (mask > 127).any():
        raise PoolError(f"{mask_path}: the mask is empty")
    crop = torch.from_numpy(np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)))
    return crop.permute(2, 0, 1).contiguous(), torch.from_numpy(mask > 127), data


def pool_card_section(card: dict) -> list[str]:
    """Markdown lines of a model card's pool section (``card``: :meth:`OutlierPool.card`)."""
    lines = [
        f"## Outlier pool (digest {card['digest']}, {len(card['objects'])} confirmed objects, "
        f"{card.get('rejected', 0)} rejected candidates)",
        "",
        "| run | instance | log | frame | score |",
        "| --- | --- | --- | --- | --- |",
    ]
    return lines + [
        f"| {o['run_id']} | {o['instance_id']} | {o['log_id']} | {o['frame_key']} | {o['score']} |"
        for o in card["objects"]
    ]
