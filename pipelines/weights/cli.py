"""``ugains weights fetch|list``: the command line of :mod:`pipelines.weights`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.weights.cache import default_cache_dir, fetch, list_cached
from pipelines.weights.catalogue import WEIGHTS, get_spec
from pipelines.weights.download import DEFAULT_TIMEOUT_S
from pipelines.weights.errors import WeightsError

__all__ = ["configure_parser", "run"]


def _human(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add ``fetch`` and ``list`` to the ``ugains weights`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where checkpoints are kept (default: $UGAINS_CACHE or ~/.cache/ugains/weights)",
    )
    actions = parser.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    fetch_help = "download, verify and unpack checkpoints; print the config to use them"
    fetch_parser = actions.add_parser(
        "fetch",
        parents=[common],
        help=fetch_help,
        description=(
            f"{fetch_help}. A broken download resumes when the command is run again; the "
            "file's SHA-256 must match the published one (SAM) or the one recorded at its "
            "first download; RbA zips are unpacked to model_final.pth. Offline, the error "
            "names the URL to fetch by hand and where to put the file."
        ),
    )
    fetch_parser.add_argument("names", nargs="+", metavar="NAME", help=", ".join(WEIGHTS))
    fetch_parser.add_argument("--url", help="download from this URL instead (one NAME only)")
    fetch_parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    fetch_parser.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT_S,
        help="seconds to wait for a connection or for data (default: %(default)s)",
    )
    list_help = "show cached and known checkpoints"
    actions.add_parser("list", parents=[common], help=list_help, description=list_help)


def run(args: argparse.Namespace) -> int:
    """Run ``ugains weights fetch|list``; errors go to stderr with exit status 1."""
    try:
        if args.weights_command == "fetch":
            return _run_fetch(args)
        return _run_list(args)
    except WeightsError as error:
        print(f"ugains weights: error: {error}", file=sys.stderr)
        return 1


def _run_fetch(args: argparse.Namespace) -> int:
    if args.url and len(args.names) > 1:
        raise WeightsError("--url applies to a single NAME")
    specs = [get_spec(name) for name in args.names]  # all names checked before any download
    for spec in specs:
        path = fetch(
            spec.name,
            args.cache_dir,
            url=args.url,
            progress=not args.no_progress,
            timeout=args.timeout,
        )
        print(f"{spec.name}: {path}")
        print("# in the mining config:")
        print(spec.snippet(path))
    return 0


def _run_list(args: argparse.Namespace) -> int:
    cache_dir = args.cache_dir or default_cache_dir()
    cached = list_cached(cache_dir)
    print(f"cache: {cache_dir}")
    if cached:
        width = max(len(entry.name) for entry in cached)
        for entry in cached:
            where = str(entry.path) if entry.present else f"{entry.path} (missing)"
            size = _human(entry.size)
            print(f"  {entry.name:<{width}}  {size:>10}  sha256:{entry.sha256[:12]}  {where}")
    else:
        print("  (nothing cached)")
    print("known:")
    width = max(len(name) for name in WEIGHTS)
    for spec in WEIGHTS.values():
        print(f"  {spec.name:<{width}}  {spec.kind:<11}  {spec.url}")
    return 0
