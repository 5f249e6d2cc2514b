"""Decoding frames: colour conversions, refusals with reasons, the dead letter in a pipeline."""

from __future__ import annotations

import io
from pathlib import Path

import apache_beam as beam
import cv2
import numpy as np
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image, ImageOps

from pipelines.elements import FrameRef, ReadUnit
from pipelines.geometry import resize_for_model
from pipelines.mining.decode import DecodeFrames, FrameDecodeError, decode_image

LIMITS = {"min_side": 8, "max_side": 256}


def png(array: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", array)
    assert ok
    return data.tobytes()


def test_bgr_png_decodes_to_rgb() -> None:
    bgr = np.zeros((10, 12, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV's order
    rgb = decode_image(png(bgr), "f.png", **LIMITS)
    assert rgb.shape == (10, 12, 3)
    assert rgb.dtype == np.uint8
    assert (rgb[..., 2] == 200).all()
    assert (rgb[..., :2] == 0).all()


def test_grayscale_is_replicated_to_three_channels() -> None:
    gray = np.arange(120, dtype=np.uint8).reshape(10, 12)
    rgb = decode_image(png(gray), "g.png", **LIMITS)
    assert all((rgb[..., c] == gray).all() for c in range(3))


def test_rgba_drops_alpha() -> None:
    bgra = np.zeros((10, 12, 4), np.uint8)
    bgra[..., 1] = 77
    bgra[..., 3] = 5  # nearly transparent: alpha is ignored, not composited
    rgb = decode_image(png(bgra), "a.png", **LIMITS)
    assert (rgb == [0, 77, 0]).all()


def test_sixteen_bit_is_scaled_to_eight_bits() -> None:
    deep = np.full((10, 12, 3), 0xABCD, np.uint16)
    rgb = decode_image(png(deep), "d.png", **LIMITS)
    assert (rgb == 0xAB).all()


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP"])
def test_exif_orientation_is_applied_as_viewers_apply_it(
    image_format: str, orientation: int
) -> None:
    # Pillow's exif_transpose is the reference for "what a viewer shows"; a 10x6 picture
    # tagged 5..8 comes out 6x10.
    rgb = np.random.default_rng(orientation).integers(0, 255, (10, 16, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    lossless = {"PNG": {}, "JPEG": {"quality": 100}, "WEBP": {"lossless": True}}[image_format]
    Image.fromarray(rgb).save(buffer, image_format, exif=exif, **lossless)
    data = buffer.getvalue()
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))

    decoded = decode_image(data, f"f.{image_format.lower()}", **LIMITS)

    assert decoded.shape == upright.shape
    assert decoded.shape[:2] == ((16, 10) if orientation >= 5 else (10, 16))
    np.testing.assert_array_equal(decoded, upright)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "f.png: file is empty (0 bytes)"),
        (png(np.zeros((32, 32, 3), np.uint8))[:60], "f.png: not a decodable image"),
        (png(np.zeros((4, 4, 3), np.uint8)), "smaller than inference.min_image_side=8"),
        (png(np.zeros((8, 300, 3), np.uint8)), "exceeds inference.max_image_side=256"),
    ],
    ids=["empty", "truncated", "tiny", "huge"],
)
def test_bad_images_raise_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(FrameDecodeError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        decode_image(data, "f.png", **LIMITS)


def test_resize_for_model_keeps_frames_already_at_the_model_size() -> None:
    image = np.random.default_rng(0).integers(0, 255, (16, 32, 3), dtype=np.uint8)
    assert resize_for_model(image, (16, 32)) is image
    assert resize_for_model(image, (8, 16)).shape == (8, 16, 3)
    assert resize_for_model(image, (32, 64)).shape == (32, 64, 3)


def test_decode_transform_routes_every_frame_exactly_once(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.full((20, 30, 3), 9, np.uint8))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    video = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (30, 20))
    for _ in range(3):
        writer.write(np.full((20, 30, 3), 50, np.uint8))
    writer.release()

    def ref(key: str, uri: str, frame: int | None = None) -> FrameRef:
        video_uri = None if frame is None else str(video)
        return FrameRef(key, uri, "log", 0, None, video_uri, frame)

    units = [
        ReadUnit((ref("good", str(good)),)),
        ReadUnit((ref("empty", str(empty)),)),
        # The video has 3 frames; the plan asks for 5 (as after a truncation).
        ReadUnit(tuple(ref(f"v{i}", f"{video}#frame={i}", i) for i in (0, 2, 3, 4))),
    ]
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        decoded, failures = p | beam.Create(units) | DecodeFrames((10, 16), 8, 256)
        assert_that(
            decoded
            | "Decoded" >> beam.Map(lambda f: (f.ref.key, f.image.shape, f.model_image.shape)),
            equal_to(
                [
                    ("good", (20, 30, 3), (10, 16, 3)),
                    ("v0", (20, 30, 3), (10, 16, 3)),
                    ("v2", (20, 30, 3), (10, 16, 3)),
                ]
            ),
            label="decoded",
        )
        assert_that(
            failures | "Failed" >> beam.Map(lambda f: (f.ref.key, f.stage, f.error_type)),
            equal_to(
                [
                    ("empty", "decode", "FrameDecodeError"),
                    ("v3", "decode", "FrameDecodeError"),
                    ("v4", "decode", "FrameDecodeError"),
                ]
            ),
            label="failures",
        )


def test_an_unexpected_error_in_one_video_frame_fails_that_frame_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    video = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (30, 20))
    for value in (10, 120, 240):
        writer.write(np.full((20, 30, 3), value, np.uint8))
    writer.release()
    real = resize_for_model

    def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        if 100 < image.mean() < 140:  # the middle frame
            raise MemoryError("cannot allocate")
        return real(image, size)

    monkeypatch.setattr("pipelines.mining.decode.resize_for_model", resize)
    refs = tuple(
        FrameRef(f"v{i}", f"{video}#frame={i}", "log", i, None, str(video), i) for i in range(3)
    )
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        decoded, failures = p | beam.Create([ReadUnit(refs)]) | DecodeFrames((10, 16), 8, 256)
        assert_that(decoded | "Keys" >> beam.Map(lambda f: f.ref.key), equal_to(["v0", "v2"]))
        assert_that(
            failures | "Failed" >> beam.Map(lambda f: (f.ref.key, f.error_type, f.reason)),
            equal_to([("v1", "MemoryError", "cannot allocate")]),
            label="failures",
        )
