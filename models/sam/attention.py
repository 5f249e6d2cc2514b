"""SAM's image-encoder attention on :func:`torch.nn.functional.scaled_dot_product_attention`.

The fast path of :class:`models.sam.SamPrompter` (default on CUDA) replaces the image
encoder's attention by SDPA, with SAM's decomposed relative-position bias passed as
``attn_mask``. It swaps the class of the ``Attention`` modules only (:func:`use_sdpa_attention`),
so parameter names, checkpoints and ``state_dict`` are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos
from torch import Tensor, nn

__all__ = ["SdpaAttention", "use_sdpa_attention"]


class SdpaAttention(Attention):
    """SAM's image-encoder attention computed by ``scaled_dot_product_attention``.

    Same parameters and result as :class:`segment_anything.modeling.image_encoder.Attention`;
    the decomposed relative-position terms ``rel_h[q, k_h] + rel_w[q, k_w]`` (computed from the
    unscaled queries, as SAM does) are broadcast to ``[L, L]`` and added as ``attn_mask``, which
    lets PyTorch pick a fused kernel (memory-efficient attention on CUDA) instead of three
    separate matmul / softmax passes. Instances are made by :func:`use_sdpa_attention`.
    """

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``[B, H, W, C]`` tokens (a window or the whole grid) -> ``[B, H, W, C]``."""
        batch, height, width, _ = x.shape
        # [3, B, heads, H*W, head_dim]
        qkv = self.qkv(x).reshape(batch, height * width, 3, self.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        bias = None
        if self.use_rel_pos:
            bias = _rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, (height, width))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        out = out.transpose(1, 2).reshape(batch, height, width, -1)
        return self.proj(out)


def _rel_pos_table(size: int, rel_pos: Tensor) -> Tensor:
    """``[size, size, head_dim]`` embeddings of the offsets ``q - k`` along one axis."""
    if rel_pos.shape[0] != 2 * size - 1:
        # SAM's own function interpolates the table when the grid size differs from training.
        return get_rel_pos(size, size, rel_pos)
    coords = torch.arange(size, device=rel_pos.device)
    return rel_pos[coords[:, None] - coords[None, :] + (size - 1)]


def _rel_pos_bias(q: Tensor, rel_pos_h: Tensor, rel_pos_w: Tensor, size: tuple[int, int]) -> Tensor:
    """The decomposed relative-position bias ``[B, heads, H*W, H*W]`` of queries ``q``.

    ``q``: ``[B, heads, H*W, head_dim]``; the bias has ``q``'s dtype (bf16 under autocast), as
    SDPA requires of a float ``attn_mask``.
    """
    height, width = size
    table_h = _rel_pos_table(height, rel_pos_h).to(q.dtype)
    table_w = _rel_pos_table(width, rel_pos_w).to(q.dtype)
    r_q = q.reshape(*q.shape[:2], height, width, q.shape[-1])
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, table_h)  # [B, heads, H, W, k_h]
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, table_w)  # [B, heads, H, W, k_w]
    bias = rel_h[..., :, None] + rel_w[..., None, :]  # [B, heads, H, W, k_h, k_w]
    return bias.reshape(*q.shape[:2], height * width, height * width)


def use_sdpa_attention(module: nn.Module, enabled: bool = True) -> int:
    """Switch every SAM image-encoder ``Attention`` inside ``module`` to SDPA (or back).

    The modules keep their parameters; only their class (hence ``forward``) changes, so state
    dicts and checkpoints are unaffected. Returns the number of attention modules switched.
    """
    target = SdpaAttention if enabled else Attention
    count = 0
    for child in module.modules():
        if type(child) in (Attention, SdpaAttention):
            child.__class__ = target
            count += 1
    return count
