"""The rows of an evaluation table: a mode, a prompt sampler and a point budget."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from models.config import MethodConfig

MODES = ("ugains", "rba", "dense-grid", "oracle")  # command-line spelling of ModeName


@dataclass(frozen=True)
class Variant:
    """One table row's method settings (the rest of the method comes from the config)."""

    mode: str  # one of MODES
    sampler: str = "-"  # "-" where the mode has no sampler (rba, dense-grid, oracle)
    points: int | None = None  # None where the sampler has no point budget

    def method(self, base: MethodConfig) -> MethodConfig:
        """``base`` resolved for ``evaluate`` (frame gating off, see
        :meth:`MethodConfig.for_command`) with this variant's mode / sampler / points."""
        base = base.for_command("evaluate")
        update: dict[str, Any] = {"mode": self.mode.replace("-", "_")}
        if self.sampler != "-":
            update["sampler"] = self.sampler
        if self.points is not None:
            update["num_points"] = self.points
        return MethodConfig.model_validate(base.model_dump() | update)

    @property
    def has_instances(self) -> bool:
        return self.mode != "rba"

    def key(self) -> tuple[str, str, str]:
        return self.mode, self.sampler, "-" if self.points is None else str(self.points)


def expand_variants(
    modes: Sequence[str], samplers: Sequence[str], points: Sequence[int]
) -> list[Variant]:
    """The rows of a table: every mode x sampler x points that means something, in order.

    ``rba`` (pixel scores only), ``dense-grid`` (SAM's 32x32 grid) and ``oracle`` take no
    sampler; the ``oracle`` sampler takes no point budget. Duplicates are dropped.
    """
    rows: list[Variant] = []
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        if mode != "ugains":
            candidates = [Variant(mode)]
        else:
            candidates = [
                Variant(mode, sampler, None if sampler == "oracle" else n)
                for sampler, n in itertools.product(samplers, points)
            ]
        for variant in candidates:
            if variant not in rows:
                rows.append(variant)
    return rows
