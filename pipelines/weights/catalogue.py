"""The catalogue of known checkpoints (SAM, the RbA model zoo, UGainS): where each comes
from, its published SHA-256 where there is one, and the mining-config snippet that uses it."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipelines.weights.errors import WeightsError

__all__ = ["WEIGHTS", "WeightKind", "WeightSpec", "get_spec"]

WeightKind = Literal["sam", "rba", "ugains", "ignore_mask"]


@dataclass(frozen=True)
class WeightSpec:
    """One known checkpoint: where it comes from and how a mining config names it.

    ``filename`` is the name of what ``url`` serves; ``member`` the file to extract when that
    is a zip. ``sha256`` is of the served file, and only set where a reference publishes it.
    ``config`` is a YAML snippet of the mining config with ``{path}`` for the checkpoint.
    """

    name: str
    kind: WeightKind
    url: str
    filename: str
    config: str
    member: str | None = None
    sha256: str | None = None

    @property
    def artifact(self) -> str:
        """Name of the file the config points at (the extracted member for archives)."""
        return self.member or self.filename

    def snippet(self, path: Path | str) -> str:
        """The mining-config YAML that uses this checkpoint at ``path``."""
        # A JSON string is a valid double-quoted YAML scalar, whatever the path contains.
        return self.config.format(path=json.dumps(str(path)))


def _sam(model_type: str, filename: str, sha256: str) -> WeightSpec:
    return WeightSpec(
        name=f"sam_{model_type}",
        kind="sam",
        url=f"https://dl.fbaipublicfiles.com/segment_anything/{filename}",
        filename=filename,
        sha256=sha256,
        config=f"models:\n  sam:\n    model_type: {model_type}\n    checkpoint: {{path}}\n",
    )


def _rba(name: str, architecture: str, asset: str | None = None) -> WeightSpec:
    asset = asset or f"{name}.zip"
    return WeightSpec(
        name=name,
        kind="rba",
        url=f"https://github.com/NazirNayal8/RbA/releases/download/model-weights/{asset}",
        filename=asset,
        member="model_final.pth",
        config=(
            "models:\n  mask2former:\n    format: rba\n    checkpoint: {path}\n"
            f"    architecture: {architecture}\n"
        ),
    )


_UGAINS_DATA = "https://omnomnom.vision.rwth-aachen.de/data/ugains"

# SAM: segment-anything README ("Model Checkpoints"); the SHA-256s are the ones published
# for these files by several independent projects (e.g. micro-sam). RbA: MODEL_ZOO.md, zips
# holding model_final.pth. UGainS: its README's data folder (Swin-B Mask2Former Lightning
# checkpoint and the Fishyscapes ignore mask, a boolean tensor saved with torch.save).
WEIGHTS: dict[str, WeightSpec] = {
    spec.name: spec
    for spec in (
        _sam(
            "vit_h",
            "sam_vit_h_4b8939.pth",
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        ),
        _sam(
            "vit_l",
            "sam_vit_l_0b3195.pth",
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        ),
        _sam(
            "vit_b",
            "sam_vit_b_01ec64.pth",
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        ),
        _rba("swin_b_1dl", "swin_b_1dl"),
        _rba("swin_l_1dl", "swin_l_1dl"),
        _rba("swin_b_1dl_rba_ood_coco", "swin_b_1dl"),
        # MODEL_ZOO.md links this row to swin_b_1dl_rba_ood_coco.zip by mistake (RbA issue
        # #18, open, no corrected link yet). This asset name is inferred from its Swin-L
        # sibling and not confirmed: an HTTP 404 here means it does not exist under it.
        _rba("swin_b_1dl_rba_ood_map_coco", "swin_b_1dl"),
        _rba("swin_l_1dl_rba_ood_map_coco", "swin_l_1dl"),
        WeightSpec(
            name="ugains",
            kind="ugains",
            url=f"{_UGAINS_DATA}/rude0fhk.ckpt",
            filename="rude0fhk.ckpt",
            config=(
                "models:\n  mask2former:\n    format: ugains\n    checkpoint: {path}\n"
                "    architecture: swin_b_1dl\n"
            ),
        ),
        WeightSpec(
            name="ugains_ignore_mask",
            kind="ignore_mask",
            url=f"{_UGAINS_DATA}/ignore_mask.pth",
            filename="ignore_mask.pth",
            config="models:\n  method:\n    ignore_mask: {path}\n",
        ),
    )
}


def get_spec(name: str) -> WeightSpec:
    """The registry entry ``name``; raises WeightsError listing the known names."""
    try:
        return WEIGHTS[name]
    except KeyError:
        close = difflib.get_close_matches(name, WEIGHTS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = ", ".join(WEIGHTS)
        raise WeightsError(f"unknown weights name {name!r}{hint}; known: {known}") from None
