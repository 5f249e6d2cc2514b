"""``ugains weights``: download, verify, unpack and list the checkpoints a user brings.

The known checkpoints are in :data:`WEIGHTS` (SAM, the RbA model zoo, UGainS). ``fetch``
downloads one into a cache directory (``$UGAINS_CACHE``, else ``~/.cache/ugains/weights``):

- the download goes to ``<cache>/<name>/<file>.part`` and resumes with an HTTP Range request
  after a broken connection, within one call and across calls;
- the file is checked against its SHA-256: a published one where known, otherwise the one
  recorded in ``<cache>/registry.json`` by the first successful download;
- only then is it renamed into place (or, for the RbA zips, ``model_final.pth`` is extracted);
- a lock file per name keeps concurrent fetches of one name from interleaving.

Nothing here runs during mining: weights are fetched once, by hand, and the mining config
names the local path (DESIGN.md: no network at run time).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import hashlib
import http.client
import json
import logging
import os
import re
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from tqdm import tqdm

from pipelines import __version__
from pipelines.locks import file_lock

log = logging.getLogger(__name__)

WeightKind = Literal["sam", "rba", "ugains", "ignore_mask"]

REGISTRY_FILE = "registry.json"
DEFAULT_TIMEOUT_S = 10.0  # connect (and per-read stall) timeout: offline fails fast
RESUME_ATTEMPTS = 3  # automatic resumes per call, only after a connection that made progress
_CHUNK = 1 << 20


class WeightsError(RuntimeError):
    """A checkpoint that cannot be fetched or used; the message says what to do."""


class DownloadError(WeightsError):
    """The server could not be reached, refused the file, or the transfer broke off."""


class ChecksumError(WeightsError):
    """A downloaded or hand-placed file whose SHA-256 is not the expected one."""


@dataclass(frozen=True)
class WeightSpec:
    """One known checkpoint: where it comes from and how a mining config names it.

    ``filename`` is the name of what ``url`` serves; ``member`` the file to extract when that
    is a zip. ``sha256`` is of the served file, and only set where a reference publishes it.
    ``config`` is a YAML snippet of the mining config with ``{path}`` for the checkpoint.
    """

    name: str
    kind: WeightKind
    url: str
    filename: str
    config: str
    member: str | None = None
    sha256: str | None = None

    @property
    def artifact(self) -> str:
        """Name of the file the config points at (the extracted member for archives)."""
        return self.member or self.filename

    def snippet(self, path: Path | str) -> str:
        """The mining-config YAML that uses this checkpoint at ``path``."""
        # A JSON string is a valid double-quoted YAML scalar, whatever the path contains.
        return self.config.format(path=json.dumps(str(path)))


@dataclass(frozen=True)
class CachedWeight:
    """One entry of the cache registry: a verified checkpoint on disk."""

    name: str
    url: str
    path: Path
    size: int
    sha256: str  # of ``path``
    download_sha256: str  # of what ``url`` served (the zip, for archives)
    fetched_at: str

    @property
    def present(self) -> bool:
        """Whether the recorded file is still on disk."""
        return self.path.is_file()


def _sam(model_type: str, filename: str, sha256: str) -> WeightSpec:
    return WeightSpec(
        name=f"sam_{model_type}",
        kind="sam",
        url=f"https://dl.fbaipublicfiles.com/segment_anything/{filename}",
        filename=filename,
        sha256=sha256,
        config=f"models:\n  sam:\n    model_type: {model_type}\n    checkpoint: {{path}}\n",
    )


def _rba(name: str, architecture: str, asset: str | None = None) -> WeightSpec:
    asset = asset or f"{name}.zip"
    return WeightSpec(
        name=name,
        kind="rba",
        url=f"https://github.com/NazirNayal8/RbA/releases/download/model-weights/{asset}",
        filename=asset,
        member="model_final.pth",
        config=(
            "models:\n  mask2former:\n    format: rba\n    checkpoint: {path}\n"
            f"    architecture: {architecture}\n"
        ),
    )


_UGAINS_DATA = "https://omnomnom.vision.rwth-aachen.de/data/ugains"

# SAM: segment-anything README ("Model Checkpoints"); the SHA-256s are the ones published
# for these files by several independent projects (e.g. micro-sam). RbA: MODEL_ZOO.md, zips
# holding model_final.pth. UGainS: its README's data folder (Swin-B Mask2Former Lightning
# checkpoint and the Fishyscapes ignore mask, a boolean tensor saved with torch.save).
WEIGHTS: dict[str, WeightSpec] = {
    spec.name: spec
    for spec in (
        _sam(
            "vit_h",
            "sam_vit_h_4b8939.pth",
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        ),
        _sam(
            "vit_l",
            "sam_vit_l_0b3195.pth",
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        ),
        _sam(
            "vit_b",
            "sam_vit_b_01ec64.pth",
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        ),
        _rba("swin_b_1dl", "swin_b_1dl"),
        _rba("swin_l_1dl", "swin_l_1dl"),
        _rba("swin_b_1dl_rba_ood_coco", "swin_b_1dl"),
        # MODEL_ZOO.md links this row to swin_b_1dl_rba_ood_coco.zip by mistake (RbA issue
        # #18, open, no corrected link yet). This asset name is inferred from its Swin-L
        # sibling and not confirmed: an HTTP 404 here means it does not exist under it.
        _rba("swin_b_1dl_rba_ood_map_coco", "swin_b_1dl"),
        _rba("swin_l_1dl_rba_ood_map_coco", "swin_l_1dl"),
        WeightSpec(
            name="ugains",
            kind="ugains",
            url=f"{_UGAINS_DATA}/rude0fhk.ckpt",
            filename="rude0fhk.ckpt",
            config=(
                "models:\n  mask2former:\n    format: ugains\n    checkpoint: {path}\n"
                "    architecture: swin_b_1dl\n"
            ),
        ),
        WeightSpec(
            name="ugains_ignore_mask",
            kind="ignore_mask",
            url=f"{_UGAINS_DATA}/ignore_mask.pth",
            filename="ignore_mask.pth",
            config="models:\n  method:\n    ignore_mask: {path}\n",
        ),
    )
}


def get_spec(name: str) -> WeightSpec:
    """The registry entry ``name``; raises WeightsError listing the known names."""
    try:
        return WEIGHTS[name]
    except KeyError:
        close = difflib.get_close_matches(name, WEIGHTS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = ", ".join(WEIGHTS)
        raise WeightsError(f"unknown weights name {name!r}{hint}; known: {known}") from None


def default_cache_dir() -> Path:
    """``$UGAINS_CACHE`` if set, else ``~/.cache/ugains/weights``."""
    env = os.environ.get("UGAINS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ugains" / "weights"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------- registry


def _read_registry(cache_dir: Path) -> dict[str, dict[str, Any]]:
    path = cache_dir / REGISTRY_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise WeightsError(f"cannot read the weights registry {path}: {error}") from error
    if not isinstance(data, dict) or not isinstance(data.get("weights"), dict):
        raise WeightsError(f"the weights registry {path} is malformed (no 'weights' mapping)")
    return data["weights"]


def _record(cache_dir: Path, name: str, entry: dict[str, Any]) -> None:
    # Fetches of different names share the registry: read-modify-write under its own lock,
    # and replace the file atomically so a reader never sees half of it.
    path = cache_dir / REGISTRY_FILE
    with _locked(cache_dir / (REGISTRY_FILE + ".lock"), "the weights registry"):
        weights = _read_registry(cache_dir)
        weights[name] = entry
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"format": 1, "weights": weights}, indent=2, sort_keys=True))
        os.replace(tmp, path)


def list_cached(cache_dir: Path | str | None = None) -> list[CachedWeight]:
    """The verified checkpoints recorded in ``cache_dir``, sorted by name."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    out = []
    for name, entry in sorted(_read_registry(cache_dir).items()):
        try:
            out.append(
                CachedWeight(
                    name=name,
                    url=entry["url"],
                    path=cache_dir / entry["file"]["path"],
                    size=int(entry["file"]["size"]),
                    sha256=entry["file"]["sha256"],
                    download_sha256=entry["download"]["sha256"],
                    fetched_at=entry["fetched_at"],
                )
            )
        except (KeyError, TypeError, ValueError) as error:
            raise WeightsError(
                f"the weights registry {cache_dir / REGISTRY_FILE} has a malformed entry "
                f"{name!r}: {error!r}"
            ) from error
    return out


