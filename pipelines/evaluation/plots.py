"""The evaluation's PR and ROC curves as PNG images, one curve per variant."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from apache_beam.io.filesystems import FileSystems

__all__ = ["curve_label", "write_curves"]


def curve_label(row: dict[str, Any]) -> str:
    """``"ugains fps 50"``: the variant a curve belongs to."""
    parts = [row["mode"]] + [row[k] for k in ("sampler", "points") if row.get(k) not in ("-", None)]
    return " ".join(str(p) for p in parts)


def _figure(rows: Sequence[dict[str, Any]], kind: str, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 5.2), dpi=100)
    try:
        for row in rows:
            points = row["curves"][kind]
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            figure_of_merit = (
                f"pAP {row['pAP']:.2f}" if kind == "pr" else f"FPR95 {row['FPR95']:.2f}"
            )
            axes.plot(xs, ys, linewidth=1.6, label=f"{curve_label(row)} ({figure_of_merit})")
        if kind == "pr":
            axes.set_xlabel("recall (anomaly pixels found)")
            axes.set_ylabel("precision")
        else:
            axes.axhline(0.95, color="grey", linestyle=":", linewidth=1)
            axes.text(0.99, 0.93, "TPR 0.95 (FPR95)", ha="right", va="top", color="grey")
            axes.set_xlabel("false positive rate (inlier pixels flagged)")
            axes.set_ylabel("true positive rate")
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.02)
        axes.grid(alpha=0.3)
        axes.set_title(title)
        axes.legend(loc="lower left" if kind == "pr" else "lower right", fontsize=8)
        buffer = io.BytesIO()
        figure.tight_layout()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(figure)


def write_curves(rows: Sequence[dict[str, Any]], out: str, dataset: str) -> list[str]:
    """Write ``pr_curve.png`` and ``roc_curve.png`` (pixel level, every variant) under ``out``;
    rows without curves are left out. Returns the paths written."""
    rows = [row for row in rows if row.get("curves")]
    if not rows:
        return []
    if not FileSystems.exists(out):
        FileSystems.mkdirs(out)
    written = []
    for kind, name, title in (
        ("pr", "pr_curve.png", f"{dataset}: pixel precision-recall"),
        ("roc", "roc_curve.png", f"{dataset}: pixel ROC"),
    ):
        path = FileSystems.join(out, name)
        with FileSystems.create(path, mime_type="image/png") as handle:
            handle.write(_figure(rows, kind, title))
        written.append(path)
    return written
