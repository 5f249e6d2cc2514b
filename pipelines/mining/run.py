"""``ugains mine``: the Beam mining pipeline, from drive logs to ranked anomaly crops.

The pipeline is a short chain of named transforms::

    FrameSources -> Shard (Reshuffle) -> Decode -> RunInference -> InstancesToRows
        -> LinkTracks -> WriteInstances / WriteTracks / TopObjects (TopCandidates with
        output.rank_by: instance) -> WriteCandidates;  WriteFrames / WriteErrors

Runners: the DirectRunner (default; ``direct_num_workers`` worker processes with
``direct_running_mode: multi_processing``), DataflowRunner, FlinkRunner and SparkRunner take
the usual Beam options on the command line; the DaskRunner and the PrismRunner are refused.

Runs are incremental: frames already in the ledger of the config's fingerprint are skipped;
when nothing is new, the command says so and exits 0 without creating a run directory. A run
writes into a staging place and commits in one step (pipelines/mining/runs.py); a run that fails or
is killed leaves no committed run and no ledger entry, so the next run mines its frames again
(and removes the leftover). While a run of a config is in progress, another run of
the same config exits 75 (EX_TEMPFAIL) at once without doing anything (local output roots).
Scheduling is therefore a plain periodic call, e.g. cron::

    */30 * * * * cd /srv/ugains && .venv/bin/ugains mine --config mining_configs/fleet.yaml

or an Airflow task::

    BashOperator(task_id="mine", bash_command="ugains mine --config /cfg/fleet.yaml "
                 "--runner DataflowRunner --project P --region R --temp_location gs://B/tmp")
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipelines import __version__
from pipelines.config import (
    DemoSource,
    MiningConfig,
    is_local_uri,
)
from pipelines.elements import ReadUnit
from pipelines.mining import preflight
from pipelines.runners import (
    pipeline_options,
    runner_for,
)

if TYPE_CHECKING:  # the command line must start without importing Beam and torch
    import apache_beam as beam

    from pipelines.mining.rows import RunContext
    from pipelines.mining.sources import Plan

__all__ = [
    "MiningResult",
    "RunExistsError",
    "build_pipeline",
    "expand_demo_sources",
    "make_run_id",
    "mine",
    "with_mining_defaults",
]

_LOG = logging.getLogger(__name__)


class RunExistsError(ValueError):
    """The run directory asked for exists already."""


class RunFailedError(RuntimeError):
    """The pipeline failed; the run was not committed and its staging directory is gone."""


@dataclass
class MiningResult:
    """What a mining run did: its directory, row counts and Beam counters."""

    run_id: str | None
    run_dir: str | None
    planned: int
    skipped: int
    counts: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def make_run_id(fingerprint: str, now: datetime | None = None) -> str:
    """``YYYYmmddTHHMMSSZ-<fingerprint>`` in UTC."""
    now = now or datetime.now(UTC)
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{fingerprint}"


def expand_demo_sources(config: MiningConfig) -> MiningConfig:
    """Replace ``kind: demo`` sources by the image source of the demo's world drive log."""
    if not any(isinstance(source, DemoSource) for source in config.sources):
        return config
    from pipelines.world.demo import ensure_demo

    sources = []
    for source in config.sources:
        sources.extend(ensure_demo(source.path) if isinstance(source, DemoSource) else [source])
    return config.model_copy(update={"sources": sources})


def _checkpoint_id(path: str | None, fallback: str) -> str:
    return path or f"random-init:{fallback}"