@contextlib.contextmanager
def _locked(path: Path, what: str) -> Iterator[None]:
    """Hold the exclusive lock ``path`` (waiting, and saying so, while another user has it)."""

    def say_waiting() -> None:
        log.info("waiting for another user of %s (lock %s)", what, path)

    with file_lock(path, on_wait=say_waiting):
        yield


# ---------------------------------------------------------------------------- download


class _Unreachable(Exception):
    """No connection to the server at all (offline, DNS, refused, timeout)."""


def _content_range_start(value: str | None) -> int | None:
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (value or "").strip())
    return int(match.group(1)) if match else None


def _content_range_total(value: str | None) -> int | None:
    """The complete length of a 416 answer's ``Content-Range: bytes */<length>``."""
    match = re.fullmatch(r"bytes \*/(\d+)", (value or "").strip())
    return int(match.group(1)) if match else None


def _download(url: str, part: Path, *, label: str, progress: bool, timeout: float) -> None:
    """Complete ``part`` with the bytes of ``url``, resuming what is already in it.

    ``part.json`` remembers the URL and the validators (ETag, Last-Modified) the partial bytes
    came with; a resume sends them as If-Range, so a server whose file changed sends it whole.
    """
    meta_path = part.with_name(part.name + ".json")
    for attempt in range(RESUME_ATTEMPTS + 1):
        meta: dict[str, Any] = {}
        with contextlib.suppress(FileNotFoundError, ValueError):
            meta = json.loads(meta_path.read_text())
        offset = part.stat().st_size if part.exists() else 0
        if offset and meta.get("url", url) != url:
            offset = 0  # partial bytes of another URL: never splice them
        headers = {"User-Agent": f"ugains/{__version__}", "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            etag = meta.get("etag") or ""
            # If-Range needs a strong validator: a weak ETag ("W/...") could splice versions.
            validator = (etag if not etag.startswith("W/") else "") or meta.get("last_modified")
            if validator:
                headers["If-Range"] = validator
        try:
            response = urllib.request.urlopen(
                urllib.request.Request(url, headers=headers), timeout=timeout
            )
        except urllib.error.HTTPError as error:
            if error.code == 416 and offset:
                if _content_range_total(error.headers.get("Content-Range")) == offset:
                    # Every byte is already here (a run stopped before verifying it); the
                    # checksum check that follows still applies.
                    meta_path.unlink(missing_ok=True)
                    return
                # The partial file is not a prefix of what is served now: start over.
                part.unlink()
                continue
            raise DownloadError(f"{url} answered HTTP {error.code} {error.reason}") from error
        except (urllib.error.URLError, OSError) as error:
            raise _Unreachable(getattr(error, "reason", error)) from error
        with response:
            if response.status == 206:
                start = _content_range_start(response.headers.get("Content-Range"))
                if start != offset:
                    raise DownloadError(
                        f"{url} answered a Range request for bytes {offset}- with "
                        f"Content-Range {response.headers.get('Content-Range')!r}"
                    )
            else:  # 200: the server ignored Range (or If-Range said the file changed)
                offset = 0
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            meta = {
                "url": url,
                "etag": response.headers.get("ETag"),
                "last_modified": response.headers.get("Last-Modified"),
            }
            meta_path.write_text(json.dumps(meta))
            broken: BaseException | None = None
            with (
                part.open("ab" if offset else "wb") as sink,
                tqdm(
                    total=total,
                    initial=offset,
                    desc=label,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    file=sys.stderr,
                    disable=not progress,
                ) as bar,
            ):
                try:
                    while block := response.read(_CHUNK):
                        sink.write(block)
                        bar.update(len(block))
                except (http.client.HTTPException, OSError) as error:
                    broken = error
        received = part.stat().st_size
        if total is not None and received > total:
            part.unlink()
            raise DownloadError(f"{url} sent {received} bytes, more than announced ({total})")
        if broken is None and (total is None or received == total):
            meta_path.unlink(missing_ok=True)
            return
        # Broken off: resume right away only if this connection made progress, so a dead
        # server is not hammered.
        where = f"{received} of {total if total is not None else '?'} bytes"
        if received > offset and attempt < RESUME_ATTEMPTS:
            log.warning("download of %s broke off at %s; resuming", url, where)
            continue
        raise DownloadError(
            f"download of {url} broke off at {where} ({broken or 'connection closed'}); "
            f"run the same command again to resume from {part}"
        )
    raise DownloadError(f"{url} keeps refusing the range requested for {part}; delete it")


def _extract(archive: Path, member: str, target: Path) -> None:
    """Extract the one entry named ``member`` (at any depth) of a zip to ``target``."""
    tmp = target.with_name(target.name + ".tmp")
    try:
        with zipfile.ZipFile(archive) as zf:
            matches = [
                info
                for info in zf.infolist()
                if not info.is_dir() and PurePosixPath(info.filename).name == member
            ]
            if len(matches) != 1:
                names = [info.filename for info in zf.infolist()][:20]
                raise WeightsError(
                    f"{archive} holds {len(matches)} files named {member!r} (expected one); "
                    f"its entries: {names}"
                )
            # Written under our own name, never the archive's path: no zip-slip.
            with zf.open(matches[0]) as source, tmp.open("wb") as sink:
                while block := source.read(_CHUNK):
                    sink.write(block)
    except zipfile.BadZipFile as error:  # also a CRC error while reading the member
        tmp.unlink(missing_ok=True)
        raise WeightsError(f"{archive} is not a valid zip archive: {error}") from error
    os.replace(tmp, target)


def _reject(path: Path) -> Path:
    """Move a file that failed verification out of the way, keeping it for inspection."""
    rejected = path.with_name(path.name.removesuffix(".part") + ".rejected")
    os.replace(path, rejected)
    return rejected


def fetch(
    name: str,
    cache_dir: Path | str | None = None,
    *,
    url: str | None = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Download (or reuse), verify and unpack checkpoint ``name``; return its local path.

    ``url`` replaces the registry's location (a mirror; the tests' local server). A file put
    by hand at ``<cache>/<name>/<filename>`` is verified and used instead of downloading.
    Raises DownloadError (offline, HTTP error, broken transfer), ChecksumError, WeightsError.
    """
    spec = get_spec(name)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    source = url or spec.url
    folder = cache_dir / spec.name
    artifact = folder / spec.artifact
    download = folder / spec.filename
    part = download.with_name(download.name + ".part")

    with _locked(folder / ".lock", f"the cached {name}"):
        record = _read_registry(cache_dir).get(name)
        if record and artifact.is_file():
            if sha256_file(artifact) == record["file"]["sha256"]:
                return artifact
            log.warning("%s does not match its recorded SHA-256; fetching it again", artifact)
            artifact.unlink()
        expected = spec.sha256 or (record["download"]["sha256"] if record else None)

        if download.is_file():
            candidate = download  # put there by hand (see the offline message below)
        else:
            try:
                _download(source, part, label=name, progress=progress, timeout=timeout)
            except _Unreachable as reason:
                raise DownloadError(
                    f"cannot reach {source} ({reason}). Download it by hand and put it at "
                    f"{download}, then run `ugains weights fetch {name}` again to verify "
                    f"{'and unpack ' if spec.member else ''}it."
                ) from None
            candidate = part

        digest = sha256_file(candidate)
        if expected and digest != expected:
            rejected = _reject(candidate)
            origin = "published" if spec.sha256 else "recorded at its first download"
            raise ChecksumError(
                f"SHA-256 mismatch for {name} from {source}: got {digest}, expected {expected} "
                f"({origin}); the file was moved to {rejected}. Run the command again to "
                "download it afresh."
            )
        if spec.member:
            try:
                _extract(candidate, spec.member, artifact)
            except WeightsError as error:
                raise WeightsError(f"{error}; moved to {_reject(candidate)}") from None
            file_digest = sha256_file(artifact)
            candidate.unlink()  # the zip is only a container; its digest is recorded
        else:
            os.replace(candidate, artifact)
            file_digest = digest
        part.with_name(part.name + ".json").unlink(missing_ok=True)
        _record(
            cache_dir,
            name,
            {
                "url": source,
                "download": {"sha256": digest},
                "file": {
                    "path": artifact.relative_to(cache_dir).as_posix(),
                    "sha256": file_digest,
                    "size": artifact.stat().st_size,
                },
                "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )
        return artifact


# ---------------------------------------------------------------------------- command line


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


__all__ = [
    "WEIGHTS",
    "CachedWeight",
    "ChecksumError",
    "DownloadError",
    "WeightSpec",
    "WeightsError",
    "default_cache_dir",
    "fetch",
    "get_spec",
    "list_cached",
    "sha256_file",
]
