"""aot.models.dg_assets: fetching DG's ADM 32x32 classifier with gdown, faked here (no network in tests).

The fake gdown serves a file the project makes: a state_dict with every key name and shape of aot.models.adm's
ADM 32x32 classifier (checked against tests/fixtures/adm_classifier32_keys.json, DG's own layout), each tensor a
random float32 scalar broadcast to its shape (stride 0), so the file is ~80 KB instead of DG's 191 MB (47.8M
parameters) while passing the same checks as the real file.
"""

import hashlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from aot.models.dg_assets import (
    ADM64_URL,
    CLASSIFIERS,
    CONFIG_KEY,
    FILE_NAME,
    FOLDER_ID,
    FOLDER_URL,
    DGAssetError,
    expected_shapes,
    fetch_dg_classifier,
    verify_classifier,
)

FIXTURES = Path(__file__).parent / "fixtures"


def classifier_state_dict() -> dict:
    torch.manual_seed(0)
    return {k: torch.randn(()).expand(shape) for k, shape in expected_shapes().items()}


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("src") / FILE_NAME
    torch.save(classifier_state_dict(), path)
    assert path.stat().st_size < 1_000_000
    return path


class FakeGdown(types.ModuleType):
    """gdown 6.x's download_folder (listing only, skip_download=True) and download (one file by id)."""

    def __init__(self, src: Path | None = None, *, fail: Exception | None = None, path=f"ADM_classifier/{FILE_NAME}"):
        super().__init__("gdown")
        self.src, self.fail, self.path, self.calls = src, fail, path, []

    def download_folder(self, *, id, output, quiet, use_cookies, skip_download, timeout):
        self.calls.append(("download_folder", id))
        assert skip_download and not use_cookies and timeout and Path(output).is_dir()
        if isinstance(self.fail, ConnectionError):
            raise self.fail
        other = types.SimpleNamespace(id="other", path="discriminator/cifar_uncond/discriminator_60.pt")
        return [other] + ([types.SimpleNamespace(id="clf", path=self.path)] if self.path else [])

    def download(self, *, id, output, quiet, use_cookies, timeout):
        self.calls.append(("download", id))
        assert id == "clf" and not use_cookies and timeout
        Path(output).write_bytes(b"partial")  # what an interrupted download leaves behind
        if self.fail is not None:
            raise self.fail
        Path(output).write_bytes(self.src.read_bytes())
        return output


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_expected_shapes_are_dgs_layout():
    fixture = json.loads((FIXTURES / "adm_classifier32_keys.json").read_text())["adm_classifier_32"]
    assert {k: list(v) for k, v in expected_shapes().items()} == fixture
    assert sum(torch.Size(s).numel() for s in expected_shapes().values()) == 47_771_112


def test_download_verify_and_sha256(tmp_path, monkeypatch, classifier_file):
    fake = FakeGdown(classifier_file)
    monkeypatch.setitem(sys.modules, "gdown", fake)
    out = tmp_path / "resources" / "dg" / FILE_NAME
    info = fetch_dg_classifier(out)
    data = out.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert data == classifier_file.read_bytes()
    assert info == dict(path=str(out), sha256=digest, url=FOLDER_URL, bytes=len(data), downloaded=True)
    assert (out.parent / f"{FILE_NAME}.sha256").read_text() == f"{digest}  {FILE_NAME}\n"
    assert leftovers(out.parent) == [FILE_NAME, f"{FILE_NAME}.sha256"]  # no temporary folder left
    assert fake.calls == [("download_folder", FOLDER_ID), ("download", "clf")]  # one file, not the whole folder
    # What the discriminator does with it: a strict load into aot.models.adm's classifier.
    from aot.models.adm import ADM_CLASSIFIER_32, EncoderUNet, load_state_dict_file

    EncoderUNet(**ADM_CLASSIFIER_32).load_state_dict(load_state_dict_file(out), strict=True)


def test_present_file_is_kept_without_network(tmp_path, monkeypatch, classifier_file):
    fake = FakeGdown(classifier_file)
    monkeypatch.setitem(sys.modules, "gdown", fake)
    out = tmp_path / FILE_NAME
    out.write_bytes(classifier_file.read_bytes())  # put there by hand
    info = fetch_dg_classifier(out)
    assert fake.calls == [] and info["downloaded"] is False
    assert info["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert (tmp_path / f"{FILE_NAME}.sha256").read_text() == f"{info['sha256']}  {FILE_NAME}\n"
    assert fetch_dg_classifier(out, download=False) == info


def assert_one_line_for_hand_download(err: DGAssetError, out: Path) -> str:
    msg = str(err)
    assert "\n" not in msg
    assert FOLDER_URL in msg and str(out) in msg and CONFIG_KEY in msg
    return msg


@pytest.mark.parametrize("fail", [ConnectionError("Failed to resolve 'drive.google.com'\n(Name or service not known)"),
                                  RuntimeError("Too many users have viewed or downloaded this file recently.\n"
                                               "Please try accessing the file again later.")],
                         ids=["offline", "quota"])
def test_failed_download_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, classifier_file, fail):
    monkeypatch.setitem(sys.modules, "gdown", FakeGdown(classifier_file, fail=fail))
    out = tmp_path / "dg" / FILE_NAME
    with pytest.raises(DGAssetError) as e:
        fetch_dg_classifier(out)
    msg = assert_one_line_for_hand_download(e.value, out)
    assert type(fail).__name__ in msg and str(fail).split("\n")[0] in msg
    assert leftovers(out.parent) == []


