"""Per-pixel anomaly scores from Mask2Former outputs (docs/method.md step 2; paper Table 3).

All scores are built on the Mask2Former semantic map

    S[b, k, h, w] = sum_q softmax(class_logits[b, q])[k] * sigmoid(mask_logits[b, q, h, w])

for the K in-distribution classes (the last class, "no object", is dropped after the softmax).
Every score is "higher = more anomalous". The functions never resize: pass mask logits at the
resolution the score is wanted at (the caller upsamples, method step 1). Inputs of any floating
dtype are accepted; the math runs in float32 and the outputs are float32 on the input device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from transforms._validate import check_float

__all__ = [
    "SCORE_FUNCTIONS",
    "energy_scores",
    "entropy_scores",
    "max_logit_scores",
    "max_softmax_scores",
    "rba_scores",
    "semantic_probabilities",
    "semantic_segmentation",
]


def _check_logits(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> None:
    check_float("class_logits", class_logits, ndim=3)
    check_float("mask_logits", mask_logits, ndim=4)
    if class_logits.shape[-1] < 2:
        raise ValueError(
            "class_logits must have K+1 >= 2 entries in its last dimension (K classes and "
            f"'no object'), got shape {tuple(class_logits.shape)}"
        )
    if class_logits.shape[:2] != mask_logits.shape[:2]:
        raise ValueError(
            f"class_logits [B, Q, K+1] = {tuple(class_logits.shape)} and mask_logits "
            f"[B, Q, H, W] = {tuple(mask_logits.shape)} disagree on B or Q"
        )
    if class_logits.device != mask_logits.device:
        raise ValueError(
            f"class_logits is on {class_logits.device} but mask_logits is on {mask_logits.device}"
        )


def _bmm_over_queries(weights: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """``[B, R, Q] x sigmoid([B, Q, H, W]) -> [B, R, H, W]`` as one batched matmul.

    Never materialises a ``[B, Q, R, H, W]`` product: the only full-size temporary is the
    sigmoid of the mask logits.
    """
    b, q, h, w = mask_logits.shape
    probs = torch.sigmoid(mask_logits.float()).reshape(b, q, h * w)
    return torch.bmm(weights, probs).reshape(b, weights.shape[1], h, w)


def semantic_probabilities(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Mask2Former semantic map ``S``.

    Args:
        class_logits: ``[B, Q, K+1]`` float, the last class being "no object".
        mask_logits: ``[B, Q, H, W]`` float, at any resolution.

    Returns:
        ``[B, K, H, W]`` float32, ``S[b, k] = sum_q softmax(cls)[q, k] * sigmoid(mask)[q]``.
    """
    _check_logits(class_logits, mask_logits)
    cls = torch.softmax(class_logits.float(), dim=-1)[..., :-1]  # [B, Q, K]
    return _bmm_over_queries(cls.transpose(1, 2), mask_logits)


def semantic_segmentation(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """In-distribution semantic segmentation: ``argmax_k S``, ``[B, H, W]`` int64."""
    return semantic_probabilities(class_logits, mask_logits).argmax(dim=1)


def rba_scores(
    class_logits: torch.Tensor, mask_logits: torch.Tensor, *, tanh: bool = False
) -> torch.Tensor:
    """RbA "rejected by all" score (docs/method.md step 2).

    ``tanh=False`` (UGainS, "negative logit sum"): ``U = -sum_k S[k]``, in ``[-Q, 0]``.
    ``tanh=True`` (RbA's official score): ``-sum_k tanh(S[k])``, in ``[-K, 0]``.

    Args:
        class_logits: ``[B, Q, K+1]`` float.
        mask_logits: ``[B, Q, H, W]`` float, at any resolution (not resized here).

    Returns:
        ``[B, H, W]`` float32, higher = more anomalous.
    """
    if tanh:
        return -torch.tanh(semantic_probabilities(class_logits, mask_logits)).sum(dim=1)
    _check_logits(class_logits, mask_logits)
    # sum_k S[k] = sum_q (sum_{k<K} softmax(cls)[q, k]) sigmoid(mask)[q]: one [B, 1, Q] row
    # instead of a [B, K, H, W] map. The in-distribution mass is summed explicitly rather than
    # taken as 1 - p(no object), which would lose precision when p(no object) is close to 1.
    weights = torch.softmax(class_logits.float(), dim=-1)[..., :-1].sum(dim=-1)  # [B, Q]
    return -_bmm_over_queries(weights.unsqueeze(1), mask_logits).squeeze(1)


def max_softmax_scores(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """``1 - max_k softmax_k(S)``, ``[B, H, W]`` float32 (the softmax runs over the K classes)."""
    sem = semantic_probabilities(class_logits, mask_logits)
    return 1.0 - torch.softmax(sem, dim=1).amax(dim=1)


def entropy_scores(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of ``softmax_k(S)``, ``[B, H, W]`` float32."""
    log_p = torch.log_softmax(semantic_probabilities(class_logits, mask_logits), dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def max_logit_scores(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """``-max_k S[k]``, ``[B, H, W]`` float32."""
    return -semantic_probabilities(class_logits, mask_logits).amax(dim=1)


def energy_scores(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Free energy ``-logsumexp_k S[k]``, ``[B, H, W]`` float32."""
    return -torch.logsumexp(semantic_probabilities(class_logits, mask_logits), dim=1)


def _rba_tanh(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    return rba_scores(class_logits, mask_logits, tanh=True)


# Keys are the ``method.score`` names of the mining config (models.config.ScoreName).
SCORE_FUNCTIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "rba_nls": rba_scores,
    "rba": _rba_tanh,
    "max_softmax": max_softmax_scores,
    "entropy": entropy_scores,
    "max_logit": max_logit_scores,
    "energy": energy_scores,
}
