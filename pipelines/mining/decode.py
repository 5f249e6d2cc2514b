"""Decode planned frames to RGB arrays, with every failure routed to a dead letter.

What a frame gets:

- 8-bit RGB/BGR images: used as they are. Grayscale: replicated to three channels. RGBA:
  alpha dropped. 16-bit: scaled to 8 bits (``value >> 8``). An EXIF orientation (JPEG, PNG,
  WebP) is applied, so pixel coordinates refer to the upright image viewers show.
- Frames with a side below ``inference.min_image_side`` or above ``max_image_side``, empty
  files, files OpenCV cannot decode (corrupt, truncated) and video frames past the end of a
  truncated video: a :class:`FrameFailure` with the reason.

Each decoded frame keeps its original pixels (crops and masks are reported in them) and a
copy resized to the models' input size.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from pipelines.elements import DecodedFrame, FrameFailure, FrameRef, ReadUnit, dead_letter_failures
from pipelines.geometry import resize_for_model
from pipelines.mining.sources import local_copy

__all__ = [
    "DecodeFrames",
    "FrameDecodeError",
    "decode_image",
    "to_rgb8",
]

_LOG = logging.getLogger(__name__)
FAILED = "failed"


class FrameDecodeError(ValueError):
    """A frame's bytes cannot be turned into an RGB image; the message says why."""


def to_rgb8(array: np.ndarray, name: str) -> np.ndarray:
    """OpenCV's decoded array (BGR, BGRA, gray; 8 or 16 bit) -> ``[H, W, 3]`` uint8 RGB."""
    import cv2

    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise FrameDecodeError(f"{name}: unsupported pixel type {array.dtype} (need 8 or 16 bit)")
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    channels = array.shape[2]
    if channels == 1:
        return cv2.cvtColor(array[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2RGB)
    raise FrameDecodeError(f"{name}: unsupported number of channels {channels}")


def decode_image(data: bytes, name: str, *, min_side: int, max_side: int) -> np.ndarray:
    """Encoded image bytes -> ``[H, W, 3]`` uint8 RGB; raises FrameDecodeError naming ``name``."""
    import cv2

    if not data:
        raise FrameDecodeError(f"{name}: file is empty (0 bytes)")
    # Not IMREAD_UNCHANGED: that flag ignores the EXIF orientation, and the review App (a
    # browser) shows images upright, so masks and crops would land on a rotated picture.
    # ANYDEPTH | ANYCOLOR keeps 16-bit and grayscale, applies the orientation, drops alpha.
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if array is None:
        raise FrameDecodeError(f"{name}: not a decodable image (corrupt or truncated file)")
    check_size(array.shape[:2], name, min_side=min_side, max_side=max_side)
    return to_rgb8(array, name)


def check_size(size: tuple[int, ...], name: str, *, min_side: int, max_side: int) -> None:
    height, width = int(size[0]), int(size[1])
    if min(height, width) < min_side:
        raise FrameDecodeError(
            f"{name}: frame of {width}x{height} pixels is smaller than "
            f"inference.min_image_side={min_side}"
        )
    if max(height, width) > max_side:
        raise FrameDecodeError(
            f"{name}: frame of {width}x{height} pixels exceeds inference.max_image_side={max_side}"
        )


@beam.typehints.with_output_types(DecodedFrame, **{FAILED: FrameFailure})
class _DecodeUnit(beam.DoFn):
    """Decode one :class:`ReadUnit`.

    Raises for an unreadable image or video (the whole unit goes to the dead letter); video
    frames that do not decode inside a readable video are tagged ``failed`` one by one.
    """

    def __init__(self, model_size: tuple[int, int], min_side: int, max_side: int) -> None:
        self.model_size = tuple(model_size)
        self.min_side = min_side
        self.max_side = max_side
        self.read = beam.metrics.Metrics.counter("ugains", "frames_read")

    def process(self, unit: ReadUnit) -> Iterator[DecodedFrame | beam.pvalue.TaggedOutput]:
        if unit.refs[0].video_uri is None:
            yield self._image(unit.refs[0])
        else:
            yield from self._video(unit)

    def _frame(self, ref: FrameRef, image: np.ndarray, start: float) -> DecodedFrame:
        model_image = resize_for_model(image, self.model_size)
        self.read.inc()
        return DecodedFrame(ref, image, model_image, (time.perf_counter() - start) * 1e3)

    def _image(self, ref: FrameRef) -> DecodedFrame:
        start = time.perf_counter()
        with FileSystems.open(ref.uri) as handle:
            data = handle.read()
        image = decode_image(data, ref.uri, min_side=self.min_side, max_side=self.max_side)
        return self._frame(ref, image, start)

    def _video(self, unit: ReadUnit) -> Iterator[DecodedFrame | beam.pvalue.TaggedOutput]:
        import cv2

        with local_copy(unit.uri) as path:
            capture = cv2.VideoCapture(path)
            try:
                if not capture.isOpened():
                    raise FrameDecodeError(
                        f"{unit.uri}: video cannot be opened (corrupt, truncated or no codec)"
                    )
                next_index = None  # the frame the capture returns on its next read
                for ref in unit.refs:
                    start = time.perf_counter()
                    index = int(ref.video_frame)
                    if next_index is None or index < next_index:
                        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
                        next_index = index
                    while next_index < index and capture.grab():
                        next_index += 1
                    ok, bgr = capture.read() if next_index == index else (False, None)
                    next_index = index + 1 if ok else None
                    try:
                        if not ok:
                            raise FrameDecodeError(
                                f"{ref.uri}: frame {index} cannot be read "
                                "(the video ends early or is corrupt)"
                            )
                        check_size(
                            bgr.shape[:2], ref.uri, min_side=self.min_side, max_side=self.max_side
                        )
                        yield self._frame(ref, to_rgb8(bgr, ref.uri), start)
                    except Exception as error:
                        # One bad frame of a video must not take its neighbours with it (the
                        # whole unit would go to the dead letter).
                        yield beam.pvalue.TaggedOutput(FAILED, _failure(ref, "decode", error))
            finally:
                capture.release()


def _failure(ref: FrameRef, stage: str, error: BaseException) -> FrameFailure:
    _LOG.warning("frame %s failed at %s: %s", ref.key, stage, error)
    return FrameFailure(ref, stage, type(error).__name__, str(error))


class DecodeFrames(beam.PTransform):
    """``PCollection[ReadUnit]`` -> ``(PCollection[DecodedFrame], PCollection[FrameFailure])``."""

    def __init__(self, model_size: tuple[int, int], min_side: int, max_side: int) -> None:
        super().__init__()
        self.fn = _DecodeUnit(model_size, min_side, max_side)

    def expand(self, units: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        result = units | "DecodeUnit" >> beam.ParDo(self.fn).with_exception_handling(
            main_tag="decoded", dead_letter_tag="dead_letter"
        ).with_outputs(FAILED, main="decoded")
        unreadable = result["dead_letter"] | "UnreadableToFailures" >> beam.FlatMap(
            lambda bad: dead_letter_failures("decode", list(bad[0].refs), bad[1])
        )
        failures = (result[FAILED], unreadable) | "DecodeFailures" >> beam.Flatten()
        return result["decoded"], failures
