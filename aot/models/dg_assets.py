"""DG's frozen ADM 32x32 classifier (``32x32_classifier.pt``), fetched from the authors' Google Drive folder.

Discriminator Guidance (alsdudrla10/DG, README step "Prepare a pre-trained classifier") points to the Google
Drive folder :data:`FOLDER_URL` for ``DG/checkpoints/ADM_classifier/32x32_classifier.pt``; with
``guidance.extractor: adm32`` the workflow needs it at ``guidance.extractor_weights``.
:func:`fetch_dg_classifier` lists that folder with ``gdown`` (imported only when a download is needed), downloads
that one file into a temporary folder beside the destination, checks that it is a tensors-only state_dict that
loads with ``strict=True`` into :class:`aot.models.adm.EncoderUNet` built with :data:`aot.models.adm.ADM_CLASSIFIER_32` (every
key name and every shape, compared against that module's own state_dict; float tensors with finite values), and
only then renames it into place and writes ``<out>.sha256`` (``sha256sum`` format). No checksum of the authors'
file is published, so none is pinned here: the discriminator records the sha256 of the file it was trained with.

Every failure is one :class:`DGAssetError` line naming what failed, the folder URL and where to put the file by
hand (offline clusters), and leaves nothing at the destination.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from aot.core.download import sha256_file

FOLDER_ID = "1gb68C13-QOt8yA6ZnnS6G5pVIlPO7j_y"
FOLDER_URL = f"https://drive.google.com/drive/folders/{FOLDER_ID}"
FILE_NAME = "32x32_classifier.pt"
CONFIG_KEY = "guidance.extractor_weights"
TIMEOUT = (30.0, 300.0)  # requests' (connect, read) seconds: a node without internet fails instead of hanging


class DGAssetError(FileNotFoundError):
    """One line: what failed, the folder the file comes from, and where to put it by hand."""


def _fail(what: str, out: Path) -> DGAssetError:
    what = " ".join(str(what).split())  # gdown's and requests' messages span lines
    if len(what) > 300:
        what = what[:297] + "..."
    return DGAssetError(f"could not fetch DG's ADM classifier {FILE_NAME}: {what}; download it by hand from "
                        f"{FOLDER_URL} and put it at {out} (the path set by the config key {CONFIG_KEY})")


@functools.cache
def expected_shapes() -> dict[str, tuple[int, ...]]:
    """State_dict key -> shape of aot.models.adm's ADM 32x32 classifier (the module DG's file loads into)."""
    import torch

    from aot.models.adm import ADM_CLASSIFIER_32, EncoderUNet

    # Built on the CPU (~1 s, 191 MB, freed on return): on the meta device its one randn imports torch._dynamo,
    # which is slower and needs more memory than the module itself.
    with torch.no_grad():
        return {k: tuple(v.shape) for k, v in EncoderUNet(**ADM_CLASSIFIER_32).state_dict().items()}


def verify_classifier(path: str | Path) -> None:
    """Raise ValueError (one line) unless ``path`` is a state_dict that loads with ``strict=True`` into
    aot.models.adm's ADM 32x32 classifier: the same key names, the same shapes, float tensors with finite values."""
    import torch

    from aot.models.adm import load_state_dict_file, state_dict_problems

    path = Path(path)
    try:
        sd = load_state_dict_file(path)
    except ValueError:
        raise
    except Exception as e:  # a truncated zip, an HTML page saved under the name, ...
        raise ValueError(f"{path}: cannot be read as a tensors-only state_dict ({type(e).__name__})") from None
    problems = state_dict_problems(expected_shapes(), sd)
    if problems:
        raise ValueError(f"{path} is not DG's ADM 32x32 classifier: {', '.join(problems)}")
    for k, v in sd.items():
        if not v.is_floating_point():
            raise ValueError(f"{path}: {k!r} is {v.dtype}, expected floating point weights")
        if not bool(torch.isfinite(v.sum(dtype=torch.float32))):  # NaN/inf anywhere (a sum: fast on 48M values)
            raise ValueError(f"{path}: {k!r} has non-finite values")


def _finish(out: Path, digest: str, *, downloaded: bool) -> dict[str, Any]:
    """Write ``<out>.sha256`` (when missing or stale, atomically) and return the info dict."""
    sidecar = out.with_name(out.name + ".sha256")
    line = f"{digest}  {out.name}\n"
    if not sidecar.is_file() or sidecar.read_text() != line:
        tmp = sidecar.with_name(sidecar.name + ".part")
        tmp.write_text(line)
        tmp.replace(sidecar)
    return dict(path=str(out), sha256=digest, url=FOLDER_URL, bytes=out.stat().st_size, downloaded=downloaded)


def _pick(listing: Any) -> Any | None:
    """The listing's 32x32_classifier.pt, preferring DG's own place (ADM_classifier/) if there are several."""
    found = [f for f in listing or [] if Path(str(getattr(f, "path", ""))).name == FILE_NAME]
    found.sort(key=lambda f: (not str(f.path).replace(os.sep, "/").endswith(f"ADM_classifier/{FILE_NAME}"),
                              len(str(f.path))))
    return found[0] if found else None


def fetch_dg_classifier(out: str | Path, *, download: bool = True, quiet: bool = True) -> dict[str, Any]:
    """Make sure DG's ``32x32_classifier.pt`` is at ``out``; return ``{path, sha256, url, bytes, downloaded}``.

    A file already at ``out`` that passes :func:`verify_classifier` is kept (no network). Otherwise, with
    ``download``, the file is fetched with gdown, verified and renamed into place; a file at ``out`` that fails
    the check is replaced only by one that passes it. Raises :class:`DGAssetError` (one line) on any failure.
    """
    out = Path(out)
    why = f"{out} does not exist"
    if out.is_file():
        try:
            verify_classifier(out)
        except ValueError as e:
            why = f"the file already there was refused ({e})"
        else:
            return _finish(out, sha256_file(out), downloaded=False)
    if not download:
        raise _fail(why, out)
    try:
        import gdown
    except ImportError:
        raise _fail("gdown is not installed (pip install gdown)", out) from None

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        try:  # list the folder (skip_download): only the one file is downloaded, not the whole folder
            listing = gdown.download_folder(id=FOLDER_ID, output=str(tmp) + os.sep, quiet=quiet, use_cookies=False,
                                            skip_download=True, timeout=TIMEOUT)
        except Exception as e:
            raise _fail(f"listing the Google Drive folder failed ({type(e).__name__}: {e})", out) from None
        entry = _pick(listing)
        if entry is None:
            raise _fail(f"the Google Drive folder lists no {FILE_NAME}", out)
        dest = tmp / FILE_NAME
        try:
            gdown.download(id=entry.id, output=str(dest), quiet=quiet, use_cookies=False, timeout=TIMEOUT)
        except Exception as e:  # offline, Google Drive's download quota, ...
            raise _fail(f"downloading {entry.path} failed ({type(e).__name__}: {e})", out) from None
        if not dest.is_file():
            raise _fail(f"gdown wrote no file for {entry.path}", out)
        try:
            verify_classifier(dest)
        except ValueError as e:  # name the file, not the temporary folder that is about to go
            raise _fail(f"the downloaded file was refused ({str(e).replace(str(dest), FILE_NAME)})", out) from None
        digest = sha256_file(dest)
        os.replace(dest, out)  # same folder, so atomic: out is either absent/old or the verified file
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _finish(out, digest, downloaded=True)
