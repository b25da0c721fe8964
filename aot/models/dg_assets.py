"""The frozen ADM classifiers Discriminator Guidance reads its features from, and where they come from.

* ``adm32``: DG's ``32x32_classifier.pt``. DG's README (alsdudrla10/DG, step "Prepare a pre-trained classifier") points
  to the Google Drive folder :data:`FOLDER_URL` for ``DG/checkpoints/ADM_classifier/32x32_classifier.pt``; it is
  listed and fetched with ``gdown`` (imported only when a download is needed).
* ``adm64``: openai/guided-diffusion's ``64x64_classifier.pt`` (ImageNet 64x64; its README's download link
  :data:`ADM64_URL`), the classifier DG's ``classifier_lib.load_classifier`` builds for ``img_resolution=64``; a plain
  HTTPS download (:func:`aot.core.download.download`).

With ``guidance.extractor: adm32 | adm64`` the workflow needs the file at ``guidance.extractor_weights``.
:func:`fetch_dg_classifier` downloads it into a temporary folder beside the destination, checks that it is a
tensors-only state_dict that loads with ``strict=True`` into :class:`aot.models.adm.EncoderUNet` built with that
classifier's constructor arguments (:data:`aot.models.adm.ADM_CLASSIFIERS`; every key name and every shape, compared
against that module's own state_dict; float tensors with finite values), and only then renames it into place and
writes ``<out>.sha256`` (``sha256sum`` format). Neither publisher gives a checksum, so none is pinned here: the
discriminator records the sha256 of the file it was trained with.

Every failure is one :class:`DGAssetError` line naming what failed, where the file comes from and where to put it by
hand (offline clusters), and leaves nothing at the destination. This module imports no torch at import time (the
config checks read :data:`CLASSIFIERS`).
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aot.core.download import sha256_file

FOLDER_ID = "1gb68C13-QOt8yA6ZnnS6G5pVIlPO7j_y"
FOLDER_URL = f"https://drive.google.com/drive/folders/{FOLDER_ID}"
FILE_NAME = "32x32_classifier.pt"
ADM64_URL = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/64x64_classifier.pt"
CONFIG_KEY = "guidance.extractor_weights"
TIMEOUT = (30.0, 300.0)  # requests' (connect, read) seconds: a node without internet fails instead of hanging


@dataclass(frozen=True)
class Classifier:
    """One frozen feature extractor: the file, the images it reads, the time it was trained on, where it comes from.

    ``time`` is the diffusion time the classifier (and so DG's head on its features) is fed: ``"vp"``, DG's linear
    VP-SDE time tau itself (DG's 32x32 classifier); ``"cosine"``, tau mapped to the cosine schedule's time of the same
    signal level (:func:`aot.models.vp.cosine_time`), as DG's ``get_grad_log_ratio`` does for ``img_resolution == 64``
    because guided-diffusion's 64x64 models were trained with ``--noise_schedule cosine``.
    """

    file: str
    resolution: int
    time: str
    url: str  # a Google Drive folder (folder_id set) or the file itself
    publisher: str  # whose file it is, for messages
    folder_id: str | None = None
    channels: int = 3


CLASSIFIERS: dict[str, Classifier] = {
    "adm32": Classifier(FILE_NAME, 32, "vp", FOLDER_URL, "DG's", FOLDER_ID),
    "adm64": Classifier("64x64_classifier.pt", 64, "cosine", ADM64_URL, "guided-diffusion's"),
}


class DGAssetError(FileNotFoundError):
    """One line: what failed, where the file comes from, and where to put it by hand."""


def _classifier(extractor: str) -> Classifier:
    if extractor not in CLASSIFIERS:
        raise ValueError(f"guidance.extractor: {extractor!r} has no pretrained classifier; valid choices: "
                         f"{', '.join(CLASSIFIERS)}")
    return CLASSIFIERS[extractor]


def _fail(what: str, out: Path, extractor: str = "adm32") -> DGAssetError:
    c = _classifier(extractor)
    what = " ".join(str(what).split())  # gdown's and requests' messages span lines
    if len(what) > 300:
        what = what[:297] + "..."
    return DGAssetError(f"could not fetch {c.publisher} ADM classifier {c.file}: {what}; download it by hand from "
                        f"{c.url} and put it at {out} (the path set by the config key {CONFIG_KEY})")


@functools.cache
def expected_shapes(extractor: str = "adm32") -> dict[str, tuple[int, ...]]:
    """State_dict key -> shape of aot.models.adm's ADM classifier ``extractor`` (the module the file loads into)."""
    import torch

    from aot.models.adm import ADM_CLASSIFIERS, EncoderUNet

    # Built on the CPU (~1 s, 191/262 MB, freed on return): on the meta device its one randn imports torch._dynamo,
    # which is slower and needs more memory than the module itself.
    with torch.no_grad():
        return {k: tuple(v.shape) for k, v in EncoderUNet(**ADM_CLASSIFIERS[extractor]).state_dict().items()}


def verify_classifier(path: str | Path, extractor: str = "adm32") -> None:
    """Raise ValueError (one line) unless ``path`` is a state_dict that loads with ``strict=True`` into
    aot.models.adm's ADM classifier ``extractor``: the same key names, the same shapes, float tensors with finite
    values."""
    import torch

    from aot.models.adm import load_state_dict_file, state_dict_problems

    c, path = _classifier(extractor), Path(path)
    try:
        sd = load_state_dict_file(path)
    except ValueError:
        raise
    except Exception as e:  # a truncated zip, an HTML page saved under the name, ...
        raise ValueError(f"{path}: cannot be read as a tensors-only state_dict ({type(e).__name__})") from None
    problems = state_dict_problems(expected_shapes(extractor), sd)
    if problems:
        size = f"{c.resolution}x{c.resolution}"
        raise ValueError(f"{path} is not the ADM {size} classifier ({c.file}): {', '.join(problems)}")
    for k, v in sd.items():
        if not v.is_floating_point():
            raise ValueError(f"{path}: {k!r} is {v.dtype}, expected floating point weights")
        if not bool(torch.isfinite(v.sum(dtype=torch.float32))):  # NaN/inf anywhere (a sum: fast on 65M values)
            raise ValueError(f"{path}: {k!r} has non-finite values")


def _finish(out: Path, digest: str, *, downloaded: bool, url: str) -> dict[str, Any]:
    """Write ``<out>.sha256`` (when missing or stale, atomically) and return the info dict."""
    sidecar = out.with_name(out.name + ".sha256")
    line = f"{digest}  {out.name}\n"
    if not sidecar.is_file() or sidecar.read_text() != line:
        tmp = sidecar.with_name(sidecar.name + ".part")
        tmp.write_text(line)
        tmp.replace(sidecar)
    return dict(path=str(out), sha256=digest, url=url, bytes=out.stat().st_size, downloaded=downloaded)


def _pick(listing: Any) -> Any | None:
    """The listing's 32x32_classifier.pt, preferring DG's own place (ADM_classifier/) if there are several."""
    found = [f for f in listing or [] if Path(str(getattr(f, "path", ""))).name == FILE_NAME]
    found.sort(key=lambda f: (not str(f.path).replace(os.sep, "/").endswith(f"ADM_classifier/{FILE_NAME}"),
                              len(str(f.path))))
    return found[0] if found else None


def _gdown_into(tmp: Path, out: Path, quiet: bool) -> Path:
    """DG's 32x32_classifier.pt from its Google Drive folder into the folder ``tmp``; returns the file."""
    try:
        import gdown
    except ImportError:
        raise _fail("gdown is not installed (pip install gdown)", out) from None
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
    return dest


def _https_into(tmp: Path, out: Path, extractor: str) -> Path:
    """A classifier published as one file (``Classifier.url``) into the folder ``tmp``; returns the file."""
    from aot.core.download import DownloadError, download

    c = CLASSIFIERS[extractor]
    try:
        return Path(download(c.url, tmp))
    except DownloadError as e:
        raise _fail(f"downloading {c.url} failed ({e.reason})", out, extractor) from None


def fetch_dg_classifier(out: str | Path, *, extractor: str = "adm32", download: bool = True,
                        quiet: bool = True) -> dict[str, Any]:
    """Make sure the classifier ``extractor`` is at ``out``; return ``{path, sha256, url, bytes, downloaded}``.

    A file already at ``out`` that passes :func:`verify_classifier` is kept (no network). Otherwise, with
    ``download``, the file is fetched (gdown for adm32, HTTPS for adm64), verified and renamed into place; a file at
    ``out`` that fails the check is replaced only by one that passes it. Raises :class:`DGAssetError` (one line) on
    any failure.
    """
    c, out = _classifier(extractor), Path(out)
    why = f"{out} does not exist"
    if out.is_file():
        try:
            verify_classifier(out, extractor)
        except ValueError as e:
            why = f"the file already there was refused ({e})"
        else:
            return _finish(out, sha256_file(out), downloaded=False, url=c.url)
    if not download:
        raise _fail(why, out, extractor)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        dest = _gdown_into(tmp, out, quiet) if c.folder_id else _https_into(tmp, out, extractor)
        try:
            verify_classifier(dest, extractor)
        except ValueError as e:  # name the file, not the temporary folder that is about to go
            raise _fail(f"the downloaded file was refused ({str(e).replace(str(dest), c.file)})", out,
                        extractor) from None
        digest = sha256_file(dest)
        os.replace(dest, out)  # same folder, so atomic: out is either absent/old or the verified file
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _finish(out, digest, downloaded=True, url=c.url)