def build_pipeline(
    pipeline: beam.Pipeline, config: MiningConfig, plan: Plan, ctx: RunContext
) -> None:
    """Add the mining transforms for ``plan`` to ``pipeline``, writing into ``ctx.write_dir``."""
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems

    from pipelines.mining.decode import DecodeFrames
    from pipelines.mining.inference import RunUGainS, UGainSModelHandler
    from pipelines.mining.rows import FailuresToRows, InstancesToRows
    from pipelines.mining.sinks import TopCandidates, WriteTable
    from pipelines.mining.sources import write_plan
    from pipelines.mining.tracks import LinkTracks, TopObjects

    handler = UGainSModelHandler(
        config.models,
        config.inference,
        store_semantic=config.output.store_semantic,
        store_maps=config.output.store_maps,
    )
    inference = config.inference
    model_size = tuple(config.models.method.reference_size)
    compression = config.output.compression

    out = ctx.write_dir
    plan_file = FileSystems.join(out, "plan", "units.jsonl")
    write_plan(plan.units, plan_file)
    units = (
        pipeline
        | "FrameSources" >> beam.io.ReadFromText(plan_file)
        | "ParseUnits" >> beam.Map(ReadUnit.from_json)
    )
    unreadable = pipeline | "UnreadableSources" >> beam.Create(plan.failures, reshuffle=False)
    decoded, decode_failures = (
        units
        | "Shard" >> beam.Reshuffle()
        | "Decode" >> DecodeFrames(model_size, inference.min_image_side, inference.max_image_side)
    )
    results, inference_failures = decoded | "RunInference" >> RunUGainS(
        handler, model_identifier=f"ugains-{ctx.config_fingerprint}"
    )
    instances, frames, row_failures = results | "InstancesToRows" >> InstancesToRows(ctx)
    errors = (
        (unreadable, decode_failures, inference_failures, row_failures)
        | "AllFailures" >> beam.Flatten()
        | "ErrorRows" >> FailuresToRows(ctx)
    )
    output = config.output
    if output.tracks.enabled:
        instances, tracks = instances | "LinkTracks" >> LinkTracks(
            output.tracks, ctx.run_id, ctx.config_fingerprint
        )
        _ = tracks | "WriteTracks" >> WriteTable("tracks", out, compression)
    _ = instances | "WriteInstances" >> WriteTable("instances", out, compression)
    if output.rank_by == "track":
        candidates = {"instances": instances, "tracks": tracks} | "TopObjects" >> TopObjects(output)
    else:
        candidates = instances | "TopCandidates" >> TopCandidates(output.top_n, output.max_per_log)
    _ = candidates | "WriteCandidates" >> WriteTable("candidates", out, compression)
    _ = frames | "WriteFrames" >> WriteTable("frames", out, compression)
    _ = errors | "WriteErrors" >> WriteTable("errors", out, compression)


def _claim(root: str, run_id: str, fingerprint: str) -> str | None:
    """The directory a new run ``run_id`` writes into, or None if the id is taken.

    Local: its staging directory, created atomically, and only while the final directory does
    not exist (pipelines/mining/runs.py). Remote: the final directory, if nothing is in it.
    """
    from apache_beam.io.filesystems import FileSystems

    from pipelines.mining.runs import staging_dir

    run_dir = FileSystems.join(root, "runs", run_id)
    if is_local_uri(root):
        if os.path.exists(run_dir):
            return None
        write_dir = staging_dir(root, fingerprint, run_id)
        os.makedirs(os.path.dirname(write_dir), exist_ok=True)
        try:
            os.mkdir(write_dir)
        except FileExistsError:
            return None
        return write_dir
    if FileSystems.match([FileSystems.join(run_dir, "*")])[0].metadata_list:
        return None
    return run_dir


def _new_run_dir(root: str, run_id: str | None, fingerprint: str) -> tuple[str, str, str]:
    """A run id not taken yet, its final directory and the directory it writes into.

    Two runs must never write into one directory (their part files would mix): a given
    ``run_id`` that is taken is refused; a generated one taken within the same second gets a
    ``-2``, ``-3`` ... suffix.
    """
    from apache_beam.io.filesystems import FileSystems

    if run_id is not None:
        write_dir = _claim(root, run_id, fingerprint)
        if write_dir is None:
            run_dir = FileSystems.join(root, "runs", run_id)
            raise RunExistsError(f"run directory {run_dir} already exists; choose another --run-id")
        return run_id, FileSystems.join(root, "runs", run_id), write_dir
    base = make_run_id(fingerprint)
    for attempt in itertools.count(1):
        run_id = base if attempt == 1 else f"{base}-{attempt}"
        write_dir = _claim(root, run_id, fingerprint)
        if write_dir is not None:
            return run_id, FileSystems.join(root, "runs", run_id), write_dir
    raise AssertionError("unreachable")  # pragma: no cover


def _counters(result: Any) -> dict[str, int]:
    import apache_beam as beam

    try:
        counters = result.metrics().query(beam.metrics.MetricsFilter())["counters"]
    except Exception:  # some runners do not report metrics; the table counts still stand
        return {}
    return {
        c.key.metric.name: int(c.committed or c.attempted or 0)
        for c in counters
        if c.key.metric.namespace == "ugains"
    }


def with_mining_defaults(config: MiningConfig) -> MiningConfig:
    """``config`` with the settings left to the command resolved for mining
    (:meth:`MethodConfig.for_command`: frame gating on unless the config turns it off)."""
    method = config.models.method.for_command("mine")
    if method is config.models.method:
        return config
    models = config.models.model_copy(update={"method": method})
    return config.model_copy(update={"models": models})


