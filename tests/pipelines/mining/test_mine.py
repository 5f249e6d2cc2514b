"""The mining pipeline end to end on generated frames with tiny random-init models.

One module-scoped log and one set of checkpoints (written by the demo's own code) serve
every test; the models are the real architectures, saved to disk and loaded back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from apache_beam.options.pipeline_options import DirectOptions, StandardOptions
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from pycocotools import mask as mask_utils

from models.untrained import MASK2FORMER_DIR, SAM_FILE, write_checkpoints
from pipelines.cli import main
from pipelines.config import MiningConfig, parse_config
from pipelines.elements import DecodedFrame, FrameRef
from pipelines.mining.cli import EXIT_RUN_IN_PROGRESS
from pipelines.mining.inference import RunUGainS, UGainSModelHandler
from pipelines.mining.ledger import Ledger, RunInProgressError, ledger_lock
from pipelines.mining.preflight import ModelLoadError
from pipelines.mining.run import (
    RunExistsError,
    _new_run_dir,
    build_pipeline,
    make_run_id,
    mine,
    with_mining_defaults,
)
from pipelines.mining.schema import TABLES
from pipelines.mining.tables import read_table, table_files
from pipelines.runners import UnsupportedRunnerError, pipeline_options, runner_for

MODEL_SIZE = [64, 128]
IN_MEMORY = ["--runner=FnApiRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("checkpoints")
    write_checkpoints(root)
    return root


@pytest.fixture(scope="module")
def drive_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good frames of three sizes and every kind of awkward or broken input."""
    root = tmp_path_factory.mktemp("logs")
    log = root / "cam"
    log.mkdir()
    rng = np.random.default_rng(0)

    def noise(*shape: int, dtype=np.uint8, high: int = 256) -> np.ndarray:
        return rng.integers(0, high, shape, dtype=dtype)

    cv2.imwrite(str(log / "a_model_size.png"), noise(64, 128, 3))
    cv2.imwrite(str(log / "b_double.png"), noise(128, 256, 3))
    cv2.imwrite(str(log / "c_odd.png"), noise(45, 99, 3))
    cv2.imwrite(str(log / "d_gray.png"), noise(64, 128))
    cv2.imwrite(str(log / "e_rgba.png"), noise(64, 128, 4))
    cv2.imwrite(str(log / "f_deep.png"), noise(64, 128, 3, dtype=np.uint16, high=65536))
    (log / "g_empty.png").write_bytes(b"")
    _, data = cv2.imencode(".png", noise(64, 128, 3))
    (log / "h_truncated.png").write_bytes(data.tobytes()[: len(data) // 3])
    cv2.imwrite(str(log / "i_tiny.png"), noise(4, 4, 3))
    video = root / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (128, 64))
    for _ in range(3):
        writer.write(noise(64, 128, 3))
    writer.release()
    payload = video.read_bytes()
    (root / "truncated.avi").write_bytes(payload[: len(payload) // 2])
    (root / "zero.avi").write_bytes(b"")
    # A manifest whose rows are all bad: a timestamp that is no number, a row without a URI.
    (root / "bad_rows.csv").write_text(
        f"log_id,frame_uri,timestamp\nm,{root / 'later.png'},soon\nm,,1\n"
    )
    return root


# Frame keys: the log's images sorted by name, and the truncated video's frames (its header
# still says 3 frames; the third is cut off).
GOOD = [*(f"cam/{i:06d}" for i in range(6)), "truncated/000000", "truncated/000001"]
BAD = [
    *("cam/000006", "cam/000007", "cam/000008", "truncated/000002"),
    *("m/000000", "m/000001", "zero/000000"),  # failed while planning: stage "read"
]


def make_config(checkpoints: Path, log: Path, root: Path, **method: object) -> MiningConfig:
    """The test log's config as ``mine`` runs it (mining defaults resolved, as in its ledger)."""
    config = parse_config(
        {
            "name": "test",
            "sources": [
                {"kind": "images", "path": str(log / "cam")},
                {"kind": "video", "path": str(log / "truncated.avi")},
                {"kind": "video", "path": str(log / "zero.avi")},
                {"kind": "manifest", "path": str(log / "bad_rows.csv")},
            ],
            "models": {
                "device": "cpu",
                "mask2former": {
                    "format": "huggingface",
                    "architecture": "tiny_1dl",
                    "checkpoint": str(checkpoints / MASK2FORMER_DIR),
                },
                "sam": {"model_type": "vit_tiny", "checkpoint": str(checkpoints / SAM_FILE)},
                "method": {
                    "reference_size": MODEL_SIZE,
                    "num_points": 2,
                    "fallback_threshold": -1000.0,  # untrained scores: let every pixel prompt
                    **method,
                },
            },
            "inference": {"min_batch_size": 1, "max_batch_size": 2, "min_image_side": 16},
            "output": {"root": str(root), "top_n": 5, "min_crop_margin": 2},
        }
    )
    return with_mining_defaults(config)


def stem(uri: str) -> str:
    return Path(uri.split("#")[0]).stem


def test_mining_runs_reruns_and_restarts_on_a_changed_config(
    checkpoints: Path, drive_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(checkpoints, drive_log, tmp_path)

    def overlapping_run_finishes(pipeline, config, plan, ctx) -> None:
        # Another run of this config (cron) saves the ledger while this one is running.
        other = Ledger.load(str(tmp_path), config.fingerprint())
        other.entries["elsewhere.png"] = ("x/000000", "ok", "run-0")
        other.save()
        build_pipeline(pipeline, config, plan, ctx)

    monkeypatch.setattr("pipelines.mining.run.build_pipeline", overlapping_run_finishes)
    first = mine(config, beam_args=IN_MEMORY, run_id="run-1")
    monkeypatch.undo()
    ledger = Ledger.load(str(tmp_path), config.fingerprint()).entries
    assert ledger.pop("elsewhere.png") == ("x/000000", "ok", "run-0")
    assert sorted(key for key, _, _ in ledger.values()) == sorted(GOOD + BAD)

    run_dir = Path(first.run_dir)
    assert run_dir == tmp_path / "runs" / "run-1"
    # Every table has exactly its declared schema, metadata included.
    for table, schema in TABLES.items():
        files = table_files(str(run_dir), table)
        assert files, table
        assert all(pq.read_schema(f).equals(schema, check_metadata=True) for f in files)
    frames = read_table(str(run_dir), "frames").to_pylist()
    errors = read_table(str(run_dir), "errors").to_pylist()
    instances = read_table(str(run_dir), "instances").to_pylist()
    candidates = read_table(str(run_dir), "candidates").to_pylist()

    # Every input ends in exactly one of frames / errors.
    assert sorted(r["frame_key"] for r in frames) == GOOD
    assert sorted(r["frame_key"] for r in errors) == sorted(BAD)
    reasons = {stem(r["frame_uri"]): (r["stage"], r["reason"]) for r in errors}
    assert reasons["g_empty"] == ("decode", f"{drive_log}/cam/g_empty.png: file is empty (0 bytes)")
    assert "not a decodable image (corrupt or truncated file)" in reasons["h_truncated"][1]
    assert "4x4 pixels is smaller than inference.min_image_side=16" in reasons["i_tiny"][1]
    assert "frame 2 cannot be read (the video ends early" in reasons["truncated"][1]
    assert reasons["zero"] == ("read", f"video {drive_log}/zero.avi is empty (0 bytes)")
    read = sorted(r["reason"].split(": ", 1)[1] for r in errors if r["log_id"] == "m")
    assert read == ["row 2 has a timestamp that is not a number: 'soon'", "row 3 has no frame_uri"]
    assert sorted(stem(r["frame_uri"]) for r in frames)[:6] == [
        "a_model_size",
        "b_double",
        "c_odd",
        "d_gray",
        "e_rgba",
        "f_deep",
    ]
    sizes = {stem(r["frame_uri"]): (r["frame_height"], r["frame_width"]) for r in frames}
    assert sizes["b_double"] == (128, 256)
    assert sizes["c_odd"] == (45, 99)
    for row in frames:
        # Fused-score maps (model size, 8 bit, scale in the row) for frames with instances.
        if row["num_instances"] == 0:
            assert row["fused_map_uri"] is None
            continue
        assert row["fused_map_uri"].startswith(f"{run_dir}/maps/")
        fused = cv2.imread(row["fused_map_uri"], cv2.IMREAD_UNCHANGED)
        assert (fused.shape, fused.dtype) == (tuple(MODEL_SIZE), np.uint8)
        assert row["fused_map_min"] <= row["max_fused_score"] == row["fused_map_max"]
    per_frame = {r["frame_key"]: r["num_instances"] for r in frames}
    assert sum(per_frame.values()) == len(instances) > 0

    for row in instances:
        height, width = row["frame_height"], row["frame_width"]
        rle = {"size": [height, width], "counts": row["mask_rle"].encode()}
        mask = mask_utils.decode(rle).astype(bool)
        ys, xs = np.nonzero(mask)
        assert mask.sum() == row["area"] > 0
        assert (xs.min(), ys.min()) == (row["bbox_x"], row["bbox_y"])
        assert xs.max() + 1 == row["bbox_x"] + row["bbox_w"]
        assert ys.max() + 1 == row["bbox_y"] + row["bbox_h"]
        crop = cv2.imdecode(np.frombuffer(row["crop_png"], np.uint8), cv2.IMREAD_UNCHANGED)
        assert crop.shape == (row["crop_h"], row["crop_w"], 3)
        assert row["crop_x"] == max(row["bbox_x"] - max(-(-row["bbox_w"] // 4), 2), 0)
        assert row["crop_x"] + row["crop_w"] >= row["bbox_x"] + row["bbox_w"]
        assert 0 <= row["point_x"] < width
        assert 0 <= row["point_y"] < height
        assert row["config_fingerprint"] == config.fingerprint()
        assert row["run_id"] == "run-1"

    # Every instance is in exactly one track of its log; each track is named by its first
    # sighting and counts its instances and frames.
    tracks = read_table(str(run_dir), "tracks").to_pylist()
    members: dict[str, list[dict]] = {}
    for row in instances:
        members.setdefault(row["track_id"], []).append(row)
    assert sorted(members) == sorted(t["track_id"] for t in tracks)
    for track in tracks:
        sightings = sorted(members[track["track_id"]], key=lambda r: r["frame_index"])
        assert {r["log_id"] for r in sightings} == {track["log_id"]}
        assert track["track_id"] == sightings[0]["instance_id"]
        assert track["instances"] == len(sightings)
        assert track["frames_seen"] == len({r["frame_key"] for r in sightings})
        best = max(sightings, key=lambda r: (r["score"], r["instance_id"]))
        assert track["best_instance_id"] == best["instance_id"]

    # candidates = the top-N objects: each track's best sighting, by descending score.
    top = sorted(tracks, key=lambda t: (t["best_score"], t["best_instance_id"]), reverse=True)[:5]
    assert [r["rank"] for r in candidates] == list(range(1, len(top) + 1))
    assert [r["instance_id"] for r in candidates] == [t["best_instance_id"] for t in top]
    assert [r["track_frames"] for r in candidates] == [t["frames_seen"] for t in top]

    record = json.loads((run_dir / "run.json").read_text())
    assert record["counts"] == {
        "instances": len(instances),
        "candidates": len(candidates),
        "tracks": len(tracks),
        "frames": len(GOOD),
        "errors": len(BAD),
    }
    names = ("frames_read", "frames_processed", "frames_failed", "instances")
    assert {name: first.counters[name] for name in names} == {
        "frames_read": len(GOOD),
        "frames_processed": len(GOOD),
        "frames_failed": len(BAD),
        "instances": len(instances),
    }

    # Same logs, same config: nothing new, no run directory.
    second = mine(config, beam_args=IN_MEMORY)
    assert (second.run_dir, second.planned, second.skipped) == (None, 0, len(GOOD) + len(BAD))
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["run-1"]

    # A changed method (a new fingerprint) mines everything again into a new run.
    changed = make_config(checkpoints, drive_log, tmp_path, mode="rba")
    assert changed.fingerprint() != config.fingerprint()
    third = mine(changed, beam_args=IN_MEMORY, run_id="run-2")
    assert third.planned == len(GOOD) + len(BAD)
    assert (third.counts["frames"], third.counts["errors"]) == (len(GOOD), len(BAD))
    assert sorted(p.name for p in (tmp_path / "ledger").iterdir()) == sorted(
        f"{fingerprint}.{suffix}"
        for fingerprint in (config.fingerprint(), changed.fingerprint())
        for suffix in ("parquet", "lock")  # the lock file stays; the lock itself is gone
    )


@pytest.mark.parametrize("shared", [False, True], ids=["in-process", "shared-across-processes"])
def test_a_failing_frame_does_not_fail_its_batch_mates(
    checkpoints: Path, tmp_path: Path, shared: bool
) -> None:
    config = make_config(checkpoints, tmp_path, tmp_path, mode="rba")
    inference = config.inference.model_copy(
        update={"min_batch_size": 3, "max_batch_size": 3, "share_model_across_processes": shared}
    )
    handler = UGainSModelHandler(config.models, inference)
    assert handler.share_model_across_processes() is shared
    rng = np.random.default_rng(1)

    def frame(key: str, model_image: np.ndarray) -> DecodedFrame:
        return DecodedFrame(FrameRef(key, f"{key}.png", "log", 0), model_image, model_image, 1.0)

    good = rng.integers(0, 256, (*MODEL_SIZE, 3), dtype=np.uint8)
    frames = [frame("good-1", good), frame("bad", good[..., 0]), frame("good-2", good)]
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        results, failures = p | beam.Create(frames) | RunUGainS(handler, f"test-model-{shared}")
        assert_that(results | "Keys" >> beam.Map(lambda kv: kv[0]), equal_to(["good-1", "good-2"]))
        assert_that(
            failures | "Failed" >> beam.Map(lambda f: (f.ref.key, f.stage, f.error_type)),
            equal_to([("bad", "inference", "ValueError")]),
            label="failures",
        )


def test_a_model_that_cannot_load_stops_the_run_before_it_starts(
    checkpoints: Path, drive_log: Path, tmp_path: Path
) -> None:
    config = make_config(checkpoints, drive_log, tmp_path)
    broken = config.model_copy(
        update={
            "models": config.models.model_copy(
                update={"sam": config.models.sam.model_copy(update={"checkpoint": "missing.pth"})}
            )
        }
    )
    with pytest.raises(ModelLoadError, match=r"missing\.pth"):
        mine(broken, beam_args=IN_MEMORY)
    assert not (tmp_path / "runs").exists()


def test_runner_options_come_from_the_config_and_the_command_line_wins() -> None:
    config = parse_config(
        {"runner": {"options": {"max_num_workers": 3, "save_main_session": True}}}
    )
    options = pipeline_options(config, ["--direct_num_workers=4"])
    assert options.view_as(StandardOptions).runner == "DirectRunner"
    assert options.view_as(DirectOptions).direct_num_workers == 4
    assert options.view_as(DirectOptions).direct_running_mode == "multi_processing"
    assert options.get_all_options()["max_num_workers"] == 3
    assert options.get_all_options()["save_main_session"] is True


@pytest.mark.parametrize(
    ("flags", "level", "overrides"),
    [
        ([], "WARNING", {"pipelines": "INFO", "models": "INFO", "transforms": "INFO"}),
        (
            [
                "--default_sdk_harness_log_level=DEBUG",
                '--sdk_harness_log_level_overrides={"models": "ERROR"}',
            ],
            "DEBUG",
            {"pipelines": "INFO", "models": "ERROR", "transforms": "INFO"},
        ),
    ],
    ids=["defaults", "options-win"],
)
def test_direct_runner_workers_log_beam_at_warning_and_ugains_progress_at_info(
    flags: list[str], level: str, overrides: dict[str, str]
) -> None:
    # What the worker subprocess reads: the provision info's options, as JSON in its env.
    from apache_beam.runners.worker.sdk_worker_main import _load_pipeline_options
    from google.protobuf import json_format

    runner = runner_for(pipeline_options(parse_config({}), flags))
    provision = runner._provision_info.provision_info
    seen = _load_pipeline_options(json_format.MessageToJson(provision.pipeline_options))
    assert seen == {
        "default_sdk_harness_log_level": level,
        "sdk_harness_log_level_overrides": overrides,
    }
    assert runner_for(pipeline_options(parse_config({}), ["--runner=FlinkRunner"])) == "FlinkRunner"


@pytest.mark.parametrize("runner", ["DaskRunner", "dask", "PrismRunner"])
def test_dask_and_prism_runners_are_refused(runner: str) -> None:
    with pytest.raises(UnsupportedRunnerError, match=f"runner {runner} is not supported"):
        pipeline_options(MiningConfig(), [f"--runner={runner}"])


def test_run_id_is_utc_time_and_fingerprint() -> None:
    from datetime import UTC, datetime

    when = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert make_run_id("0123456789ab", when) == "20260304T050607Z-0123456789ab"


def test_a_run_never_writes_into_an_existing_run_directory(
    checkpoints: Path, drive_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(checkpoints, drive_log, tmp_path)
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    with pytest.raises(RunExistsError, match=r"runs/taken already exists"):
        mine(config, beam_args=IN_MEMORY, run_id="taken", check_models=False)
    # Generated ids that collide (two runs in one second) get a suffix instead.
    monkeypatch.setattr("pipelines.mining.run.make_run_id", lambda fingerprint: f"T-{fingerprint}")
    claimed = [_new_run_dir(str(tmp_path), None, "fp") for _ in range(3)]
    assert [run_id for run_id, _, _ in claimed] == ["T-fp", "T-fp-2", "T-fp-3"]
    # Each writes into its own staging directory; none is visible under runs/ before it commits.
    for run_id, run_dir, write_dir in claimed:
        assert run_dir == str(tmp_path / "runs" / run_id)
        assert write_dir == str(tmp_path / "runs" / ".staging" / "fp" / run_id)
        assert Path(write_dir).is_dir()
        assert not Path(run_dir).exists()


def _committed_frames(root: Path) -> list[str]:
    """Frame keys in the frames and errors of every committed run (duplicates kept)."""
    keys = []
    for run_dir in sorted((root / "runs").iterdir()):
        if run_dir.name.startswith(".") or not (run_dir / "run.json").exists():
            continue
        for table in ("frames", "errors"):
            keys += read_table(str(run_dir), table).column("frame_key").to_pylist()
    return keys


@pytest.mark.parametrize("moment", ["inference", "tables-written", "committed"])
def test_a_run_killed_at_any_moment_is_followed_by_a_rerun_that_mines_each_frame_once(
    checkpoints: Path, drive_log: Path, tmp_path: Path, moment: str
) -> None:
    """kill -9 of a real `ugains mine` process during inference, after its tables are
    finalised (before the commit) and after the commit (before the ledger update)."""
    config = make_config(checkpoints, drive_log, tmp_path, mode="rba")
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    command = [sys.executable, "-m", "pipelines.cli", "mine", "--config", str(config_file)]
    env = {**os.environ, "UGAINS_CRASH_AT": moment}
    killed = subprocess.run([*command, *IN_MEMORY], env=env, capture_output=True, timeout=300)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    staged = list((tmp_path / "runs" / ".staging").glob("*/*"))
    if moment == "committed":
        assert not staged
        assert len(_committed_frames(tmp_path)) == len(GOOD) + len(BAD)
    else:  # nothing visible: only a staging directory, never read as results
        assert len(staged) == 1
        assert _committed_frames(tmp_path) == []

    rerun = mine(config, beam_args=IN_MEMORY, check_models=False)

    assert sorted(_committed_frames(tmp_path)) == sorted(GOOD + BAD)  # each exactly once
    assert not (tmp_path / "runs" / ".staging").exists() or not any(
        (tmp_path / "runs" / ".staging").glob("*/*")
    )
    ledger = Ledger.load(str(tmp_path), config.fingerprint())
    assert sorted(key for key, _, _ in ledger.entries.values()) == sorted(GOOD + BAD)
    if moment == "committed":  # the ledger was reconciled from the committed run
        assert rerun.run_dir is None
        assert rerun.planned == 0


def test_a_run_of_a_config_already_running_starts_nothing_and_exits_75(
    checkpoints: Path, drive_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A cron interval shorter than a run: the second call must not plan the same frames.
    config = make_config(checkpoints, drive_log, tmp_path)
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    with ledger_lock(str(tmp_path), config.fingerprint()):
        with pytest.raises(RunInProgressError, match=r"still in progress \(\{\"pid\""):
            mine(config, beam_args=IN_MEMORY, check_models=False)
        assert main(["mine", "--config", str(config_file), *IN_MEMORY]) == EXIT_RUN_IN_PROGRESS
    assert "another run of this config" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "ledger" / f"{config.fingerprint()}.parquet").exists()

    # Runs of another config are not held up by it.
    other = make_config(checkpoints, drive_log, tmp_path, num_points=1)
    with (
        ledger_lock(str(tmp_path), config.fingerprint()),
        ledger_lock(str(tmp_path), other.fingerprint()),
    ):
        pass


def test_the_command_refuses_the_dask_runner_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("name: c\n")

    assert main(["mine", "--config", str(config), "--runner", "DaskRunner"]) == 2

    error = capsys.readouterr().err
    assert "ugains mine: runner DaskRunner is not supported" in error
    assert "drops the last partial batch" in error


def test_the_command_names_the_bad_config_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("inference:\n  min_batch_size: 8\n  max_batch_sise: 9\n")

    assert main(["mine", "--config", str(config)]) == 2

    error = capsys.readouterr().err
    assert "inference.max_batch_sise: unknown key" in error


def _config_file(config: MiningConfig, path: Path, **output: object) -> Path:
    data = config.model_dump(mode="json")
    data["output"].update(output)
    path.write_text(yaml.safe_dump(data))
    return path


def test_an_output_root_that_cannot_be_written_is_one_line_before_models_load(
    checkpoints: Path, drive_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a_file").write_text("")
    root = tmp_path / "a_file" / "out"
    config = _config_file(
        make_config(checkpoints, drive_log, tmp_path), tmp_path / "c.yaml", root=str(root)
    )
    assert main(["mine", "--config", str(config), *IN_MEMORY]) == 2
    captured = capsys.readouterr()
    assert (
        captured.err.strip()
        == f"ugains mine: output.root {root} cannot be written: Not a directory"
    )
    assert "models load" not in captured.err


def test_skip_model_check_still_refuses_a_checkpoint_that_needs_code_and_leaves_no_run(
    checkpoints: Path, drive_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (open, (str(marker), "w"))

    evil = tmp_path / "sam.pth"
    torch.save({"payload": Payload()}, evil)
    config = make_config(checkpoints, drive_log, tmp_path)
    data = config.model_dump(mode="json")
    data["models"]["sam"]["checkpoint"] = str(evil)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    argv = ["mine", "--config", str(tmp_path / "c.yaml"), "--skip-model-check", *IN_MEMORY]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"refusing to load {str(evil)!r}" in err
    assert "io.open" in err
    assert not marker.exists()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.parquet"))


def test_mining_gates_frames_by_default_and_evaluation_settings_are_kept() -> None:
    unset = parse_config({})
    assert unset.models.method.frame_gating is None
    assert with_mining_defaults(unset).models.method.frame_gating is True
    explicit = parse_config({"models": {"method": {"frame_gating": False}}})
    assert with_mining_defaults(explicit) == explicit


def test_gated_frames_are_processed_frames_without_instances(
    checkpoints: Path, drive_log: Path, tmp_path: Path
) -> None:
    # U <= 0 everywhere, so with a threshold of 0.5 every good frame is gated.
    config = make_config(checkpoints, drive_log, tmp_path, candidate_threshold=0.5)
    result = mine(config, beam_args=IN_MEMORY)
    frames = read_table(result.run_dir, "frames").to_pylist()
    assert sorted(row["frame_key"] for row in frames) == sorted(GOOD)
    assert {row["status"] for row in frames} == {"gated"}
    assert {row["num_instances"] for row in frames} == {0}
    assert result.counts["instances"] == 0


def test_the_same_inputs_config_and_weights_give_the_same_candidates(
    checkpoints: Path, drive_log: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(checkpoints, drive_log, tmp_path)
    runs = [mine(config, beam_args=IN_MEMORY, ignore_ledger=True) for _ in range(2)]
    tables = [read_table(run.run_dir, "candidates").drop_columns(["run_id"]) for run in runs]
    assert tables[0].num_rows > 0
    assert tables[0].equals(tables[1])
    # The first run's frames now name the second run in the ledger; the first is still a
    # recorded run, not one "killed before its ledger update".
    caplog.clear()
    assert mine(config, beam_args=IN_MEMORY).planned == 0
    assert "not in the ledger" not in caplog.text
