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
names the local path (no network at run time: docs/engineering.md).

One module per job: :mod:`~pipelines.weights.catalogue` (the known checkpoints),
:mod:`~pipelines.weights.download` (one resumable HTTP download),
:mod:`~pipelines.weights.cache` (fetch, verify, unpack, the registry, list),
:mod:`~pipelines.weights.cli` (``ugains weights``), :mod:`~pipelines.weights.errors`.
"""

from pipelines.weights.cache import (
    REGISTRY_FILE,
    CachedWeight,
    default_cache_dir,
    fetch,
    list_cached,
    sha256_file,
)
from pipelines.weights.catalogue import WEIGHTS, WeightKind, WeightSpec, get_spec
from pipelines.weights.download import DEFAULT_TIMEOUT_S, RESUME_ATTEMPTS
from pipelines.weights.errors import ChecksumError, DownloadError, WeightsError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "REGISTRY_FILE",
    "RESUME_ATTEMPTS",
    "WEIGHTS",
    "CachedWeight",
    "ChecksumError",
    "DownloadError",
    "WeightKind",
    "WeightSpec",
    "WeightsError",
    "default_cache_dir",
    "fetch",
    "get_spec",
    "list_cached",
    "sha256_file",
]
