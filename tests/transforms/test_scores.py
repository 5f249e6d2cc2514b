"""Per-pixel scores against plain-loop references (docs/method.md step 2)."""

from __future__ import annotations

import math

import pytest
import torch

from transforms.scores import (
    SCORE_FUNCTIONS,
    energy_scores,
    entropy_scores,
    max_logit_scores,
    max_softmax_scores,
    rba_scores,
    semantic_probabilities,
    semantic_segmentation,
)


def reference_semantic(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> list:
    """S[b][k][h][w] = sum_q softmax(cls[b, q])[k] * sigmoid(mask[b, q, h, w]), in float64."""
    cls = class_logits.double().tolist()
    masks = mask_logits.double().tolist()
    b_, q_, k1 = class_logits.shape
    h_, w_ = mask_logits.shape[2:]
    out = []
    for b in range(b_):
        probs = []
        for q in range(q_):
            exps = [math.exp(v) for v in cls[b][q]]
            probs.append([e / sum(exps) for e in exps])
        per_class = []
        for k in range(k1 - 1):
            plane = [[0.0] * w_ for _ in range(h_)]
            for q in range(q_):
                for y in range(h_):
                    for x in range(w_):
                        sig = 1.0 / (1.0 + math.exp(-masks[b][q][y][x]))
                        plane[y][x] += probs[q][k] * sig
            per_class.append(plane)
        out.append(per_class)
    return out


def per_pixel(sem: list, fn) -> torch.Tensor:
    """Apply ``fn(list of K class values) -> float`` at every pixel of S."""
    return torch.tensor(
        [
            [
                [fn([plane[y][x] for plane in image]) for x in range(len(image[0][0]))]
                for y in range(len(image[0]))
            ]
            for image in sem
        ],
        dtype=torch.float64,
    )


def _softmax(values: list) -> list:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


REFERENCES = {
    "rba_nls": lambda s: -sum(s),
    "rba": lambda s: -sum(math.tanh(v) for v in s),
    "max_softmax": lambda s: 1.0 - max(_softmax(s)),
    "entropy": lambda s: -sum(p * math.log(p) for p in _softmax(s)),
    "max_logit": lambda s: -max(s),
    "energy": lambda s: -math.log(sum(math.exp(v) for v in s)),
}

SHAPES = [(1, 1, 2, 1, 1), (2, 5, 4, 3, 4), (1, 7, 20, 5, 2), (3, 3, 3, 6, 7)]  # B, Q, K+1, H, W


def random_logits(b: int, q: int, k1: int, h: int, w: int, device: torch.device, seed: int):
    gen = torch.Generator().manual_seed(seed)
    cls = torch.randn(b, q, k1, generator=gen) * 3
    masks = torch.randn(b, q, h, w, generator=gen) * 4
    return cls.to(device), masks.to(device)


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("shape", SHAPES)
def test_every_score_equals_its_loop_reference(
    name: str, shape: tuple, device: torch.device
) -> None:
    cls, masks = random_logits(*shape, device=device, seed=sum(shape))
    expected = per_pixel(reference_semantic(cls.cpu(), masks.cpu()), REFERENCES[name])
    got = SCORE_FUNCTIONS[name](cls, masks)
    assert got.dtype == torch.float32
    assert got.device == device
    assert got.shape == (shape[0], shape[3], shape[4])
    torch.testing.assert_close(got.cpu().double(), expected, rtol=1e-5, atol=1e-5)


def test_public_names_are_the_registry(device: torch.device) -> None:
    cls, masks = random_logits(2, 4, 5, 3, 3, device, seed=1)
    assert torch.equal(SCORE_FUNCTIONS["rba_nls"](cls, masks), rba_scores(cls, masks))
    assert torch.equal(SCORE_FUNCTIONS["rba"](cls, masks), rba_scores(cls, masks, tanh=True))
    assert torch.equal(SCORE_FUNCTIONS["max_softmax"](cls, masks), max_softmax_scores(cls, masks))
    assert torch.equal(SCORE_FUNCTIONS["entropy"](cls, masks), entropy_scores(cls, masks))
    assert torch.equal(SCORE_FUNCTIONS["max_logit"](cls, masks), max_logit_scores(cls, masks))
    assert torch.equal(SCORE_FUNCTIONS["energy"](cls, masks), energy_scores(cls, masks))


def test_semantic_probabilities_and_segmentation(device: torch.device) -> None:
    cls, masks = random_logits(2, 6, 5, 4, 3, device, seed=7)
    sem = reference_semantic(cls.cpu(), masks.cpu())
    expected = torch.tensor(sem, dtype=torch.float64)
    got = semantic_probabilities(cls, masks)
    assert got.shape == (2, 4, 4, 3)
    torch.testing.assert_close(got.cpu().double(), expected, rtol=1e-5, atol=1e-6)
    labels = semantic_segmentation(cls, masks)
    assert labels.dtype == torch.int64
    assert labels.cpu().tolist() == [
        [[max(range(4), key=lambda k: image[k][y][x]) for x in range(3)] for y in range(4)]
        for image in sem
    ]


def test_rba_nls_range_is_minus_q_to_zero(device: torch.device) -> None:
    q = 6
    cls, masks = random_logits(1, q, 4, 5, 5, device, seed=3)
    # Saturated masks and a certain in-distribution class reach the bounds.
    cls[..., 0] = 50.0
    masks[..., :2] = 30.0
    masks[..., 2:] = -30.0
    u = rba_scores(cls, masks)
    torch.testing.assert_close(u[..., :2], torch.full_like(u[..., :2], -float(q)))
    torch.testing.assert_close(u[..., 2:], torch.zeros_like(u[..., 2:]), atol=1e-6, rtol=0)


def test_no_object_probability_near_one_keeps_precision() -> None:
    # p(no object) = 1 - 1e-9: 1 - p would round to 0 in float32, the explicit sum does not.
    cls = torch.tensor([[[0.0, math.log(1e9)]]])
    masks = torch.full((1, 1, 1, 1), 30.0)
    u = rba_scores(cls, masks)
    torch.testing.assert_close(u, torch.full_like(u, -1e-9), rtol=1e-4, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes_compute_in_float32(dtype: torch.dtype, device: torch.device) -> None:
    cls, masks = random_logits(2, 5, 4, 3, 4, device, seed=11)
    cls, masks = cls.to(dtype), masks.to(dtype)
    for name, fn in SCORE_FUNCTIONS.items():
        got = fn(cls, masks)
        assert got.dtype == torch.float32, name
        assert torch.equal(got, fn(cls.float(), masks.float())), name


def test_low_resolution_masks_are_not_resized(device: torch.device) -> None:
    cls, masks = random_logits(1, 4, 3, 2, 5, device, seed=5)
    assert rba_scores(cls, masks).shape == (1, 2, 5)
    assert rba_scores(cls, masks, tanh=True).shape == (1, 2, 5)


@pytest.mark.parametrize(
    ("cls_shape", "mask_shape", "message"),
    [
        ((4, 3), (1, 4, 2, 2), "class_logits must have 3 dimensions"),
        ((1, 4, 3), (4, 2, 2), "mask_logits must have 4 dimensions"),
        ((1, 4, 3), (1, 5, 2, 2), "disagree on B or Q"),
        ((2, 4, 3), (1, 4, 2, 2), "disagree on B or Q"),
        ((1, 4, 1), (1, 4, 2, 2), "class_logits must have K\\+1 >= 2"),
    ],
)
def test_score_inputs_of_mismatched_shapes_are_refused(
    cls_shape: tuple, mask_shape: tuple, message: str
) -> None:
    for fn in [semantic_probabilities, *SCORE_FUNCTIONS.values()]:
        with pytest.raises(ValueError, match=message):
            fn(torch.zeros(cls_shape), torch.zeros(mask_shape))


def test_score_inputs_that_are_not_float_tensors_are_refused() -> None:
    with pytest.raises(ValueError, match="class_logits must have dtype floating point"):
        rba_scores(torch.zeros(1, 2, 3, dtype=torch.int64), torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match="mask_logits must have dtype floating point"):
        rba_scores(torch.zeros(1, 2, 3), torch.zeros(1, 2, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask_logits must be a torch\.Tensor"):
        rba_scores(torch.zeros(1, 2, 3), [[0.0]])
