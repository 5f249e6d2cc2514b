"""Reading a pool: the reviewer's decision per object, and pools that cannot be used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.outlier_pool import OutlierPool, PoolError, PoolObject, write_pool_files


def _object(name: str, decision: str | None) -> PoolObject:
    mask = np.zeros((4, 6), bool)
    mask[1:3, 1:5] = True
    record = {"run_id": "r", "instance_id": f"log/000001#{name}", "log_id": "log"}
    record |= {"frame_key": "log/000001", "score": -0.1}
    if decision is not None:
        record["decision"] = decision
    return PoolObject(name, np.full((4, 6, 3), 100, np.uint8), mask, record)


def test_entries_without_a_decision_are_confirmed_and_rejected_ones_are_kept_apart(
    tmp_path: Path,
) -> None:
    objects = [_object("a", None), _object("b", "rejected"), _object("c", "confirmed")]
    write_pool_files(tmp_path / "pool", objects)
    pool = OutlierPool.read(tmp_path / "pool")
    assert [p["instance_id"] for p in pool.provenance] == ["log/000001#a", "log/000001#c"]
    assert len(pool.objects) == 2
    assert len(pool.rejected) == 1
    assert pool.card()["rejected"] == 1
    assert "2 objects, 1 rejected" in pool.describe()


@pytest.mark.parametrize(
    ("decisions", "message"),
    [
        (["rejected"], "the pool holds no confirmed object"),
        (["confirmed", "maybe"], "decision 'maybe' of images/b.png is not confirmed or rejected"),
    ],
)
def test_a_pool_without_confirmed_objects_or_with_an_unknown_decision_is_refused(
    tmp_path: Path, decisions: list[str], message: str
) -> None:
    objects = [_object(name, d) for name, d in zip("ab", decisions, strict=False)]
    write_pool_files(tmp_path / "pool", objects)
    with pytest.raises(PoolError, match=message):
        OutlierPool.read(tmp_path / "pool")


def test_a_malformed_entry_names_what_it_lacks(tmp_path: Path) -> None:
    write_pool_files(tmp_path / "pool", [_object("a", None)])
    manifest = tmp_path / "pool" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["objects"].append(["not", "an", "entry"])
    manifest.write_text(json.dumps(data))
    with pytest.raises(PoolError, match="an object lacks its 'image' or 'mask'"):
        OutlierPool.read(tmp_path / "pool")
