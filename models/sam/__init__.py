"""Segment Anything (method step 6): model builder, checkpoint loader and a batched prompter.

:func:`build_sam` builds the ``segment_anything`` :class:`~segment_anything.modeling.Sam` of a
registry name (``vit_h`` / ``vit_l`` / ``vit_b``) from a user's checkpoint, or randomly
initialised from a seed; ``vit_tiny`` is the same SAM with a two-block image encoder so that
pipeline tests and the demo run on a CPU (it has no checkpoint), and ``vit_tiny_512`` is that
encoder at a 512-pixel input (a 32x32 embedding grid), the size ``ugains train sam`` trains for
the world's frames. Every geometry (resize, padding, point scaling, mask sizes) is read from the
model, so the prompter serves any input size; the registry models keep 1024.

:class:`SamPrompter` is the thin predictor UGainS uses: it encodes a batch of frames at once
and decodes all point prompts of a frame in ONE mask-decoder call (up to 256 prompts; a dense
grid's 1024 go in calls of 256), keeping per prompt the best of SAM's three masks by predicted
IoU. Its results match ``SamPredictor`` run one point at a time (``tests/models/test_sam.py``).

The fast path (default on CUDA) runs the image encoder and the mask decoder under bf16
autocast (the prompt encoder stays float32) and replaces the image encoder's attention by
:func:`torch.nn.functional.scaled_dot_product_attention`, with SAM's decomposed
relative-position bias passed as ``attn_mask``. It swaps the class of the ``Attention``
modules only (:func:`use_sdpa_attention`), so parameter names, checkpoints and ``state_dict``
are unchanged.

One module per job:

- :mod:`models.sam.architecture`: the variants, :func:`build_sam_model`, :func:`build_sam`,
  :func:`load_sam_checkpoint`;
- :mod:`models.sam.attention`: :class:`SdpaAttention` and :func:`use_sdpa_attention`;
- :mod:`models.sam.preprocess`: :func:`resized_size` and :func:`preprocess_frames` (the encoder
  input shared by inference and training);
- :mod:`models.sam.prompter`: :class:`SamPrompter`.
"""

from models.errors import CheckpointError
from models.sam.architecture import (
    PATCH_SIZE,
    PROMPT_EMBED_DIM,
    SAM_ARCHITECTURES,
    SamArchitecture,
    build_sam,
    build_sam_model,
    load_sam_checkpoint,
)
from models.sam.attention import SdpaAttention, use_sdpa_attention
from models.sam.preprocess import (
    IMAGE_SIZE,
    PIXEL_MEAN,
    PIXEL_STD,
    SAM_PREPROCESSING,
    SamPreprocess,
    preprocess_frames,
    resized_size,
)
from models.sam.prompter import SamPrompter

__all__ = [
    "IMAGE_SIZE",
    "PATCH_SIZE",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "PROMPT_EMBED_DIM",
    "SAM_ARCHITECTURES",
    "SAM_PREPROCESSING",
    "CheckpointError",
    "SamArchitecture",
    "SamPreprocess",
    "SamPrompter",
    "SdpaAttention",
    "build_sam",
    "build_sam_model",
    "load_sam_checkpoint",
    "preprocess_frames",
    "resized_size",
    "use_sdpa_attention",
]