def mine(
    config: MiningConfig,
    *,
    beam_args: Sequence[str] = (),
    run_id: str | None = None,
    retry_errors: bool = False,
    ignore_ledger: bool = False,
    check_models: bool = True,
) -> MiningResult:
    """Run the mining pipeline for ``config``; returns what it did.

    Frames in the ledger of the config's fingerprint are skipped (unless ``ignore_ledger``;
    failed frames are retried with ``retry_errors``). The run writes into a staging place and
    commits in one step when its tables are complete (pipelines/mining/runs.py); the ledger is
    updated after the commit, and reconciled with the committed runs before planning, so a
    kill at any moment never mines a frame twice nor loses one.
    """
    import apache_beam as beam

    from pipelines.mining.ledger import Ledger, ledger_lock
    from pipelines.mining.rows import RunContext
    from pipelines.mining.runs import clean_staging, commit_run, crash_point, reconcile_ledger
    from pipelines.mining.schema import TABLES
    from pipelines.mining.sources import plan_sources
    from pipelines.mining.tables import count_rows

    started = time.perf_counter()
    options = pipeline_options(config, beam_args)
    config = with_mining_defaults(expand_demo_sources(config))
    fingerprint = config.fingerprint()
    root = config.output.root
    if is_local_uri(root):
        root = os.path.abspath(root)  # map URIs in the tables must not depend on the cwd
    preflight.check_output_root(root)
    # The lock spans planning (reading the ledger) to recording (writing it), see ledger_lock.
    lock = (
        ledger_lock(config.output.root, fingerprint)
        if config.output.incremental
        else contextlib.nullcontext()
    )
    with lock:
        seen: frozenset[str] = frozenset()
        if config.output.incremental:
            clean_staging(root, fingerprint)  # this config's lock is held: those runs are dead
            ledger = Ledger.load(root, fingerprint)
            if reconcile_ledger(ledger, root, fingerprint):
                ledger.save()
            if not ignore_ledger:
                seen = ledger.seen(retry_errors=retry_errors)
        plan = plan_sources(config.sources, skip_uris=seen)
        if plan.num_frames == 0:
            return MiningResult(None, None, 0, plan.skipped, seconds=time.perf_counter() - started)
        preflight.check_checkpoint_files(config)
        if check_models:
            preflight.check_models(config)

        run_id, run_dir, write_dir = _new_run_dir(root, run_id, fingerprint)
        ctx = RunContext(
            run_id=run_id,
            run_dir=run_dir,
            staging_dir=write_dir if write_dir != run_dir else None,
            config_fingerprint=fingerprint,
            ugains_version=__version__,
            mask2former_checkpoint=_checkpoint_id(
                config.models.mask2former.checkpoint, config.models.mask2former.architecture
            ),
            sam_checkpoint=_checkpoint_id(
                config.models.sam.checkpoint, config.models.sam.model_type
            ),
            crop_margin=config.output.crop_margin,
            min_crop_margin=config.output.min_crop_margin,
            store_maps=config.output.store_maps,
            store_semantic=config.output.store_semantic,
            frames_planned=plan.num_frames,
        )
        _LOG.info(
            "run %s: %d frames to mine (%d already in the ledger) -> %s",
            run_id,
            plan.num_frames,
            plan.skipped,
            run_dir,
        )
        pipeline = beam.Pipeline(runner=runner_for(options), options=options)
        build_pipeline(pipeline, config, plan, ctx)
        try:
            result = pipeline.run()
            result.wait_until_finish()
        except Exception as error:
            if ctx.staging_dir:
                shutil.rmtree(ctx.staging_dir, ignore_errors=True)
            summary = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
            raise RunFailedError(
                f"run {run_id} failed and was not committed ({type(error).__name__}: "
                f"{summary[:500]}); its frames will be mined by the next run"
            ) from error
        crash_point("tables-written")

        counts = {table: count_rows(write_dir, table) for table in TABLES}
        mining = MiningResult(
            run_id,
            run_dir,
            plan.num_frames,
            plan.skipped,
            counts,
            _counters(result),
            time.perf_counter() - started,
        )
        commit_run(write_dir, run_dir, _run_record(config, ctx, mining))
        if config.output.incremental:
            ledger = Ledger.load(root, fingerprint)
            ledger.record_run(run_dir, run_id)
            ledger.save()
        return mining


def _run_record(config: MiningConfig, ctx: RunContext, result: MiningResult) -> dict[str, Any]:
    """The content of ``run.json``, the file that commits a run."""
    return {
        "run_id": ctx.run_id,
        "config_name": config.name,
        "config_fingerprint": ctx.config_fingerprint,
        "ugains_version": ctx.ugains_version,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "checkpoints": {"mask2former": ctx.mask2former_checkpoint, "sam": ctx.sam_checkpoint},
        "frames_planned": result.planned,
        "frames_skipped_by_ledger": result.skipped,
        "counts": result.counts,
        "counters": result.counters,
        "seconds": round(result.seconds, 3),
        "config": config.model_dump(mode="json"),
    }
