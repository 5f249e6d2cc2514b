"""``ugains report``: a run's top candidates as a contact sheet and a static page."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines import cli
from pipelines.mining.tables import read_table
from pipelines.review.report import CAPTION, OUTLINE_BGR, TILE, draw_tile
from tests.pipelines.review.synthetic_run import default_frames, write_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_run(tmp_path_factory.mktemp("runs"), "run-r", default_frames()).path


def test_report_shows_the_top_candidates_best_first_with_links_to_their_frames(
    run: Path, tmp_path: Path
) -> None:
    candidates = sorted(read_table(str(run), "candidates").to_pylist(), key=lambda r: r["rank"])
    assert len(candidates) > 3
    out = tmp_path / "report"
    assert cli.main(["report", "--run", str(run), "--out", str(out), "--top", "3"]) == 0
    page = (out / "index.html").read_text()
    assert re.findall(r'src="(tiles/rank_\d+\.png)"', page) == [
        f"tiles/rank_{rank:03d}.png" for rank in (1, 2, 3)
    ]
    for row in candidates[:3]:
        assert row["frame_key"] in page
        frame = Path(row["frame_uri"].split("#", 1)[0]).resolve().as_uri()
        assert f'href="{frame}"' in page
        assert f"track {row['track_id']}: seen in 1 frame<" in page
    assert "#4 " not in page  # --top 3
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet.shape == (TILE + CAPTION, 3 * TILE, 3)  # one row of three tiles
    np.testing.assert_array_equal(sheet[:, :TILE], cv2.imread(str(out / "tiles/rank_001.png")))


def test_a_near_duplicate_says_which_object_it_repeats(run: Path, tmp_path: Path) -> None:
    assert cli.main(["report", "--run", str(run), "--out", str(tmp_path)]) == 0
    assert "near-duplicate of drive_a/1#0" in (tmp_path / "index.html").read_text()


def test_a_tile_outlines_the_mask_on_the_crop(run: Path) -> None:
    row = min(read_table(str(run), "candidates").to_pylist(), key=lambda r: r["rank"])
    tile = draw_tile(row)
    assert tile.shape == (TILE + CAPTION, TILE, 3)
    outline = (tile[:TILE] == OUTLINE_BGR).all(axis=2)
    assert outline.sum() > 20  # drawn around the mask
    ys, xs = np.nonzero(outline)
    # The crop is the box plus a margin: the outline lies inside the tile, off its borders.
    assert xs.min() > 0
    assert xs.max() < TILE - 1
    assert ys.max() < TILE - 1


def test_a_run_without_candidates_tables_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["report", "--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("ugains report:")
