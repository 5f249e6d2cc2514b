"""The Dataflow job for mining_configs/dataflow_gpu.yaml builds offline (Beam's dry run).

The DataflowRunner translates the mining pipeline into a Runner v2 job and stops before
submitting it (``--dry_run=True``; the project, region and bucket are made up). What a real
submission would send is checked: the named stages, the GPU service options and worker
threads from the config, setup.py packaged for the workers, and the worker image if given.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("google.cloud.storage", reason="the Dataflow runner needs the gcp extra")

REPO = Path(__file__).resolve().parents[2]
IMAGE = "us-central1-docker.pkg.dev/test-project/ugains/ugains-gpu:1"
STAGES = {
    "FrameSources",
    "ParseUnits",
    "UnreadableSources",
    "Shard",
    "Decode",
    "RunInference",
    "InstancesToRows",
    "AllFailures",
    "ErrorRows",
    "LinkTracks",
    "WriteTracks",
    "WriteInstances",
    "TopObjects",
    "WriteCandidates",
    "WriteFrames",
    "WriteErrors",
}


def test_the_dataflow_gpu_job_builds_offline_with_the_configs_worker_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import (
        DebugOptions,
        GoogleCloudOptions,
        SetupOptions,
    )

    from pipelines.config import ImageSource, load_config
    from pipelines.mining.rows import RunContext
    from pipelines.mining.run import build_pipeline, with_mining_defaults
    from pipelines.mining.sources import plan_sources
    from pipelines.runners import pipeline_options, runner_for

    monkeypatch.chdir(REPO)  # the config stages ./setup.py, as from the repository root
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((64, 128, 3), np.uint8))
    config = with_mining_defaults(load_config(REPO / "mining_configs" / "dataflow_gpu.yaml"))
    # The config's gs:// sources cannot be listed offline; a local one stands in.
    config = config.model_copy(update={"sources": [ImageSource(path=str(images), log_id="x")]})
    options = pipeline_options(
        config,
        [
            "--project=test-project",
            "--region=us-central1",
            "--temp_location=gs://ugains-test-bucket/tmp",
            "--staging_location=gs://ugains-test-bucket/staging",
            f"--sdk_container_image={IMAGE}",
            "--dry_run=True",
        ],
    )
    ctx = RunContext(
        run_id="r",
        run_dir=str(tmp_path / "run"),
        config_fingerprint="test",  # the real one reads the gs:// checkpoints' metadata
        ugains_version="test",
        mask2former_checkpoint=config.models.mask2former.checkpoint,
        sam_checkpoint=config.models.sam.checkpoint,
    )
    runner = runner_for(options)
    assert runner == "DataflowRunner"
    pipeline = beam.Pipeline(runner=runner, options=options)
    build_pipeline(pipeline, config, plan_sources(config.sources), ctx)

    job = pipeline.run().job  # built, not submitted

    names = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    assert names >= STAGES
    sent = job.options
    assert sent.view_as(GoogleCloudOptions).dataflow_service_options == [
        "worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver"
    ]
    assert sent.view_as(DebugOptions).number_of_worker_harness_threads == 1
    assert sent.view_as(SetupOptions).setup_file == "./setup.py"
    (environment,) = job.proto_pipeline.components.environments.values()
    assert IMAGE.encode() in environment.payload
    staged = b" ".join(d.role_payload for d in environment.dependencies)
    assert b"workflow.tar.gz" in staged  # setup.py's package, built for the workers
    assert os.path.exists(REPO / "setup.py")
