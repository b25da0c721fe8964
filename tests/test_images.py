"""A researcher's own images as a dataset source (``dataset: {source: images, path: ...}``): EDM's dataset_tool.py
layout as a folder and as a zip, ImageFolder class subfolders, the crop + resize against PIL, the sorted order, every
bad input as one line naming the file and the fix (at config time where a listing shows it, else in `prepare`), the
source only read, re-preparation when it changes, FID statistics of the prepared images, and the whole DAG on
scikit-learn's digits written as PNGs by a rule (config/digits-images.yaml)."""

import io
import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import ENV, ROOT, SMK, copy_workflow, job_settings
from PIL import Image

from aot.config.checks import check_config
from aot.config.experiment import GENERATED_SOURCES
from aot.config.yamlio import ConfigError, load_yaml
from aot.core.download import sha256_file
from aot.data.datasets import load_dataset
from aot.data.images import ImageSourceError, center_crop_resize, list_source
from aot.data.sources import digits_dataset, images_dataset, write_digits_pngs


def png_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a, "L" if a.ndim == 2 else None).save(buf, format="png")
    return buf.getvalue()


def random_images(n: int, size: int = 8, channels: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (size, size) if channels == 1 else (size, size, channels)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


def edm_files(images: list[np.ndarray], labels: list[int] | None) -> dict[str, bytes]:
    """What dataset_tool.py writes: 00000/img00000000.png, ... and dataset.json."""
    files = {f"{i:08d}"[:5] + f"/img{i:08d}.png": png_bytes(a) for i, a in enumerate(images)}
    entries = None if labels is None else [[n, y] for n, y in zip(files, labels, strict=True)]
    files["dataset.json"] = json.dumps({"labels": entries}).encode()
    return files


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def write_zip(path: Path, files: dict[str, bytes], order=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name in order or files:
            z.writestr(name, files[name])
    return path


def chw(a: np.ndarray) -> np.ndarray:
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


# ----------------------------------------------------------------------------
# Good sources.


def test_edm_folder_and_zip_give_the_images_in_order_with_their_labels(tmp_path):
    images, labels = random_images(12), [3, 0, 1, 2, 0, 1, 2, 3, 3, 1, 0, 2]
    files = edm_files(images, labels)
    folder = write_folder(tmp_path / "ds", files)
    names = list(files)
    zpath = write_zip(tmp_path / "ds.zip", files, order=names[::-1])  # members in reverse: the order is sorted
    for src in (folder, zpath):
        ds = images_dataset(src, test_fraction=0)
        assert np.array_equal(ds.train_images, np.stack([chw(a) for a in images]))
        assert ds.train_labels.tolist() == labels and ds.test_images.shape == (0, 3, 8, 8)
        assert ds.meta["label_source"] == "dataset.json" and ds.num_classes == 4 and ds.meta["labeled"]
        assert ds.meta["resize"] is None and ds.meta["num_images"] == 12
    assert list_source(folder).fingerprint != list_source(zpath).fingerprint
    # The held-out split is stratified as digits': 1 of the 3 images of each class with test_fraction 1/3.
    ds = images_dataset(folder, test_fraction=1 / 3, seed=0)
    assert np.bincount(ds.test_labels).tolist() == [1, 1, 1, 1] and len(ds.train_labels) == 8


def test_image_folder_classes_are_sorted_subfolders(tmp_path):
    gray = random_images(6, channels=1, seed=1)
    layout = {"zebra/b.png": gray[0], "ant/z.png": gray[1], "moth/a.png": gray[2], "ant/a.png": gray[3],
              "zebra/a.png": gray[4], "moth/sub/c.png": gray[5]}
    write_folder(tmp_path / "d", {n: png_bytes(a) for n, a in layout.items()})
    listing = list_source(tmp_path / "d")
    assert listing.names == ("ant/a.png", "ant/z.png", "moth/a.png", "moth/sub/c.png", "zebra/a.png", "zebra/b.png")
    assert listing.classes == ("ant", "moth", "zebra") and listing.labels == (0, 0, 1, 1, 2, 2)
    ds = images_dataset(tmp_path / "d", test_fraction=0)
    assert ds.train_images.shape == (6, 1, 8, 8) and ds.meta["classes"] == ["ant", "moth", "zebra"]
    assert np.array_equal(ds.train_images[3, 0], layout["moth/sub/c.png"])


def test_unlabeled_sources(tmp_path):
    images = random_images(5)
    flat = write_folder(tmp_path / "flat", {f"{i}.png": png_bytes(a) for i, a in enumerate(images)})
    edm = write_folder(tmp_path / "ffhq", edm_files(images, None) | {"00001/img00100000.png": png_bytes(images[0])})
    for src in (flat, edm):  # EDM's unlabeled datasets ({"labels": null}) have folders 00000/, 00001/: not classes
        listing = list_source(src)
        assert not listing.labeled and listing.num_classes == 1 and listing.classes is None
        ds = images_dataset(src, test_fraction=0)
        assert (ds.train_labels == 0).all() and ds.num_classes == 1 and ds.meta["labeled"] is False


def test_order_is_code_point_order_of_the_names(tmp_path):
    images = random_images(5)
    names = ["b.png", "B.png", "10.png", "9.png", "a.PNG"]
    for name, a in zip(names, images, strict=True):
        (tmp_path / name).write_bytes(png_bytes(a))
    listing = list_source(tmp_path)
    assert listing.names == tuple(sorted(names)) == ("10.png", "9.png", "B.png", "a.PNG", "b.png")
    ds = images_dataset(tmp_path, test_fraction=0)
    assert np.array_equal(ds.train_images[0], chw(images[2]))


def lanczos_reference(a: np.ndarray, r: int) -> np.ndarray:
    """EDM dataset_tool.py's center_crop written out: the slice of side min(H, W), gray repeated to RGB, LANCZOS."""
    crop = min(a.shape[:2])
    a = a[(a.shape[0] - crop) // 2 : (a.shape[0] + crop) // 2, (a.shape[1] - crop) // 2 : (a.shape[1] + crop) // 2]
    if a.ndim == 2:
        a = a[:, :, None].repeat(3, axis=2)
    return np.array(Image.fromarray(a, "RGB").resize((r, r), Image.Resampling.LANCZOS))


@pytest.mark.parametrize("shape", [(20, 12, 3), (12, 20, 3), (13, 13, 3), (5, 9, 3), (16, 16, 3), (21, 14)])
def test_resolution_center_crops_and_resizes_as_dataset_tool(tmp_path, shape):
    a = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    out = np.asarray(center_crop_resize(Image.fromarray(a), 8))
    want = lanczos_reference(a, 8)
    if a.ndim == 2:  # grayscale stays one channel: each of dataset_tool's three equal channels
        assert out.shape == (8, 8) and all(np.array_equal(out, want[..., c]) for c in range(3))
    else:
        assert np.array_equal(out, want)
    # The dataset path: a folder of two such images of different sizes, prepared at resolution 8.
    b = np.random.default_rng(1).integers(0, 256, (30, 40) + shape[2:], dtype=np.uint8)
    write_folder(tmp_path / "d", {"a.png": png_bytes(a), "b.png": png_bytes(b)})
    ds = images_dataset(tmp_path / "d", resolution=8, test_fraction=0)
    assert np.array_equal(ds.train_images[0], chw(out)) and "LANCZOS" in ds.meta["resize"]


def test_resolution_of_the_images_own_size_changes_nothing(tmp_path):
    a = random_images(1, size=16)[0]
    assert np.array_equal(np.asarray(center_crop_resize(Image.fromarray(a), 16)), a)


def test_digits_pngs_are_the_digits_source(tmp_path):
    """The PNG folder and zip of rule digits_png prepare to the very arrays of `source: digits` (same split)."""
    want = digits_dataset(test_fraction=0.2, seed=0)
    for out in (tmp_path / "digits-png", tmp_path / "digits-png.zip"):
        write_digits_pngs(out)
        ds = images_dataset(out, test_fraction=0.2, seed=0)
        for key in ("train_images", "train_labels", "test_images", "test_labels"):
            assert np.array_equal(getattr(ds, key), getattr(want, key)), key
        listing = list_source(out)
        assert listing.names[0] == "00000/img00000000.png" and listing.label_source == "dataset.json"
        known = GENERATED_SOURCES[f"resources/{out.name}"]  # what the config check assumes before the rule ran
        assert known == dict(channels=ds.channels, resolution=ds.resolution, num_classes=ds.num_classes,
                             labeled=listing.labeled)
    with pytest.raises(ValueError, match="exists; remove it first"):
        write_digits_pngs(tmp_path / "digits-png")


# ----------------------------------------------------------------------------
# Bad input: one line naming the file and the fix.


def _good(root: Path, n: int = 3) -> dict[str, bytes]:
    return {f"{i}.png": png_bytes(a) for i, a in enumerate(random_images(n))}


def _symlink_file(tmp):
    root = write_folder(tmp / "src", _good(tmp))
    (root / "link.png").symlink_to(root / "0.png")
    return root, "link.png"


def _symlink_dir(tmp):
    root = write_folder(tmp / "src", {"cat/0.png": png_bytes(random_images(1)[0])})
    (root / "dog").symlink_to(root / "cat")
    return root, "dog"


def _zip_link(tmp):
    path = write_zip(tmp / "src.zip", _good(tmp))
    with zipfile.ZipFile(path, "a") as z:
        info = zipfile.ZipInfo("link.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, "0.png")
    return path, "link.png"


def _empty_class(tmp):
    root = write_folder(tmp / "src", {"cat/0.png": png_bytes(random_images(1)[0]), "dog/x/0.png": png_bytes(G[1])})
    (root / "dog/x/0.png").unlink()  # dog/ and dog/x/ stay, empty
    return root, "dog"


def _not_a_zip(tmp):
    (tmp / "src.zip").write_bytes(b"PK\x03\x04 garbage")  # a zip's first bytes, then nothing of one
    return tmp / "src.zip", "src.zip"


def _truncated(tmp, keep=0.6):
    a = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    files = _good(tmp)
    data = png_bytes(a)
    files["1.png"] = data[: int(len(data) * keep)]
    return files


def _labels(entries) -> bytes:
    return json.dumps({"labels": entries}).encode()


def _zip_bad_crc(tmp):
    path = write_zip(tmp / "src.zip", _good(tmp))
    data = bytearray(path.read_bytes())
    target = png_bytes(random_images(3)[1])
    at = bytes(data).index(target) + len(target) // 2  # a byte inside the stored member 1.png
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    return path, "1.png"


def _f(files, culprit):
    """A folder case: the files to write and the name the error must carry."""
    return lambda tmp: (write_folder(tmp / "src", files(tmp) if callable(files) else files), culprit)


def _z(files, culprit):
    return lambda tmp: (write_zip(tmp / "src.zip", files(tmp) if callable(files) else files), culprit)


G = random_images(4)
BAD = {  # case -> (builder -> (source, the file the line must name), a phrase of the problem, of the fix, config time)
    "mixed sizes": (_f({"a.png": png_bytes(G[0]), "b.png": png_bytes(random_images(1, size=16)[0])}, "b.png"),
                    "mixed sizes", "set dataset.resolution", False),
    "mixed channels": (_f({"a.png": png_bytes(G[0]), "b.png": png_bytes(random_images(1, channels=1)[0])}, "b.png"),
                       "is grayscale but a.png is RGB", "every image as grayscale", False),
    "not square": (_f({"a.png": png_bytes(np.zeros((8, 4, 3), np.uint8))}, "a.png"),
                   "not a square power-of-two size", "set dataset.resolution", True),
    "not a power of two": (_f({"a.png": png_bytes(np.zeros((12, 12, 3), np.uint8))}, "a.png"),
                           "not a square power-of-two size", "set dataset.resolution", True),
    "non-image file": (_f(lambda t: _good(t) | {"notes.txt": b"hello"}, "notes.txt"),
                       "is not an image (extension '.txt'", "remove it or move it out", True),
    "non-image named .png": (_f(lambda t: _good(t) | {"2.png": b"<html>404</html>"}, "2.png"),
                             "is not an image PIL can read", "re-export it", False),
    "RGBA image": (_f({"a.png": png_bytes(np.zeros((8, 8, 4), np.uint8))}, "a.png"),
                   "is a RGBA image", "convert('RGB')", True),
    "label names a missing file": (_f(lambda t: _good(t, 2) | {"dataset.json": _labels(
        [["0.png", 0], ["1.png", 1], ["gone.png", 1]])}, "dataset.json"), "names gone.png, which is not an image",
        "remove the entry or add the image", True),
    "image without a label": (_f(lambda t: _good(t, 2) | {"dataset.json": _labels([["0.png", 0]])}, "dataset.json"),
                              "has no label for 1.png", "give every image a label", True),
    "empty class folder": (_empty_class,
                           "a folder with no images (an empty class)", "add its images or remove the folder", True),
    "empty class in labels": (_f(lambda t: _good(t, 2) | {"dataset.json": _labels([["0.png", 0], ["1.png", 2]])},
                                 "dataset.json"), "class 1 has no images", "number the classes 0..K-1", True),
    "image beside class folders": (_f({"cat/0.png": png_bytes(G[0]), "dog/0.png": png_bytes(G[1]),
                                       "stray.png": png_bytes(G[2])}, "stray.png"),
                                   "at the top level, beside class subfolders", "move it into the folder", True),
    "zip member with ..": (_z(lambda t: _good(t) | {"../evil.png": png_bytes(G[0])}, "../evil.png"),
                           "has a .. component (refused, never extracted)", "paths relative to its root", True),
    "zip member with an absolute path": (_z(lambda t: _good(t) | {"/etc/evil.png": png_bytes(G[0])}, "/etc/evil.png"),
                                         "has an absolute path (refused", "paths relative to its root", True),
    "symlink in the folder": (_symlink_file, "is a symbolic link (refused, not followed)", "copy the file", True),
    "symlinked class folder": (_symlink_dir, "is a symbolic link (refused, not followed)", "copy the folder", True),
    "symlink in the zip": (_zip_link, "is a symbolic link (refused, not followed)", "re-create the zip", True),
    "0-byte file": (_f(lambda t: _good(t) | {"empty.png": b""}, "empty.png"), "is empty (0 bytes)", "re-export", True),
    "truncated PNG": (_f(_truncated, "1.png"), "is truncated or corrupt", "re-export it or remove it", False),
    "truncated PNG in a zip": (_z(_truncated, "1.png"), "is truncated or corrupt", "re-export it", False),
    "zip member with a bad CRC": (_zip_bad_crc, "is corrupt (BadZipFile", "re-create the zip", False),
    "corrupt dataset.json": (_f(lambda t: _good(t) | {"dataset.json": b'{"labels": [["0.png", 0],'}, "dataset.json"),
                             "is not valid JSON", 'write {"labels": [[', True),
    "dataset.json without labels": (_f(lambda t: _good(t) | {"dataset.json": b'{"classes": 3}'}, "dataset.json"),
                                    "has no 'labels' key", "delete dataset.json to take the classes", True),
    "dataset.json with a float label": (_f(lambda t: _good(t, 1) | {"dataset.json": _labels([["0.png", 1.5]])},
                                           "dataset.json"), "not [name, class index >= 0]", "write {", True),
    "not a zip": (_not_a_zip,
                  "is not a readable zip archive", "re-create it", True),
    "no images": (lambda t: (write_folder(t / "src", {"dataset.json": _labels(None)}), "src"), "holds no images",
                  "point dataset.path at", True),
    "missing path": (lambda t: (t / "nowhere", "nowhere"), "does not exist", "point dataset.path at", True),
}


def one_line(err: Exception, culprit: str, problem: str, fix: str) -> str:
    msg = str(err)
    assert "\n" not in msg and msg.startswith("dataset.path: "), msg
    assert culprit in msg and problem in msg and fix in msg, msg
    return msg


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_naming_the_file_and_the_fix(tmp_path, case):
    build, problem, fix, early = BAD[case]
    src, culprit = build(tmp_path)
    with pytest.raises(ImageSourceError) as info:
        images_dataset(src, test_fraction=0)
    one_line(info.value, culprit, problem, fix)
    cfg = images_config(src, conditioning=["uncond"], evaluate={"metrics": ["inception"], "fid_block": 4})
    if early:  # a listing or the first image's header shows it: the config check refuses it, before any job
        with pytest.raises(ConfigError) as info:
            check_config(cfg)
        assert str(info.value).startswith("config error: dataset.path: ")
        one_line(ValueError(str(info.value).removeprefix("config error: ")), culprit, problem, fix)
    else:  # only decoding every image shows it: `prepare`, the first job, refuses it
        check_config(cfg)


def test_prepare_cli_bad_input_is_one_line_and_writes_nothing(tmp_path):
    src, _ = BAD["truncated PNG"][0](tmp_path)
    r = subprocess.run([sys.executable, "-m", "aot", "prepare", "--source", "images", "--path", str(src),
                        "--out", "d.npz", "--info", "d.json"], cwd=tmp_path, env=ENV, capture_output=True, text=True)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: dataset.path: {src / '1.png'}: ")
    assert not (tmp_path / "d.npz").exists() and not (tmp_path / "d.json").exists()


# ----------------------------------------------------------------------------
# Config checks.


def images_config(path, **over) -> dict:
    cfg = load_yaml(ROOT / "config/digits-images.yaml")
    cfg["dataset"] = {"source": "images", "path": str(path)}
    for key, value in over.items():
        cfg[key] = value
    return cfg


def config_error(cfg: dict) -> str:
    with pytest.raises(ConfigError) as info:
        check_config(cfg)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_config_checks_of_an_images_source(tmp_path):
    flat = write_folder(tmp_path / "flat", _good(tmp_path, 4))
    classes = write_folder(tmp_path / "cls", {f"{c}/{i}.png": png_bytes(a) for c in "ab"
                                              for i, a in enumerate(random_images(3))})
    assert config_error(images_config(flat)).startswith(
        f"config error: conditioning: cond needs class labels and {flat} has none")
    assert config_error(images_config(flat, conditioning=["uncond"])).startswith(
        "config error: evaluate.metrics: featnet is a classifier trained on the class labels")
    ok = check_config(images_config(flat, conditioning=["uncond"], evaluate={"metrics": ["inception"],
                                                                             "fid_block": 4}))
    assert ok["evaluate"]["fid_ref"] == "dataset"  # the default reference of one's own images is those images
    explicit = images_config(flat, conditioning=["uncond"], evaluate={"metrics": ["inception"], "fid_block": 4,
                                                                   "fid_ref": "cifar10"})
    assert check_config(explicit)["evaluate"]["fid_ref"] == "cifar10"  # EDM's cifar10-32x32.zip, say
    assert check_config(images_config(classes))["dataset"] == dict(
        source="images", path=str(classes), resolution=None, channels=None, num_classes=None, test_fraction=0.2,
        split_seed=0, subset=None,
        subset_seed=0)
    cfg = images_config(classes)
    cfg["dataset"]["subset"] = 15
    assert "dataset.subset: 15 is not a multiple of the 2 classes" in config_error(cfg)
    cfg["dataset"].update(subset=None, resolution=48)
    assert "dataset.resolution: 48 is not a power of two" in config_error(cfg) and "use 32 or 64" in config_error(cfg)
    cfg["dataset"].update(resolution=None, test_fraction=0)
    assert config_error(cfg).startswith("config error: dataset.test_fraction: 0 leaves no held-out images")
    assert config_error(images_config(classes) | {"dataset": {"source": "images"}}).startswith(
        "config error: dataset.path: source images needs the folder or .zip of images")
    assert "dataset.path: not used with source digits" in config_error(
        images_config(classes) | {"dataset": {"source": "digits", "path": "x"}})
    # The generated digits folder need not exist yet: the rule writes it.
    assert check_config(load_yaml(ROOT / "config/digits-images.yaml"))["dataset"]["path"] == "resources/digits-png"


def test_show_config_builds_the_networks_for_the_images(tmp_path):
    write_folder(tmp_path / "cls", {f"{c}/{i}.png": png_bytes(a) for c in "abc"
                                    for i, a in enumerate(random_images(2, size=32, channels=1))})
    r = subprocess.run([sys.executable, "-m", "aot", "show-config", "--configfile", "config/digits-images.yaml",
                        "--config", f"dataset={{path: {tmp_path / 'cls'}, resolution: 16}}", "--json"], cwd=ROOT,
                       env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (d["dataset"]["channels"], d["dataset"]["resolution"], d["dataset"]["num_classes"]) == (1, 16, 3)
    assert d["models"]["aot-cond"]["label_dim"] == 3 and d["models"]["aot-uncond"]["label_dim"] == 0


# ----------------------------------------------------------------------------
# The workflow: declared input, re-preparation, read-only source, FID reference, hostile paths.


def smk(args, cwd, timeout=300):
    return subprocess.run(SMK + args, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


def tree(top: Path) -> dict[str, tuple[int, int, bytes]]:
    """path -> (size, mtime, bytes) of every file under ``top`` except Snakemake's own .snakemake/."""
    return {str(p.relative_to(top)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes()) for p in top.rglob("*")
            if p.is_file() and ".snakemake" not in p.relative_to(top).parts}


@pytest.fixture
def wf(tmp_path):
    return copy_workflow(tmp_path / "wf")


@pytest.mark.slow
def test_prepared_once_read_only_and_re_prepared_when_the_source_changes(tmp_path, wf):
    images = random_images(8, size=8)
    folder = write_folder(tmp_path / "my images", {f"{c}/{i}.png": png_bytes(a) for i, a in enumerate(images)
                                                   for c in ["cat" if i % 2 else "dog"]})
    zpath = write_zip(tmp_path / "my images.zip", edm_files(images, [i % 2 for i in range(8)]))
    for p in [zpath, *folder.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)  # read-only: preparing must not need to write there
    before = tree(tmp_path)
    target = "results/mine/data/dataset.npz"
    for src in (folder, zpath):
        flags = ["--configfile", "config/digits-images.yaml", "--config", "experiment=mine",
                 f"dataset={{path: {src}}}"]
        r = smk(["--cores", "1", target, *flags], cwd=wf)
        assert r.returncode == 0, r.stderr[-3000:]
        info = json.loads((wf / "results/mine/data/dataset.json").read_text())
        assert info["sha256"] == sha256_file(wf / target) and info["meta"]["source"] == str(src)
        ds = load_dataset(wf / target)
        assert ds.num_classes == 2 and len(ds.train_images) + len(ds.test_images) == 8
        again = smk(["-n", target, *flags], cwd=wf)
        assert "Nothing to be done" in again.stdout + again.stderr  # prepared once
        after = tree(tmp_path)
        assert {p: v for p, v in after.items() if not p.startswith("wf/")} == {p: v for p, v in before.items()
                                                                               if not p.startswith("wf/")}
        assert not [p for p in after if p.startswith("wf/") and p not in before and not p.startswith("wf/results/")]
    # An edited image (new bytes, same name) re-prepares; so does a replaced zip member (its CRC-32 changes).
    flags = ["--configfile", "config/digits-images.yaml", "--config", "experiment=mine", f"dataset={{path: {folder}}}"]
    smk(["--cores", "1", target, *flags], cwd=wf)
    edited = folder / "dog/0.png"
    edited.chmod(0o644)
    edited.write_bytes(png_bytes(random_images(1, seed=9)[0]))
    r = smk(["-n", target, *flags], cwd=wf)
    assert "prepare_dataset" in r.stdout and "Params have changed" in r.stdout, r.stdout[-2000:]
    zflags = ["--configfile", "config/digits-images.yaml", "--config", "experiment=mine", f"dataset={{path: {zpath}}}"]
    assert smk(["--cores", "1", target, *zflags], cwd=wf).returncode == 0
    zpath.chmod(0o644)
    files = edm_files(images, [i % 2 for i in range(8)])
    files["00000/img00000003.png"] = png_bytes(random_images(1, seed=7)[0])
    write_zip(zpath, files)
    os.utime(zpath, ns=(0, 0))  # even with an old mtime: the listing's CRC-32 changed
    r = smk(["-n", target, *zflags], cwd=wf)
    assert "prepare_dataset" in r.stdout, r.stdout[-2000:]


@pytest.mark.slow
def test_bad_source_stops_before_any_job_or_in_prepare(tmp_path, wf):
    src, _ = BAD["empty class folder"][0](tmp_path)
    flags = ["--configfile", "config/digits-images.yaml", "--config", f"dataset={{path: {src}}}"]
    r = smk(["-n", *flags], cwd=wf)
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if "config error" in ln]
    assert r.returncode != 0 and lines == [f"config error: dataset.path: {src / 'dog'}: is a folder with no images "
                                           "(an empty class); add its images or remove the folder"]
    src, _ = BAD["truncated PNG"][0](tmp_path / "t")
    flags = ["--configfile", "config/digits-images.yaml", "--config", "conditioning=[uncond]",
             f"dataset={{path: {src}}}", "evaluate={metrics: [inception], fid_block: 4}"]
    r = smk(["--cores", "1", "results/digits-images/models/aot-uncond/network.pt", *flags], cwd=wf)
    assert r.returncode != 0 and "Error in rule prepare_dataset" in r.stdout + r.stderr
    log = (wf / "results/digits-images/logs/prepare_dataset.log").read_text().strip().splitlines()
    assert len(log) == 1 and log[0].startswith(f"error: dataset.path: {src / '1.png'}: is truncated or corrupt")
    assert not (wf / "results/digits-images/runs").exists() and not (wf / "results/digits-images/models").exists()


HOSTILE_DIR = "my $(touch HACK) `touch HACK`;touch HACK 'q' \"dq\""


@pytest.mark.slow
def test_fid_reference_of_the_prepared_images_at_a_hostile_path(tmp_path, wf):
    """fid_ref: dataset (the images source's default) on Inception stand-in features of the prepared images, read
    from a folder whose name is a shell attack: the quoted commands run, nothing else is written."""
    from fakes import FakeInception, write_fake_inception

    images = random_images(6, size=16)
    write_folder(tmp_path / HOSTILE_DIR, {f"{i}.png": png_bytes(a) for i, a in enumerate(images)})
    write_fake_inception(tmp_path / "inception.pt")
    cfg = images_config(f"../{HOSTILE_DIR}", conditioning=["uncond"])
    cfg["dataset"]["test_fraction"] = 0
    cfg["evaluate"] = {"metrics": ["inception"], "fid_block": 4, "inception_weights": "../inception.pt",
                       "inception_sha256": sha256_file(tmp_path / "inception.pt")}
    (wf / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = smk(["-n", "-p", "--forceall", "--configfile", "c.yaml"], cwd=wf)
    assert r.returncode == 0, r.stderr[-2000:]
    prep = next(ln for ln in r.stdout.splitlines() if "-m aot prepare" in ln)
    assert " --path '../my $(touch HACK)" in prep and job_settings(prep)["source"] == "images"
    fid = next(ln for ln in r.stdout.splitlines() if "-m aot fid-ref" in ln)
    assert " --data results/digits-images/data/dataset.npz" in fid and job_settings(fid)["source"] == "dataset"
    before = tree(tmp_path)
    r = smk(["--cores", "1", "results/digits-images/fid/ref_stats.npz", "--configfile", "c.yaml"], cwd=wf)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not list(tmp_path.rglob("HACK")) and not list(ROOT.rglob("HACK"))
    after = tree(tmp_path)
    assert {p: v for p, v in after.items() if not p.startswith("wf/results/")} == before
    feats = FakeInception()(torch.tensor(np.stack([chw(a) for a in images]), dtype=torch.float32),
                            return_features=True).double().numpy()
    with np.load(wf / "results/digits-images/fid/ref_stats.npz") as stats:
        assert np.allclose(stats["mu"], feats.mean(0), rtol=1e-5, atol=1e-5)
        assert np.allclose(stats["sigma"], np.cov(feats, rowvar=False), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------
# The whole DAG on a folder of PNGs that a rule writes from scikit-learn's digits (config/digits-images.yaml).


@pytest.mark.slow
def test_digits_images_config_runs_every_stage(tmp_path):
    wf = copy_workflow(tmp_path / "wf")
    before = tree(wf)
    r = smk(["--cores", "2", "--configfile", "config/digits-images.yaml"], cwd=wf, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    png = sorted((wf / "resources/digits-png").rglob("*.png"))
    assert len(png) == 1797 and png[0].relative_to(wf).as_posix() == "resources/digits-png/00000/img00000000.png"
    info = json.loads((wf / "results/digits-images/data/dataset.json").read_text())
    assert info["meta"]["source"] == "resources/digits-png" and info["meta"]["label_source"] == "dataset.json"
    assert info["train"] == [1438, 1, 8, 8] and info["meta"]["num_classes"] == 10
    scores = pd.read_csv(wf / "results/tables/digits-images/scores.csv")
    assert set(zip(scores["arm"], scores["conditioning"], strict=True)) == {("aot", "uncond"), ("aot", "cond")}
    assert (scores["ours"] > 0).all()
    for cond, label_dim in (("uncond", 0), ("cond", 10)):  # the conditional model: one label per class folder
        ckpt = torch.load(wf / f"results/digits-images/models/aot-{cond}/network.pt", weights_only=True)
        assert ckpt["ctor"]["label_dim"] == label_dim
    for png_out in ("samples/aot-cond/rho7-steps4.png", "figures/score_vs_nfe.png",
                    "figures/trajectory-rho7-steps4.png"):
        assert (wf / "results/digits-images" / png_out).read_bytes()[:4] == b"\x89PNG"
    after = tree(wf)
    written = {p for p in after if p not in before}
    assert all(p.startswith(("results/", "resources/")) for p in written), sorted(written)[:5]
    assert {p: v for p, v in after.items() if p in before} == before  # nothing of the checkout changed
    # The same source as a zip (rule digits_png_zip) prepares to the same arrays.
    r = smk(["--cores", "1", "results/zip/data/dataset.npz", "--configfile", "config/digits-images.yaml",
             "--config", "experiment=zip", "dataset={path: resources/digits-png.zip}"], cwd=wf)
    assert r.returncode == 0, r.stderr[-3000:]
    a = load_dataset(wf / "results/digits-images/data/dataset.npz")
    b = load_dataset(wf / "results/zip/data/dataset.npz")
    assert np.array_equal(a.train_images, b.train_images) and np.array_equal(a.test_labels, b.test_labels)


def test_a_declared_shape_stands_in_for_missing_images_and_is_checked_against_present_ones(tmp_path):
    """dataset.resolution/channels/num_classes declared in full let a config be checked (and show-config size its
    networks) before the images exist; once they exist, a declared value they contradict is one line."""
    classes = write_folder(tmp_path / "cls", {f"{c}/{i}.png": png_bytes(a) for c in "ab"
                                              for i, a in enumerate(random_images(3))})
    missing = tmp_path / "not-yet.zip"
    cfg = images_config(missing)
    cfg["dataset"].update(resolution=8, channels=3, num_classes=2)
    assert check_config(cfg)["dataset"]["num_classes"] == 2
    cfg["dataset"].pop("channels")
    assert config_error(cfg).startswith(f"config error: dataset.channels: {missing} does not exist yet, so the "
                                        "images' shape must be declared in full")
    cfg = images_config(classes)
    cfg["dataset"].update(channels=1)
    assert config_error(cfg) == (f"config error: dataset.channels: 1 declared, but {classes} has 3; correct "
                                 "dataset.channels or remove it")
    cfg["dataset"].update(channels=3, num_classes=2)
    check_config(cfg)


def test_declared_zero_classes_is_an_unlabeled_source(tmp_path):
    """num_classes: 0 is how a config says 'unlabeled' (config/ffhq64-uncond.yaml): an unlabeled folder matches it,
    a labelled one does not."""
    flat = write_folder(tmp_path / "flat", _good(tmp_path, 4))
    cfg = images_config(flat, conditioning=["uncond"], evaluate={"metrics": ["inception"], "fid_block": 4})
    cfg["dataset"].update(num_classes=0)
    check_config(cfg)
    classes = write_folder(tmp_path / "cls", {f"{c}/{i}.png": png_bytes(a) for c in "ab"
                                              for i, a in enumerate(random_images(3))})
    cfg["dataset"].update(path=str(classes))
    assert config_error(cfg) == (f"config error: dataset.num_classes: 0 declared, but {classes} has 2; correct "
                                 "dataset.num_classes or remove it")
