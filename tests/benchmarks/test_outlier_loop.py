"""benchmarks/outlier_loop.py in small: one round of mine -> confirm -> fine-tune -> measure."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks.outlier_loop import (
    HELD_OUT_LOG,
    POOL_LOG,
    ROUND_MODELS,
    format_table,
    generate_training_world,
    run_loop,
)
from models.zoo import resolve_zoo_path
from pipelines.mining.tables import read_table

pytestmark = pytest.mark.slow


def test_one_round_pools_confirmed_objects_fine_tunes_and_measures_before_and_after(
    tmp_path: Path,
) -> None:
    training = generate_training_world(tmp_path / "train", train=6, ood=3)
    sam = tmp_path / "sam.pth"  # SAM weights of one's own: here the shipped file, copied
    shutil.copyfile(resolve_zoo_path("zoo:world_sam_vit_tiny_512.pth"), sam)
    result = run_loop(
        tmp_path / "work",
        seed=11,
        test_frames=4,
        log_frames=16,
        anomaly_fraction=0.6,
        training_world=training,
        steps=2,
        top=20,
        rounds=("1", "2", "2t"),  # round 0 and 2c are measured the same way
        sam=str(sam),
    )
    manifest = json.loads((tmp_path / "work" / "pool" / "manifest.json").read_text())
    decisions = [o["decision"] for o in manifest["objects"]]
    assert result.pool_objects == decisions.count("confirmed") >= 1
    assert result.pool_rejected == decisions.count("rejected")
    assert {o["log_id"] for o in manifest["objects"]} == {POOL_LOG}  # never the held-out log
    card = json.loads((tmp_path / "work" / "round2" / "metrics.json").read_text())
    pooled = [o["instance_id"] for o in card["outlier_pool"]["objects"]]
    confirmed = [o["instance_id"] for o in manifest["objects"] if o["decision"] == "confirmed"]
    assert pooled == confirmed  # provenance in the card
    assert card["outlier_pool"]["rejected"] == result.pool_rejected
    truth = json.loads((tmp_path / "work" / "pool_truth" / "manifest.json").read_text())
    assert result.truth_objects == len(truth["objects"]) >= result.pool_objects
    assert {o["log_id"] for o in truth["objects"]} == {POOL_LOG}
    ceiling = json.loads((tmp_path / "work" / "round2t" / "metrics.json").read_text())
    assert {o["run_id"] for o in ceiling["outlier_pool"]["objects"]} == {"ground-truth"}
    assert [r.round for r in result.rounds] == ["1", "2", "2t"]
    assert result.rounds[0].model == ROUND_MODELS["1"]
    assert Path(result.rounds[1].model) == tmp_path / "work" / "round2" / "model"
    for r in result.rounds:
        assert {row["frames"] for row in r.evaluation.values()} == {4}
        assert r.planted == result.rounds[0].planted > 0  # the same held-out log each round
        assert sum(n for _, n in r.kind_recall.values()) == r.planted
    for mined in ("mine_pool", "mine_round1", "mine_round2", "mine_round2t"):
        (run,) = (tmp_path / "work" / mined / "runs").iterdir()
        instances = read_table(str(run), "instances").column("sam_checkpoint").to_pylist()
        assert set(instances) == {str(sam)}  # every round mined with the SAM given
    table = format_table(result)
    assert table.count("\n| ") == 3  # a row per round below the header
    assert f"round 2t's pool: {result.truth_objects} planted sightings" in table
    assert HELD_OUT_LOG not in json.dumps(manifest)
