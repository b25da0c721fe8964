"""A researcher's own images as a dataset source (``dataset: {source: images, path: <folder or .zip>}``).

Two layouts, one reader, the source only ever read:

- **EDM's** ``dataset_tool.py`` output: a folder or a ``.zip`` of PNGs (``00000/img00000000.png``, ...) with a
  ``dataset.json`` at its root, ``{"labels": [["00000/img00000000.png", 6], ...]}`` or ``{"labels": null}``
  (unlabeled). When ``dataset.json`` exists it alone decides the labels.
- **ImageFolder** (torchvision): no ``dataset.json``, one subfolder per class; the classes are the sorted subfolder
  names, numbered 0..K-1 (as EDM's ``dataset_tool.py`` numbers top-level folders). Images all at the top level
  (or all in one folder) are unlabeled.

Images are every file whose extension PIL reads (EDM's rule), in sorted order of their '/'-joined path relative to
the root (Python's code-point order, no locale: the same order on every machine); a file of any other kind is an
error, not skipped. Square RGB or grayscale images of one power-of-two size are kept as they are; with
``resolution`` every image is first center-cropped to a square and then resized with PIL's LANCZOS filter, which is
what ``dataset_tool.py --transform=center-crop --resolution=RxR`` does (its plain ``--resolution`` resize is the same
on square images). A grayscale image stays one channel here (``dataset_tool``'s center crop repeats it into three
equal RGB channels first; LANCZOS on each channel gives the same values).

Every problem is one :class:`ImageSourceError` line naming the file and the fix: in :func:`list_source` (cheap:
names, sizes, ``dataset.json``; run by the config check before any job) and in :func:`read_images` (every image
decoded; run by ``python -m aot prepare``, the first job, before any training).

This module imports no torch, so the config check can list a source at parse time.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

LABELS_FILE = "dataset.json"  # EDM's labels file, at the root of the folder or zip
# Snakemake's mtime marker inside a folder that a rule wrote (directory() output): not part of the data, not listed.
SNAKEMAKE_MARKER = ".snakemake_timestamp"
FORMAT_HINT = ("a folder or .zip of images: EDM's dataset_tool.py output (optional dataset.json labels) or one "
               "subfolder per class")
_MAX_LABELS_BYTES = 1 << 30  # dataset.json of ImageNet (1.28M entries) is ~50 MB
_LABELS_SIZE_FIX = f"keep {LABELS_FILE} below {_MAX_LABELS_BYTES >> 20} MB (one [name, class] per image)"


class ImageSourceError(ValueError):
    """A file of an image source is unusable; the message is one line naming the file and the fix."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _error(where: str, problem: str, fix: str) -> ImageSourceError:
    return ImageSourceError(_one_line(f"dataset.path: {where}: {problem}; {fix}"))


def image_extensions() -> set[str]:
    """Lower-case extensions (with the dot) that PIL can open, as EDM's ``PIL.Image.EXTENSION``."""
    from PIL import Image

    return {ext.lower() for ext in Image.registered_extensions()}


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


@dataclass(frozen=True)
class Listing:
    """What :func:`list_source` found: the images in order, their labels, and the source's fingerprint."""

    path: Path
    kind: str  # "folder" or "zip"
    names: tuple[str, ...]  # '/'-joined paths relative to the root, sorted
    labels: tuple[int, ...] | None  # class index per image; None = unlabeled
    classes: tuple[str, ...] | None  # class names (subfolders) or indices as text (dataset.json); None = unlabeled
    label_source: str | None  # "dataset.json", "subfolders" or None
    fingerprint: str  # sha256 of the listing (see :func:`list_source`)

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes is not None else 1

    @property
    def labeled(self) -> bool:
        return self.labels is not None

    def where(self, name: str) -> str:
        """How an error names one image: a file below the folder, or a member of the zip."""
        return f"{self.path / name}" if self.kind == "folder" else f"{self.path}: member {name}"


# ----------------------------------------------------------------------------
# Listing: names, sizes and labels, no image decoded.


