"""Building and loading Mask2Former: :func:`build_mask2former` from a
:class:`models.config.Mask2FormerConfig` (random, a Hugging Face directory, or an RbA / UGainS
checkpoint converted by :mod:`models.mask2former.conversion`), loaded strictly."""

from __future__ import annotations

import contextlib
import json
import pickle
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerForUniversalSegmentation,
)

from models.checkpoints import safe_torch_load
from models.config import Mask2FormerConfig
from models.errors import CheckpointError
from models.mask2former.architecture import (
    IGNORED_KEY_SUFFIXES,
    OPTIONAL_KEYS,
    Mask2FormerMultiLevelForUniversalSegmentation,
    architecture_config,
)
from models.mask2former.conversion import load_state_dict_for
from models.mask2former.segmenter import Mask2FormerSegmenter

__all__ = ["build_mask2former", "load_strict", "no_progress_bars", "resolve_format"]


def load_strict(
    model: nn.Module, state_dict: Mapping[str, Tensor], *, unused_ok: Iterable[str] = ()
) -> list[str]:
    """Load ``state_dict`` into ``model`` so that nothing is left out on either side.

    Every persistent parameter and buffer of ``model`` must be in ``state_dict`` with its shape
    (except :data:`OPTIONAL_KEYS`), and every tensor of ``state_dict`` must be used unless its
    key is in ``unused_ok`` or ends with one of :data:`IGNORED_KEY_SUFFIXES`. Values are cast to
    the model's dtypes.

    Returns:
        The keys of ``state_dict`` that were left unused, sorted.

    Raises:
        CheckpointError: naming every missing key, unexpected key, non-tensor value and shape
            mismatch (with both shapes); the model is then left untouched.
    """
    expected = model.state_dict()
    allowed_unused = set(unused_ok)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected and k not in allowed_unused]
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, Tensor)]
    mismatched = [
        (k, tuple(v.shape), tuple(expected[k].shape))
        for k, v in state_dict.items()
        if k in expected and isinstance(v, Tensor) and v.shape != expected[k].shape
    ]
    _raise_unless_fits(type(model).__name__, missing, unexpected, mismatched, not_tensors)
    model.load_state_dict({k: v for k, v in state_dict.items() if k in expected}, strict=False)
    return sorted(k for k in state_dict if k not in expected)


def _raise_unless_fits(
    target: str,
    missing: Iterable[str],
    unexpected: Iterable[str],
    mismatched: Iterable[tuple[str, tuple[int, ...], tuple[int, ...]]],
    not_tensors: Iterable[str] = (),
) -> None:
    """Raise a :class:`CheckpointError` listing every problem, or nothing if there is none."""
    missing = sorted(set(missing) - OPTIONAL_KEYS)
    unexpected = sorted(k for k in unexpected if not k.endswith(IGNORED_KEY_SUFFIXES))
    shapes = [f"{k}: checkpoint {ckpt} vs model {mine}" for k, ckpt, mine in sorted(mismatched)]
    problems = []
    for title, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", shapes),
        ("values that are not tensors", sorted(not_tensors)),
    ):
        if items:
            shown = "\n  ".join(items[:_MAX_LISTED])
            more = (
                f"\n  ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
            )
            problems.append(f"{len(items)} {title}:\n  {shown}{more}")
    if problems:
        raise CheckpointError(f"checkpoint does not fit {target}:\n" + "\n".join(problems))


_MAX_LISTED = 20  # keys listed per kind of problem in an error message


_FORMAT_BY_SUFFIX = {".ckpt": "ugains", ".pth": "rba"}


def resolve_format(fmt: str, checkpoint: str | None) -> str:
    """The concrete format of a checkpoint: ``fmt`` itself unless it is ``"auto"``.

    ``auto``: a directory with ``config.json`` is a Hugging Face model, ``*.ckpt`` the UGainS
    Lightning checkpoint, ``*.pth`` an RbA model-zoo ``model_final.pth``.
    """
    if fmt != "auto":
        return fmt
    if not checkpoint:
        raise ValueError("format 'auto' needs a checkpoint path")
    path = Path(checkpoint)
    if path.is_dir() and (path / "config.json").is_file():
        return "huggingface"
    if path.suffix in _FORMAT_BY_SUFFIX:
        return _FORMAT_BY_SUFFIX[path.suffix]
    raise ValueError(
        f"cannot tell the format of Mask2Former checkpoint {checkpoint!r}: expected a Hugging "
        "Face model directory (with config.json), a .pth (RbA) or a .ckpt (UGainS) file; "
        "set mask2former.format explicitly"
    )


