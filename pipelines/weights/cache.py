"""The weights cache: fetch (download or reuse, verify, unpack) and list checkpoints.

``fetch`` puts one checkpoint of :data:`~pipelines.weights.catalogue.WEIGHTS` into a cache
directory (``$UGAINS_CACHE``, else ``~/.cache/ugains/weights``):

- the download (:mod:`pipelines.weights.download`) goes to ``<cache>/<name>/<file>.part`` and
  resumes after a broken connection, within one call and across calls;
- the file is checked against its SHA-256: a published one where known, otherwise the one
  recorded in ``<cache>/registry.json`` by the first successful download;
- only then is it renamed into place (or, for the RbA zips, ``model_final.pth`` is extracted);
- a lock file per name (:func:`pipelines.locks.file_lock`) keeps concurrent fetches of one name
  from interleaving.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from pipelines.locks import file_lock
from pipelines.weights.catalogue import get_spec
from pipelines.weights.download import _CHUNK, DEFAULT_TIMEOUT_S, _download, _Unreachable
from pipelines.weights.errors import ChecksumError, DownloadError, WeightsError

log = logging.getLogger(__name__)

__all__ = [
    "REGISTRY_FILE",
    "CachedWeight",
    "default_cache_dir",
    "fetch",
    "list_cached",
    "sha256_file",
]

REGISTRY_FILE = "registry.json"


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


# ---------------------------------------------------------------------------- fetch


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