def _folder_entries(root: Path) -> tuple[list[tuple[str, int]], set[str], bytes | None, list]:
    """(image name, size) pairs, folder names, the bytes of dataset.json and the stat records of the fingerprint.
    Links, devices, FIFOs, empty files and non-images are refused here, never followed or skipped."""
    exts = image_extensions()
    images, folders, labels_raw, records = [], set(), None, []
    for top, dirs, files in os.walk(root, followlinks=False, onerror=_raise):
        dirs.sort()
        rel_top = Path(top).relative_to(root)
        for d in dirs:
            rel = (rel_top / d).as_posix()
            if os.path.islink(os.path.join(top, d)):
                raise _error(str(root / rel), "is a symbolic link (refused, not followed)",
                             "copy the folder it points to into the source")
            folders.add(rel)
        for f in sorted(files):
            full, rel = os.path.join(top, f), (rel_top / f).as_posix()
            if rel == SNAKEMAKE_MARKER:
                continue
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                raise _error(full, "is a symbolic link (refused, not followed)",
                             "copy the file it points to into the folder")
            if not stat.S_ISREG(st.st_mode):
                raise _error(full, "is not a regular file (a FIFO, socket or device)", "remove it from the folder")
            records.append([rel, st.st_size, st.st_mtime_ns])
            if rel == LABELS_FILE:
                labels_raw = _read_labels_file(full, st.st_size)
                continue
            _check_member(full, rel, st.st_size, exts)
            images.append((rel, st.st_size))
    return images, folders, labels_raw, records


def _raise(e: OSError) -> None:
    raise _error(str(e.filename), f"cannot be read ({e.strerror})", "make it readable or remove it")


def _read_labels_file(full: str, size: int) -> bytes:
    if size > _MAX_LABELS_BYTES:
        raise _error(full, f"is {size} bytes", _LABELS_SIZE_FIX)
    with open(full, "rb") as f:
        return f.read()


def _check_member(where: str, rel: str, size: int, exts: set[str]) -> None:
    ext = PurePosixPath(rel).suffix.lower()
    if ext not in exts:
        raise _error(where, f"is not an image (extension '{ext or '<none>'}'; PIL reads .png, .jpg, .bmp, ...)",
                     "remove it or move it out of the source")
    if size == 0:
        raise _error(where, "is empty (0 bytes)", "re-export the image or remove it")


def _zip_entries(path: Path) -> tuple[list[tuple[str, int]], set[str], bytes | None, list]:
    """As :func:`_folder_entries` for a zip: members with '..', absolute paths, links or a repeated name are
    refused (nothing is ever extracted); the fingerprint holds each member's name, size and CRC-32."""
    exts = image_extensions()
    images, folders, labels_raw, records, seen = [], set(), None, [], set()
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                name = info.filename
                where = f"{path}: member {name}"
                parts = name.replace("\\", "/").split("/")
                absolute = name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":")
                if absolute or ".." in parts:
                    raise _error(where, f"has {'an absolute path' if absolute else 'a .. component'} (refused, "
                                 "never extracted)",
                                 "re-create the zip with paths relative to its root (dataset_tool.py --dest x.zip)")
                if name in seen:
                    raise _error(where, "appears twice in the zip", "re-create the zip with each file once")
                seen.add(name)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise _error(where, "is a symbolic link (refused, not followed)",
                                 "re-create the zip with the file itself (zip without --symlinks)")
                if info.is_dir():
                    folders.add(name.rstrip("/"))
                    continue
                if info.flag_bits & 0x1:
                    raise _error(where, "is encrypted", "re-create the zip without a password")
                rel = name
                for i in range(1, len(parts) - 1):  # folders implied by the member's path
                    folders.add("/".join(parts[:i]))
                records.append([rel, info.file_size, info.CRC])
                if rel == LABELS_FILE:
                    if info.file_size > _MAX_LABELS_BYTES:
                        raise _error(where, f"is {info.file_size} bytes",
                                     _LABELS_SIZE_FIX)
                    labels_raw = _read_zip_member(z, path, info)
                    continue
                _check_member(where, rel, info.file_size, exts)
                images.append((rel, info.file_size))
    except ImageSourceError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as e:
        raise _error(str(path), f"is not a readable zip archive ({type(e).__name__}: {_one_line(e)[:160]})",
                     "re-create it (EDM: dataset_tool.py --dest x.zip) or point dataset.path at the folder") from None
    return images, folders, labels_raw, records


