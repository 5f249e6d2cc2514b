"""``ugains report``: a run's top candidates as pictures, without starting FiftyOne.

Reads the run's ``candidates`` table (already ranked) and writes, into ``--out`` (default
``<run>/report``):

- ``contact_sheet.png``: one tile per candidate, its crop (the frame around the box, as mining
  stored it) with the mask's outline drawn in, and under it rank, score, the number of frames
  its object was seen in (its track's sightings), log and frame key;
- ``index.html``: the same tiles in a static page (no script, no network), each with its score,
  SAM IoU, area, track, log, frame key and a link to the frame;
- ``tiles/rank_<NNN>.png``: the tiles themselves.
"""

from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path

import cv2
import numpy as np

from pipelines.mining.tables import TableError, read_table

# transforms.masks (torch) is imported when a tile is drawn: `ugains report --help` stays light.

__all__ = ["configure_parser", "draw_tile", "run", "write_report"]

TILE = 192  # tile side in pixels (the crop is fitted inside, aspect kept)
CAPTION = 34  # caption band under each tile
COLUMNS = 5
OUTLINE_BGR = (255, 255, 0)  # cyan: visible on road grey, grass and sky alike
_COLUMNS_READ = [
    "rank",
    "score",
    "sam_iou",
    "area",
    "log_id",
    "frame_key",
    "frame_uri",
    "frame_height",
    "frame_width",
    "mask_rle",
    "crop_png",
    "crop_x",
    "crop_y",
    "crop_w",
    "crop_h",
    "track_id",
    "track_frames",
    "duplicate_of",
]


def draw_tile(row: dict) -> np.ndarray:
    """``[TILE + CAPTION, TILE, 3]`` uint8 BGR: the candidate's crop, mask outlined, captioned.

    Raises:
        ValueError: the crop PNG does not decode or does not match its stored box.
    """
    from transforms.masks import decode_rle

    crop = cv2.imdecode(np.frombuffer(row["crop_png"], np.uint8), cv2.IMREAD_COLOR)
    if crop is None or crop.shape[:2] != (row["crop_h"], row["crop_w"]):
        raise ValueError(f"candidate {row['rank']} ({row['frame_key']}): unreadable crop")
    mask = decode_rle(row["mask_rle"], row["frame_height"], row["frame_width"]).numpy()
    x, y = row["crop_x"], row["crop_y"]
    window = mask[y : y + row["crop_h"], x : x + row["crop_w"]].astype(np.uint8)
    scale = TILE / max(crop.shape[:2])
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    # Upscale first, then outline: a one-pixel outline of a small crop would vanish.
    crop = cv2.resize(crop, size, interpolation=cv2.INTER_NEAREST)
    window = cv2.resize(window, size, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(window, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(crop, contours, -1, OUTLINE_BGR, 2)
    tile = np.full((TILE + CAPTION, TILE, 3), 255, np.uint8)
    top, left = (TILE - size[1]) // 2, (TILE - size[0]) // 2
    tile[top : top + size[1], left : left + size[0]] = crop
    font = cv2.FONT_HERSHEY_SIMPLEX
    seen = f"  {_frames(row)}" if row.get("track_frames") else ""
    lines = (f"#{row['rank']}  score {row['score']:.3f}{seen}", _fit(str(row["frame_key"]), 30))
    for number, text in enumerate(lines):
        cv2.putText(tile, text, (4, TILE + 14 + 15 * number), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return tile


def _frames(row: dict) -> str:
    count = row["track_frames"]
    return f"{count} frame" if count == 1 else f"{count} frames"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3) :]


def _sheet(tiles: list[np.ndarray]) -> np.ndarray:
    rows = -(-len(tiles) // COLUMNS)
    height, width = TILE + CAPTION, TILE
    sheet = np.full((rows * height, min(len(tiles), COLUMNS) * width, 3), 230, np.uint8)
    for index, tile in enumerate(tiles):
        r, c = divmod(index, COLUMNS)
        sheet[r * height : (r + 1) * height, c * width : (c + 1) * width] = tile
    return sheet


def _frame_link(uri: str) -> str:
    if "://" in uri:
        return uri
    return Path(uri.split("#", 1)[0]).resolve().as_uri()


def _page(run_dir: str, rows: list[dict]) -> str:
    cells = []
    for row in rows:
        name = f"tiles/rank_{row['rank']:03d}.png"
        text = (
            f"#{row['rank']} score {row['score']:.4f} &middot; SAM IoU {row['sam_iou']:.2f} "
            f"&middot; {row['area']} px<br>{html.escape(row['log_id'])} / "
            f"{html.escape(row['frame_key'])}"
        )
        if row.get("track_id"):
            text += f"<br>track {html.escape(row['track_id'])}: seen in {_frames(row)}"
        if row.get("duplicate_of"):
            text += f"<br>near-duplicate of {html.escape(row['duplicate_of'])}"
        link = html.escape(_frame_link(row["frame_uri"]), quote=True)
        cells.append(
            f'<figure><img src="{name}" alt="candidate {row["rank"]}">'
            f'<figcaption>{text}<br><a href="{link}">frame</a></figcaption></figure>'
        )
    title = f"ugains run {html.escape(Path(run_dir).name)}: top {len(rows)} candidates"
    style = (
        "body{font-family:sans-serif;margin:1em}figure{display:inline-block;margin:6px;"
        "width:200px;vertical-align:top}figcaption{font-size:12px}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{style}</style></head><body><h1>{title}</h1>"
        "<p>Each tile: the candidate's crop with its mask outlined, best first.</p>"
        + "".join(cells)
        + "</body></html>\n"
    )


def write_report(run_dir: str, out: str | Path | None = None, top: int = 50) -> Path:
    """Write ``index.html``, ``contact_sheet.png`` and the tiles of the run's top ``top``
    candidates into ``out`` (default ``<run_dir>/report``); return ``index.html``'s path.

    Raises:
        TableError: the run's candidates table is missing or not one.
        ValueError: the run has no candidate, or a candidate's crop is unreadable.
    """
    table = read_table(run_dir, "candidates", _COLUMNS_READ)
    rows = sorted(table.to_pylist(), key=lambda row: row["rank"])[:top]
    if not rows:
        raise ValueError(f"run {run_dir}: no candidate to report (the candidates table is empty)")
    out = Path(out) if out is not None else Path(run_dir) / "report"
    (out / "tiles").mkdir(parents=True, exist_ok=True)
    tiles = [draw_tile(row) for row in rows]
    for row, tile in zip(rows, tiles, strict=True):
        cv2.imwrite(str(out / "tiles" / f"rank_{row['rank']:03d}.png"), tile)
    cv2.imwrite(str(out / "contact_sheet.png"), _sheet(tiles))
    page = out / "index.html"
    page.write_text(_page(run_dir, rows))
    return page


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="a mining run's folder (RUN_DIR)")
    parser.add_argument("--out", help="where to write the report (default: RUN_DIR/report)")
    parser.add_argument("--top", type=int, default=50, help="candidates to show, best first")


def run(args: argparse.Namespace) -> int:
    try:
        page = write_report(args.run, args.out, args.top)
    except (TableError, ValueError, OSError) as error:
        print(f"ugains report: {error}", file=sys.stderr)
        return 2
    print(f"report: {page} (contact sheet: {page.parent / 'contact_sheet.png'})")
    return 0
