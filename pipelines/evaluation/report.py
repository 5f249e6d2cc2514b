"""The evaluation table: its columns, the paper's reference figures, printing and writing."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Sequence
from typing import Any

from apache_beam.io.filesystems import FileSystems

from pipelines.evaluation.variants import Variant

_LOG = logging.getLogger(__name__)


COLUMNS = (
    "dataset",
    "mode",
    "sampler",
    "points",
    "frames",
    "pAP",
    "FPR95",
    "AUROC",
    "iAP",
    "iAP50",
    "point_precision",
    "point_recall",
)
# SegmentMeIfYouCan's component metrics, with --component-threshold only.
COMPONENT_COLUMNS = ("sIoU", "PPV", "mean_F1")
# Its minimum sizes (predicted segment, ground-truth instance) per track: obstacle track
# 50 / 10, anomaly track (and everything else) 500 / 100.

PAPER_REFERENCE: dict[tuple[str, str, str, str], dict[str, float]] = {
    ("fishyscapes_lf", "ugains", "fps", "50"): {
        "pAP": 80.08, "FPR95": 6.61, "iAP": 29.75, "iAP50": 48.35,
    },
    ("road_anomaly", "ugains", "fps", "50"): {"pAP": 88.98, "FPR95": 10.42},
    ("fishyscapes_lf", "dense-grid", "-", "-"): {"iAP": 17.02},
    ("fishyscapes_lf", "ugains", "oracle", "-"): {"iAP": 49.94},
    ("fishyscapes_lf", "oracle", "-", "-"): {"iAP": 49.94},  # the same prompts
}  # fmt: skip


def make_row(dataset: str, variant: Variant, metrics: dict[str, float]) -> dict[str, Any]:
    """One result row; instance and point metrics are None for pixel-only variants."""
    mode, sampler, points = variant.key()
    row: dict[str, Any] = {"dataset": dataset, "mode": mode, "sampler": sampler, "points": points}
    row |= metrics
    if not variant.has_instances:
        for name in ("iAP", "iAP50", "point_precision", "point_recall"):
            row[name] = None
    row = {name: _finite_or_none(value) for name, value in row.items()}
    reference = PAPER_REFERENCE.get((dataset, mode, sampler, points))
    if reference:
        row["paper"] = reference
    return row


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def table_columns(rows: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """:data:`COLUMNS`, plus the component metrics' when some row has them."""
    has_components = any(name in row for row in rows for name in COMPONENT_COLUMNS)
    return COLUMNS + COMPONENT_COLUMNS if has_components else COLUMNS


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width text table; metrics with two decimals, '-' where undefined."""
    columns = table_columns(rows)

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = [list(columns)]
    for row in rows:
        lines.append([cell(row.get(name)) for name in columns])
        if "paper" in row:
            lines.append(
                ["  paper", "", "", "", ""] + [cell(row["paper"].get(name)) for name in columns[5:]]
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    return "\n".join(
        "  ".join(
            text.ljust(width) if column < 4 else text.rjust(width)
            for column, (text, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    )


def write_results(rows: Sequence[dict[str, Any]], out: str, meta: dict[str, Any]) -> list[str]:
    """Write ``results.json`` (rows + run info) and ``results.csv`` under ``out``."""
    if not FileSystems.exists(out):
        FileSystems.mkdirs(out)
    json_path = FileSystems.join(out, "results.json")
    csv_path = FileSystems.join(out, "results.csv")
    with FileSystems.create(json_path) as handle:
        handle.write(json.dumps({"rows": list(rows), **meta}, indent=2).encode())
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table_columns(rows)), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    with FileSystems.create(csv_path) as handle:
        handle.write(buffer.getvalue().encode())
    return [json_path, csv_path]