def _read_zip_member(z: zipfile.ZipFile, path: Path, info: zipfile.ZipInfo) -> bytes:
    """One member's bytes; a CRC mismatch or a cut-off member is one line naming it."""
    try:
        return z.read(info)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise _error(f"{path}: member {info.filename}", f"is corrupt ({type(e).__name__}: {_one_line(e)[:160]})",
                     "re-create the zip") from None


def _parse_labels(raw: bytes, where: str, names: list[str]) -> dict[str, int] | None:
    """dataset.json -> {image name: class} (None for ``"labels": null``); every entry checked."""
    fix = ('write {"labels": [["<image path relative to the root>", <class 0..K-1>], ...]} (EDM\'s format) or '
           f'{{"labels": null}}, or delete {LABELS_FILE} to take the classes from the subfolders')
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _error(where, f"is not valid JSON ({type(e).__name__}: {_one_line(e)[:120]})", fix) from None
    if not isinstance(data, dict) or "labels" not in data:
        raise _error(where, "has no 'labels' key at its top level", fix)
    entries = data["labels"]
    if entries is None:
        return None
    if not isinstance(entries, list):
        raise _error(where, f"'labels' is a {type(entries).__name__}, not a list", fix)
    known, out = set(names), {}
    for i, entry in enumerate(entries):
        if (not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], str)
                or isinstance(entry[1], bool) or not isinstance(entry[1], int) or entry[1] < 0):
            raise _error(where, f"labels[{i}] is {json.dumps(entry)[:80]}, not [name, class index >= 0]", fix)
        name, label = entry
        if name in out:
            raise _error(where, f"labels[{i}] names {name} a second time", "give each image one label")
        if name not in known:
            raise _error(where, f"labels[{i}] names {name}, which is not an image of the source",
                         "remove the entry or add the image (names are relative to the root, with '/')")
        out[name] = label
    missing = [n for n in names if n not in out]
    if missing:
        raise _error(where, f"has no label for {missing[0]}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1
                                                                  else ""),
                     "give every image a label, or write \"labels\": null for an unlabeled source")
    return out