def build_mask2former(config: Mask2FormerConfig) -> Mask2FormerSegmenter:
    """Build the in-distribution model of ``config``, in eval mode, on the CPU.

    ``random``: the named architecture, initialised from ``config.seed`` (the global RNG is
    left as it was). ``huggingface``: a local model directory (never a download; safetensors
    or ``weights_only`` pickles) whose ``config.json`` defines the architecture (the config's
    ``architecture`` is not used; its sizes are checked). ``rba`` / ``ugains``: converted by
    :func:`models.checkpoints.load_state_dict_for`, loaded with :func:`load_strict` into the
    named architecture.

    Raises:
        FileNotFoundError: the checkpoint does not exist.
        CheckpointError: the checkpoint does not fit the model or the config.
    """
    fmt = resolve_format(config.format, config.checkpoint)
    if fmt not in ("random", "huggingface", "rba", "ugains"):
        raise ValueError(f"unknown Mask2Former format {fmt!r}")
    if fmt == "huggingface":
        model = _load_huggingface(Path(str(config.checkpoint)))
        _check_sizes(model, config)
    else:
        path = Path(str(config.checkpoint))
        if fmt != "random" and not path.is_file():
            raise FileNotFoundError(f"Mask2Former checkpoint not found: {path}")
        hf_config = architecture_config(
            config.architecture, num_classes=config.num_classes, num_queries=config.num_queries
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = Mask2FormerMultiLevelForUniversalSegmentation(hf_config)
        if fmt != "random":
            # Imported here: the converters pull in their own dependencies only when needed.

            # `skipped`: source keys the converter leaves out on purpose (training-only state).
            state_dict, _skipped = load_state_dict_for(
                fmt, str(path), architecture=config.architecture
            )
            load_strict(model, state_dict)
    autocast_dtype = torch.bfloat16 if config.autocast_bf16 else None
    return Mask2FormerSegmenter(model.eval(), autocast_dtype=autocast_dtype).eval()


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """Silence transformers' progress bars (one per load or save) inside the block.

    Every Beam worker loads the model; a bar per worker per load is noise in a job's log.
    """
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _load_huggingface(path: Path) -> Mask2FormerMultiLevelForUniversalSegmentation:
    """``from_pretrained`` of a local directory; any missing or unused weight is an error."""
    if not path.is_dir():
        raise FileNotFoundError(f"Hugging Face Mask2Former directory not found: {path}")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"Hugging Face Mask2Former directory without config.json: {path}")
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type != "mask2former":
        raise CheckpointError(f"{config_file} has model_type {model_type!r}, not 'mask2former'")
    if not any(path.glob("*.safetensors")):
        # Pickled weights: checked by the project's one safe loader first, so that a file
        # needing code is refused in one line naming its globals (transformers' own error
        # would advise weights_only=False).
        for weights in sorted(path.glob("*.bin")):
            safe_torch_load(weights)
    try:
        with no_progress_bars():
            model, info = Mask2FormerMultiLevelForUniversalSegmentation.from_pretrained(
                path,
                local_files_only=True,
                weights_only=True,
                dtype=torch.float32,
                # Mismatches are collected and reported below, naming the keys and shapes.
                ignore_mismatched_sizes=True,
                output_loading_info=True,
            )
    except (OSError, RuntimeError, pickle.UnpicklingError) as error:
        raise CheckpointError(
            f"cannot load Hugging Face Mask2Former from {path}: {error}"
        ) from error
    _raise_unless_fits(
        f"{type(model).__name__} ({path})",
        info["missing_keys"],
        info["unexpected_keys"],
        [(k, tuple(ckpt), tuple(mine)) for k, ckpt, mine in info["mismatched_keys"]],
    )
    return model


def _check_sizes(model: Mask2FormerForUniversalSegmentation, config: Mask2FormerConfig) -> None:
    """The loaded model must have the classes and queries the config promises."""
    got = (int(model.config.num_labels), int(model.config.num_queries))
    if got != (config.num_classes, config.num_queries):
        raise CheckpointError(
            f"checkpoint {config.checkpoint} has {got[0]} classes and {got[1]} queries, the "
            f"config says num_classes={config.num_classes}, num_queries={config.num_queries}"
        )