def test_file_missing_from_folder(tmp_path, monkeypatch, classifier_file):
    monkeypatch.setitem(sys.modules, "gdown", FakeGdown(classifier_file, path=None))
    out = tmp_path / FILE_NAME
    with pytest.raises(DGAssetError, match="lists no 32x32_classifier.pt") as e:
        fetch_dg_classifier(out)
    assert_one_line_for_hand_download(e.value, out)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("content", ["random", "reshaped", "html"])
def test_downloaded_file_that_is_not_the_classifier_is_refused(tmp_path, monkeypatch, content):
    src = tmp_path / "src.pt"
    if content == "random":
        torch.save({"weight": torch.randn(3, 3), "bias": torch.randn(3)}, src)
    elif content == "reshaped":  # e.g. a 64x64 classifier: same names, other shapes
        sd = classifier_state_dict()
        sd["input_blocks.0.0.weight"] = torch.zeros(()).expand(256, 3, 3, 3)
        torch.save(sd, src)
    else:  # Google Drive's "can't scan this file for viruses" page saved under the file's name
        src.write_text("<!DOCTYPE html><html><body>Google Drive - Virus scan warning</body></html>")
    monkeypatch.setitem(sys.modules, "gdown", FakeGdown(src))
    out = tmp_path / "dg" / FILE_NAME
    with pytest.raises(DGAssetError, match="the downloaded file was refused") as e:
        fetch_dg_classifier(out)
    msg = assert_one_line_for_hand_download(e.value, out)
    assert ".part" not in msg  # names the file, not the temporary folder
    if content == "reshaped":
        assert "'input_blocks.0.0.weight': [256, 3, 3, 3], expected [128, 3, 3, 3]" in msg
    assert leftovers(out.parent) == []