def list_source(path: str | os.PathLike) -> Listing:
    """List an image source without decoding any image (see the module docstring for the layouts).

    The fingerprint is the sha256 of every file's name, size and modification time (folder) or every member's name,
    size and CRC-32 (zip, read from its central directory): a cheap stat per file, so the workflow can compute it on
    every run and re-prepare when the source changes, without reading the images' bytes.
    """
    path = Path(path)
    if not path.exists():
        raise _error(str(path), "does not exist", f"point dataset.path at {FORMAT_HINT}")
    if path.is_dir():
        kind = "folder"
        images, folders, labels_raw, records = _folder_entries(path)
    elif path.is_file() and (path.suffix.lower() == ".zip" or zipfile.is_zipfile(path)):
        kind = "zip"
        images, folders, labels_raw, records = _zip_entries(path)
    elif path.is_file():
        raise _error(str(path), "is neither a folder nor a .zip archive", f"point dataset.path at {FORMAT_HINT}")
    else:
        raise _error(str(path), "is not a regular file or folder", f"point dataset.path at {FORMAT_HINT}")
    images.sort()
    names = [n for n, _ in images]
    labels_where = f"{path / LABELS_FILE}" if kind == "folder" else f"{path}: member {LABELS_FILE}"
    fingerprint = hashlib.sha256(json.dumps([kind, sorted(records)]).encode()).hexdigest()

    # Folders that hold no image (an empty class folder): always an error, whichever file gives the labels.
    filled = {"/".join(n.split("/")[:i]) for n in names for i in range(1, n.count("/") + 1)}
    for folder in sorted(folders - filled):
        where = f"{path / folder}" if kind == "folder" else f"{path}: folder {folder}/"
        raise _error(where, "is a folder with no images (an empty class)", "add its images or remove the folder")
    if not names:
        raise _error(str(path), "holds no images", f"point dataset.path at {FORMAT_HINT}")

    labels, classes, label_source = None, None, None
    if labels_raw is not None:
        mapping = _parse_labels(labels_raw, labels_where, names)
        if mapping is not None:
            labels = tuple(mapping[n] for n in names)
            k = max(labels) + 1
            counts = np.bincount(labels, minlength=k)
            if (counts == 0).any():
                empty = int(np.flatnonzero(counts == 0)[0])
                raise _error(labels_where, f"class {empty} has no images (labels use 0..{k - 1})",
                             f"number the classes 0..K-1 without gaps, or add images of class {empty}")
            classes, label_source = tuple(str(c) for c in range(k)), LABELS_FILE
    else:
        top = {n.split("/")[0] if "/" in n else "" for n in names}
        if len(top) > 1:  # ImageFolder: one subfolder per class
            if "" in top:
                loose = next(n for n in names if "/" not in n)
                raise _error(f"{path / loose}" if kind == "folder" else f"{path}: member {loose}",
                             "is at the top level, beside class subfolders",
                             "move it into the folder of its class (or add a dataset.json with every label)")
            classes = tuple(sorted(top))
            index = {c: i for i, c in enumerate(classes)}
            labels = tuple(index[n.split("/")[0]] for n in names)
            label_source = "subfolders"
    return Listing(path=path, kind=kind, names=tuple(names), labels=labels, classes=classes,
                   label_source=label_source, fingerprint=fingerprint)


# ----------------------------------------------------------------------------
# Decoding: every image, with the shape checks and the optional crop + resize.

RESIZE_FILTER = "PIL LANCZOS"  # EDM dataset_tool.py's filter (PIL.Image.Resampling.LANCZOS)
_MODES = {"L": 1, "RGB": 3}


def center_crop_resize(img, resolution: int):
    """EDM ``dataset_tool.py --transform=center-crop``: the centered square of side min(H, W) (its integer offsets),
    then PIL's LANCZOS resize to ``resolution`` x ``resolution``. Takes and returns a PIL image (mode kept)."""
    from PIL import Image

    w, h = img.size
    crop = min(w, h)
    box = ((w - crop) // 2, (h - crop) // 2, (w + crop) // 2, (h + crop) // 2)
    if box != (0, 0, w, h):
        img = img.crop(box)
    return img.resize((resolution, resolution), Image.Resampling.LANCZOS)


def _read_bytes(listing: Listing, z: zipfile.ZipFile | None, name: str) -> bytes:
    if z is None:
        full = listing.path / name
        try:
            fd = os.open(full, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))  # a link swapped in since the listing
        except OSError as e:
            raise _error(str(full), f"cannot be read ({e.strerror})", "make it a readable regular file") from None
        with os.fdopen(fd, "rb") as f:
            return f.read()
    return _read_zip_member(z, listing.path, z.getinfo(name))


