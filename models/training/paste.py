"""Objects pasted into training frames: random shapes, and cut-outs of real objects.

:func:`paste_random_objects` teaches a SAM "the thing at the point" and gives outlier exposure
an open-ended outlier family; :func:`paste_masked_crops` pastes given cut-outs (a review pool's
confirmed anomalies, drawn by :func:`paste_pool_sample`) for outlier exposure and SAM
fine-tuning on the objects a fleet has really met.

A world SAM trained on the world's own segments learns its few object kinds (cars, people,
poles, the outlier family) and fails on shapes it never saw. SAM's own data (SA-1B) has
every kind of object; here each training frame gets a few synthetic ones instead: star-convex
shapes (rotated superellipses, from diamonds through ellipses to boxes, with a radius that
varies with the angle by random harmonics) filled with a random colour, a gradient and noise,
with a darker rim on some. Each pasted shape is a
new segment that covers what it lies on, so prompts inside it ask for exactly its mask. They
belong to no anomaly kind of the world: its test kinds stay unseen.

Everything is drawn from the step's generator, so a resumed run pastes the same objects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["paste_masked_crops", "paste_pool_sample", "paste_random_objects"]

_HARMONICS = 4


def paste_random_objects(
    images: Tensor,
    segments: Tensor,
    count: int,
    generator: torch.Generator,
    min_radius: float = 3.0,
    max_radius_fraction: float = 0.12,
    shadows: bool = False,
) -> tuple[Tensor, Tensor]:
    """Paste ``count`` random shapes into each frame.

    Args:
        images: ``[B, 3, H, W]`` uint8 RGB.
        segments: ``[B, H, W]`` int64 segment ids (``>= 0``; negative = none).
        count: shapes per frame.
        generator: CPU generator of every draw.
        min_radius: smallest mean radius in pixels.
        max_radius_fraction: largest mean radius as a fraction of ``H``.
        shadows: darken an ellipse under about half of the shapes (not part of their segment:
            objects on a road cast one, and its mask must stop at the object).

    Returns:
        New ``(images, segments)``; each shape gets a fresh id above the frame's largest, and
        shapes drawn later cover earlier ones. Centres lie in the lower two thirds of the frame
        (where the road is), mean radii log-uniform between the bounds.
    """
    if count <= 0:
        return images, segments
    batch, _, height, width = images.shape
    device = images.device
    images, segments = images.clone(), segments.clone()
    max_radius = max(min_radius * 1.5, max_radius_fraction * height)
    for b in range(batch):
        next_id = int(segments[b].max().clamp(min=-1)) + 1
        draws = torch.rand((count, 10 + 2 * _HARMONICS), generator=generator)
        for k in range(count):
            d = draws[k].tolist()
            radius = math.exp(math.log(min_radius) + d[0] * math.log(max_radius / min_radius))
            cx = d[1] * width
            cy = height / 3 + d[2] * height * 2 / 3
            aspect = 0.5 + d[3]  # horizontal stretch
            # Only the shape's window is computed: its reach is at most 1.6 radii x aspect.
            reach = radius * 1.6 * max(aspect, 1.0)
            x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 1, width)
            y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 1, height)
            if x1 <= x0 or y1 <= y0:
                continue
            ys = torch.arange(y0, y1, device=device, dtype=torch.float32)[:, None] - cy
            xs = torch.arange(x0, x1, device=device, dtype=torch.float32)[None, :] - cx
            turn = (d[-2] - 0.5) * math.pi / 2
            u = (xs * math.cos(turn) + ys * math.sin(turn)) / aspect
            v = -xs * math.sin(turn) + ys * math.cos(turn)
            power = 1.0 + 7.0 * d[-1]  # 1 diamond, 2 ellipse, 8 nearly a box
            distance = (u.abs() ** power + v.abs() ** power) ** (1.0 / power)
            angle = torch.atan2(v, u)
            spikiness = d[4] * 0.3 * (1.0 - d[-1])  # box-like shapes keep straight sides
            boundary = torch.ones_like(angle)
            for h in range(_HARMONICS):
                amplitude = spikiness * d[10 + 2 * h] / (h + 1)
                boundary = boundary + amplitude * torch.cos((h + 2) * angle + 6.283 * d[11 + 2 * h])
            inside = distance <= radius * boundary
            if not inside.any():
                continue
            colour = torch.rand(3, generator=generator).to(device) * 255
            noise = torch.rand((3, y1 - y0, x1 - x0), generator=generator).to(device) - 0.5
            shade = 1.0 - 0.5 * d[5] * (ys / radius).clamp(-1, 1)  # lit from above, or not
            fill = colour[:, None, None] * shade[None] + noise * 120 * d[6]
            if d[7] > 0.5:  # a darker rim
                rim = distance > radius * boundary * 0.85
                fill = torch.where(rim[None], fill * 0.5, fill)
            pixels = fill.clamp(0, 255).round().to(torch.uint8)
            if shadows:
                _cast_shadow(images[b], segments[b], cx, cy, radius, aspect, generator)
            window = (slice(None), slice(y0, y1), slice(x0, x1))
            images[b][window] = torch.where(inside[None], pixels, images[b][window])
            segments[b, y0:y1, x0:x1] = torch.where(inside, next_id, segments[b, y0:y1, x0:x1])
            next_id += 1
    return images, segments


def _cast_shadow(
    image: Tensor,
    segments: Tensor,
    cx: float,
    cy: float,
    radius: float,
    aspect: float,
    generator: torch.Generator,
) -> None:
    """Darken (in place) a flat ellipse at the foot of a shape, with probability 1/2."""
    draw = torch.rand(3, generator=generator).tolist()
    if draw[0] < 0.5:
        return
    height, width = image.shape[-2:]
    half_w, half_h = radius * max(aspect, 0.7) * (1.0 + 0.4 * draw[1]), radius * 0.35
    foot = cy + radius * 0.8
    x0, x1 = max(int(cx - half_w), 0), min(int(cx + half_w) + 1, width)
    y0, y1 = max(int(foot - half_h), 0), min(int(foot + half_h) + 1, height)
    if x1 <= x0 or y1 <= y0:
        return
    ys = torch.arange(y0, y1, device=image.device, dtype=torch.float32)[:, None] - foot
    xs = torch.arange(x0, x1, device=image.device, dtype=torch.float32)[None, :] - cx
    shade = (xs / half_w) ** 2 + (ys / half_h) ** 2 <= 1.0
    darker = (image[:, y0:y1, x0:x1].float() * (0.35 + 0.3 * draw[2])).round().to(image.dtype)
    image[:, y0:y1, x0:x1] = torch.where(shade[None], darker, image[:, y0:y1, x0:x1])


def paste_masked_crops(
    image: Tensor,
    segments: Tensor,
    objects: Sequence[tuple[Tensor, Tensor]],
    generator: torch.Generator,
    scale_range: tuple[float, float] = (0.6, 1.4),
) -> tuple[Tensor, Tensor]:
    """Paste cut-out objects into one frame with scale and position jitter.

    Args:
        image: ``[3, H, W]`` uint8 RGB; segments: ``[H, W]`` int64 segment ids.
        objects: ``(crop [3, h, w] uint8, mask [h, w] bool)`` pairs, e.g. confirmed anomalies
            read from a review pool; each is pasted once.
        generator: CPU generator of every draw (scale, position, flip).
        scale_range: each object is resized by a factor drawn uniformly from this range
            (bilinear for the crop, nearest for the mask), then clipped to the frame.

    Returns:
        New ``(image, segments)``; each object gets a fresh id above the frame's largest and
        covers what it lies on. Centres lie in the lower two thirds of the frame (the road).
    """
    height, width = int(image.shape[-2]), int(image.shape[-1])
    image, segments = image.clone(), segments.clone()
    next_id = int(segments.max().clamp(min=-1)) + 1
    low, high = scale_range
    for crop, mask in objects:
        draws = torch.rand(4, generator=generator).tolist()
        factor = low + (high - low) * draws[0]
        h = max(1, min(height, round(crop.shape[-2] * factor)))
        w = max(1, min(width, round(crop.shape[-1] * factor)))
        pixels = F.interpolate(crop[None].float(), size=(h, w), mode="bilinear", antialias=True)
        inside = F.interpolate(mask[None, None].float(), size=(h, w), mode="nearest-exact") > 0.5
        pixels, inside = pixels[0].round().clamp(0, 255).to(image.dtype), inside[0, 0]
        if draws[3] < 0.5:
            pixels, inside = pixels.flip(-1), inside.flip(-1)
        top = int(height / 3 + draws[1] * (height * 2 / 3) - h / 2)
        left = int(draws[2] * width - w / 2)
        top, left = min(max(top, 0), height - h), min(max(left, 0), width - w)
        window = (slice(top, top + h), slice(left, left + w))
        inside = inside.to(image.device)
        image[(slice(None), *window)] = torch.where(
            inside[None], pixels.to(image.device), image[(slice(None), *window)]
        )
        segments[window] = torch.where(inside, next_id, segments[window])
        next_id += 1
    return image, segments


def paste_pool_sample(
    image: Tensor,
    segments: Tensor,
    pool: Sequence[tuple[Tensor, Tensor]],
    at_most: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Paste 1..``at_most`` objects drawn from ``pool`` (with replacement) into one frame with
    :func:`paste_masked_crops`' jitter; the frame unchanged when the pool is empty or
    ``at_most`` is 0.

    Args:
        image: ``[3, H, W]`` uint8 RGB; segments: ``[H, W]`` int64 segment ids.
        pool: ``(crop [3, h, w] uint8, mask [h, w] bool)`` pairs.
        generator: CPU generator of the count, the picks and the jitter.
    """
    if not pool or at_most <= 0:
        return image, segments
    count = 1 + int(torch.randint(0, at_most, (), generator=generator))
    picks = torch.randint(0, len(pool), (count,), generator=generator).tolist()
    return paste_masked_crops(image, segments, [pool[i] for i in picks], generator)