def test_gdown_not_installed(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gdown", None)  # import gdown -> ImportError
    out = tmp_path / FILE_NAME
    with pytest.raises(DGAssetError, match=r"pip install gdown") as e:
        fetch_dg_classifier(out)
    assert_one_line_for_hand_download(e.value, out)
    assert leftovers(tmp_path) == []


def test_bad_file_in_place_is_replaced_only_by_a_good_one(tmp_path, monkeypatch, classifier_file):
    out = tmp_path / FILE_NAME
    out.write_text("not a checkpoint")
    with pytest.raises(DGAssetError, match="the file already there was refused"):
        fetch_dg_classifier(out, download=False)
    monkeypatch.setitem(sys.modules, "gdown", FakeGdown(classifier_file, fail=ConnectionError("offline")))
    with pytest.raises(DGAssetError):
        fetch_dg_classifier(out)
    assert out.read_text() == "not a checkpoint" and leftovers(tmp_path) == [FILE_NAME]
    monkeypatch.setitem(sys.modules, "gdown", FakeGdown(classifier_file))
    assert fetch_dg_classifier(out)["downloaded"] is True
    verify_classifier(out)


def test_non_finite_weights_are_refused(tmp_path):
    sd = classifier_state_dict()
    sd["out.2.c_proj.bias"] = torch.full((1000,), float("nan"))
    torch.save(sd, tmp_path / "nan.pt")
    with pytest.raises(ValueError, match="'out.2.c_proj.bias' has non-finite values"):
        verify_classifier(tmp_path / "nan.pt")


def test_cli_offline_is_one_line(tmp_path):
    # A gdown that fails as on a node without internet, first on PYTHONPATH: no real network attempt, whatever
    # the machine running the tests can reach.
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "gdown.py").write_text(
        "def download_folder(**kw):\n"
        "    raise ConnectionError(\"HTTPSConnectionPool(host='drive.google.com', port=443): Max retries\\n"
        "exceeded (Failed to resolve 'drive.google.com')\")\n"
        "def download(**kw):\n"
        "    raise AssertionError('not reached')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT)])}
    out = Path("resources") / "dg" / FILE_NAME
    r = subprocess.run([sys.executable, "-m", "aot", "fetch-dg-classifier", "--out", str(out)], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: could not fetch DG's ADM classifier 32x32_classifier.pt: listing the Google "
                               "Drive folder failed (ConnectionError: HTTPSConnectionPool")
    assert FOLDER_URL in lines[0] and f"put it at {out} " in lines[0] and CONFIG_KEY in lines[0]
    assert leftovers(tmp_path / "resources" / "dg") == []


def test_cli_success_prints_info_json(tmp_path, classifier_file):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "gdown.py").write_text(
        "import shutil, types\n"
        "def download_folder(**kw):\n"
        f"    return [types.SimpleNamespace(id='clf', path={FILE_NAME!r})]\n"
        "def download(*, output, **kw):\n"
        f"    shutil.copyfile({str(classifier_file)!r}, output)\n"
        "    return output\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT)])}
    r = subprocess.run([sys.executable, "-m", "aot", "fetch-dg-classifier", "--out", "x/clf.pt"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stderr.strip().splitlines()[-1])
    assert info["path"] == "x/clf.pt" and info["downloaded"] is True
    assert (tmp_path / "x" / "clf.pt.sha256").read_text() == f"{info['sha256']}  clf.pt\n"


# ---------------------------------------------------------------------------------------------------------------
# adm64: guided-diffusion's 64x64_classifier.pt, one HTTPS file (torch.hub's downloader, faked here).


@pytest.fixture(scope="module")
def classifier64_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("src64") / "64x64_classifier.pt"
    torch.save({k: torch.randn(()).expand(shape) for k, shape in expected_shapes("adm64").items()}, path)
    return path


def fake_https(monkeypatch, src: Path | None, calls: list):
    def download_url_to_file(url, dst, progress=True):
        calls.append(url)
        Path(dst).write_bytes(b"partial")
        if src is None:
            raise ConnectionError("Failed to resolve 'openaipublic.blob.core.windows.net'")
        Path(dst).write_bytes(src.read_bytes())

    import torch.hub

    monkeypatch.setattr(torch.hub, "download_url_to_file", download_url_to_file)


def test_adm64_is_guided_diffusions_64x64_classifier():
    c = CLASSIFIERS["adm64"]
    assert (c.file, c.resolution, c.channels, c.time, c.url) == ("64x64_classifier.pt", 64, 3, "cosine", ADM64_URL)
    assert ADM64_URL == "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/64x64_classifier.pt"
    fixture = json.loads((FIXTURES / "adm_classifier64_keys.json").read_text())  # DG's load_classifier(None, 64)
    assert {k: list(v) for k, v in expected_shapes("adm64").items()} == fixture
    assert sum(torch.Size(s).numel() for s in expected_shapes("adm64").values()) == 65_438_568


def test_adm64_download_verify_and_sha256(tmp_path, monkeypatch, classifier64_file):
    calls = []
    fake_https(monkeypatch, classifier64_file, calls)
    out = tmp_path / "resources" / "dg" / "64x64_classifier.pt"
    info = fetch_dg_classifier(out, extractor="adm64")
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert calls == [ADM64_URL] and out.read_bytes() == classifier64_file.read_bytes()
    assert info == dict(path=str(out), sha256=digest, url=ADM64_URL, bytes=out.stat().st_size, downloaded=True)
    assert leftovers(out.parent) == ["64x64_classifier.pt", "64x64_classifier.pt.sha256"]
    assert fetch_dg_classifier(out, extractor="adm64", download=False)["downloaded"] is False  # kept, no network
    assert calls == [ADM64_URL]


def test_adm64_offline_or_wrong_file_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, classifier_file):
    out = tmp_path / "dg" / "64x64_classifier.pt"
    fake_https(monkeypatch, None, [])
    with pytest.raises(DGAssetError) as e:
        fetch_dg_classifier(out, extractor="adm64")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("could not fetch guided-diffusion's ADM classifier 64x64_classifier.pt: "
                                              f"downloading {ADM64_URL} failed (ConnectionError)")
    assert f"put it at {out} " in msg and CONFIG_KEY in msg
    assert leftovers(out.parent) == []
    fake_https(monkeypatch, classifier_file, [])  # the 32x32 classifier under the 64x64 name: same names, other shapes
    with pytest.raises(DGAssetError, match=r"refused \(64x64_classifier.pt is not the ADM 64x64 classifier"):
        fetch_dg_classifier(out, extractor="adm64")
    assert leftovers(out.parent) == []
    with pytest.raises(ValueError, match="guidance.extractor: 'none' has no pretrained classifier"):
        fetch_dg_classifier(out, extractor="none")


def test_classifier_table_agrees_with_the_networks():
    """CLASSIFIERS (torch-free, read by the config checks) and aot.models.adm.ADM_CLASSIFIERS (the networks) are two
    views of the same classifiers: the same names and the same image size and channels."""
    from aot.models.adm import ADM_CLASSIFIERS

    assert list(CLASSIFIERS) == list(ADM_CLASSIFIERS)
    for name, c in CLASSIFIERS.items():
        net = ADM_CLASSIFIERS[name]
        assert (c.channels, c.resolution) == (net["in_channels"], net["image_size"]), name
