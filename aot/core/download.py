"""Files from the network and their digests: one download helper (atomic, resumable by rerun, one line offline) and
one sha256 helper for every artifact the project records or checks."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path


class DownloadError(FileNotFoundError):
    """A download that failed; ``reason`` is the exception's type name (the message says what to do instead)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def download(url: str, cache_dir: str | Path) -> str:
    """Fetch ``url`` once into ``cache_dir`` (atomic); offline, one line says what to do instead."""
    dest = Path(cache_dir) / url.rstrip("/").rsplit("/", 1)[-1]
    if dest.is_file():
        return str(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        from torch.hub import download_url_to_file

        download_url_to_file(url, str(tmp), progress=sys.stderr.isatty())
    except Exception as e:  # offline clusters: say which file and where to put it
        tmp.unlink(missing_ok=True)
        raise DownloadError(f"could not download {url} ({type(e).__name__}); fetch it by hand and put it at {dest}, "
                            "or set the config's checkpoint entry to its local path", type(e).__name__) from None
    tmp.replace(dest)
    return str(dest)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