def _decode(raw: bytes, where: str):
    """PIL image, fully decoded; a non-image, a truncated or corrupt file is one line."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(raw))
    except UnidentifiedImageError:
        raise _error(where, "is not an image PIL can read", "re-export it as PNG or remove it") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise _error(where, f"is not a readable image ({type(e).__name__}: {_one_line(e)[:120]})",
                     "re-export it as PNG or remove it") from None
    try:
        img.load()  # every pixel: a cut-off or damaged stream fails here (PIL refuses truncated images by default)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise _error(where, f"is truncated or corrupt ({type(e).__name__}: {_one_line(e)[:120]})",
                     "re-export it or remove it") from None
    return img


def read_images(listing: Listing, resolution: int | None = None) -> tuple[np.ndarray, str]:
    """Decode every image of ``listing`` in its order -> (uint8 (N, C, R, R), sha256 of the source's bytes).

    Without ``resolution`` the images must all be square, of one power-of-two size, and all RGB or all grayscale;
    with it, each is center-cropped and resized (:func:`center_crop_resize`), so sizes may differ. The sha256 covers
    every image's name and bytes (and dataset.json's), for the provenance record of the prepared dataset.
    """
    h = hashlib.sha256()
    out, first = None, None
    z = zipfile.ZipFile(listing.path) if listing.kind == "zip" else None
    try:
        if ((listing.path / LABELS_FILE).is_file() if z is None else LABELS_FILE in z.NameToInfo):
            raw = _read_bytes(listing, z, LABELS_FILE)
            h.update(f"{LABELS_FILE}\0{len(raw)}\0".encode() + raw)
        for i, name in enumerate(listing.names):
            where = listing.where(name)
            raw = _read_bytes(listing, z, name)
            h.update(f"{name}\0{len(raw)}\0".encode() + raw)
            img = _decode(raw, where)
            if img.mode not in _MODES:
                raise _error(where, f"is a {img.mode} image", "store it as RGB or grayscale (L), e.g. "
                             "PIL's img.convert('RGB') (drops an alpha channel)")
            size, channels = img.size, _MODES[img.mode]
            if first is None:
                first = (name, size, channels)
                if resolution is None and (size[0] != size[1] or not is_power_of_two(size[0])):
                    raise _error(where, f"is {size[0]}x{size[1]}, not a square power-of-two size",
                                 "set dataset.resolution (e.g. 64) to center-crop and resize every image")
                r = resolution or size[0]
                out = np.empty((len(listing.names), channels, r, r), dtype=np.uint8)
            elif channels != first[2]:
                kinds = {1: "grayscale", 3: "RGB"}
                raise _error(where, f"is {kinds[channels]} but {first[0]} is {kinds[first[2]]}",
                             "store every image as RGB, or every image as grayscale")
            elif resolution is None and size != first[1]:
                raise _error(where, f"is {size[0]}x{size[1]} but {first[0]} is {first[1][0]}x{first[1][1]} (mixed "
                             "sizes)", "set dataset.resolution (e.g. 64) to resize every image to one size")
            if resolution is not None:
                img = center_crop_resize(img, resolution)
            a = np.asarray(img, dtype=np.uint8)
            out[i] = a[None] if channels == 1 else a.transpose(2, 0, 1)  # HW(C) -> CHW
    finally:
        if z is not None:
            z.close()
    return out, h.hexdigest()


def probe_shape(listing: Listing, resolution: int | None = None) -> dict:
    """channels and resolution of the prepared images, from the first image's header (nothing decoded)."""
    from PIL import Image

    name = listing.names[0]
    where = listing.where(name)
    z = zipfile.ZipFile(listing.path) if listing.kind == "zip" else None
    try:
        raw = _read_bytes(listing, z, name)
    finally:
        if z is not None:
            z.close()
    try:
        img = Image.open(io.BytesIO(raw))
    except Exception as e:  # any failure to read a header means a bad file
        raise _error(where, f"is not an image PIL can read ({type(e).__name__})", "re-export it as PNG or remove "
                     "it") from None
    if img.mode not in _MODES:
        raise _error(where, f"is a {img.mode} image", "store it as RGB or grayscale (L), e.g. PIL's "
                     "img.convert('RGB') (drops an alpha channel)")
    w, h = img.size
    if resolution is None and (w != h or not is_power_of_two(w)):
        raise _error(where, f"is {w}x{h}, not a square power-of-two size",
                     "set dataset.resolution (e.g. 64) to center-crop and resize every image")
    return dict(channels=_MODES[img.mode], resolution=resolution or w)
