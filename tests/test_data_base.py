"""SegmentationDataset: decoding, label mapping, checks with clear errors, cache, subset."""
import numpy as np
import pytest
import torch
from PIL import Image

from segkd.core.errors import DataError
from segkd.data.base import SegmentationDataset, build_lut

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")

MEAN, STD = (0.5, 0.25, 0.0), (0.5, 0.25, 1.0)


def _img(path, h=6, w=8, value=None):
    arr = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    if value is not None:
        arr[:] = value
    Image.fromarray(arr).save(path)
    return path


def _mask(path, arr, mode=None):
    Image.fromarray(np.asarray(arr, dtype=np.uint8), mode=mode).save(path)
    return path


def _ds(items, classes=("a", "b", "c"), ignore=255, **kw):
    return SegmentationDataset(items=items, classes=list(classes), ignore_index=ignore,
                               mean=MEAN, std=STD, name="t", **kw)


def test_getitem_normalises_and_returns_stem(tmp_path):
    arr = np.zeros((6, 8), np.uint8)
    arr[:, 4:] = 2
    arr[0, 0] = 255
    ds = _ds([(_img(tmp_path / "x1.png", value=255), _mask(tmp_path / "x1_m.png", arr))])
    s = ds[0]
    assert s["name"] == "x1"
    assert s["image"].dtype == torch.float32 and s["image"].shape == (3, 6, 8)
    assert torch.allclose(s["image"][:, 0, 0], torch.tensor([1.0, 3.0, 1.0]))
    assert s["mask"].dtype == torch.int64 and torch.equal(s["mask"], torch.from_numpy(arr).long())
    assert ds.num_classes == 3 and ds.mean == MEAN and ds.std == STD and len(ds) == 1


def test_label_out_of_range_names_file_and_values(tmp_path):
    arr = np.zeros((6, 8), np.uint8)
    arr[0, :2] = [3, 7]
    ds = _ds([(_img(tmp_path / "a.png"), _mask(tmp_path / "bad_mask.png", arr))])
    with pytest.raises(DataError, match=r"bad_mask\.png.*\[3, 7\]"):
        ds[0]


def test_size_mismatch_names_mask(tmp_path):
    ds = _ds([(_img(tmp_path / "a.png"), _mask(tmp_path / "small.png", np.zeros((5, 8))))])
    with pytest.raises(DataError, match=r"small\.png"):
        ds[0]


def test_corrupt_and_truncated_images_name_file(tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    good = _img(tmp_path / "good.png", 32, 32)
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:60])
    m = _mask(tmp_path / "m.png", np.zeros((32, 32)))
    for name in ("junk.jpg", "trunc.png"):
        with pytest.raises(DataError, match=name.replace(".", r"\.")):
            _ds([(tmp_path / name, m)])[0]
    with pytest.raises(DataError, match="missing.png"):
        _ds([(tmp_path / "missing.png", m)])[0]


def test_rgb_mask_where_index_expected_raises(tmp_path):
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[..., 0] = 128
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    with pytest.raises(DataError, match=r"colour\.png.*RGB"):
        _ds([(_img(tmp_path / "a.png"), tmp_path / "colour.png")])[0]


def test_palette_maps_colours_and_rejects_unknown(tmp_path):
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[:, 4:] = (0, 255, 0)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    palette = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]
    ds = _ds([(_img(tmp_path / "a.png"), tmp_path / "c.png")], palette=palette)
    m = ds[0]["mask"]
    assert torch.all(m[:, :4] == 0) and torch.all(m[:, 4:] == 2)
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    with pytest.raises(DataError, match=r"c\.png.*\(1, 2, 3\)"):
        _ds([(_img(tmp_path / "a.png"), tmp_path / "c.png")], palette=palette)[0]


def _check_palette_png(tmp_path):
    arr = np.array([[0, 1, 2, 255]] * 6, np.uint8).repeat(2, axis=1)
    im = Image.fromarray(arr, mode="P")
    im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253)
    im.save(tmp_path / "p.png")
    ds = _ds([(_img(tmp_path / "a.png"), tmp_path / "p.png")])
    assert torch.equal(ds[0]["mask"], torch.from_numpy(arr).long())


def test_palette_png_reads_indices(tmp_path):
    _check_palette_png(tmp_path)


def test_palette_png_falls_back_to_pil_when_decoder_expands(tmp_path, monkeypatch):
    import segkd.data.base as base

    real = base.decode_image

    def expanding(data, mode):  # a torchvision build that expands palettes to RGB
        out = real(data, mode=mode)
        return out.expand(3, -1, -1).clone() if out.shape[0] == 1 else out

    monkeypatch.setattr(base, "decode_image", expanding)
    _check_palette_png(tmp_path)


def test_lut_maps_and_unmapped_become_ignore(tmp_path):
    arr = np.array([[0, 255, 7, 3]] * 6, np.uint8).repeat(2, axis=1)
    lut = build_lut({0: 0, 255: 1}, ignore_index=9)
    ds = _ds([(_img(tmp_path / "a.png"), _mask(tmp_path / "m.png", arr))],
             classes=("bg", "fg"), ignore=9, lut=lut)
    assert ds[0]["mask"][0].tolist() == [0, 0, 1, 1, 9, 9, 9, 9]


def test_unlabeled_item_gives_ignore_mask(tmp_path):
    ds = _ds([(_img(tmp_path / "a.png"), None)], ignore=11)
    assert torch.all(ds[0]["mask"] == 11) and ds[0]["mask"].shape == (6, 8)


def test_cache_keeps_decoded_tensors_and_subset(tmp_path):
    items = [(_img(tmp_path / f"{i}.png"), _mask(tmp_path / f"{i}_m.png", np.full((6, 8), i)))
             for i in range(3)]
    ds = _ds(items, cache=True)
    first = ds[2]
    for img, mask in items:
        img.unlink()
        mask.unlink()
    assert torch.equal(ds[2]["image"], first["image"])  # served from memory
    sub = ds.subset([2])
    assert sub.items == [items[2]] and len(sub) == 1 and sub.classes == ds.classes
    assert int(sub[0]["mask"][0, 0]) == 2
    assert len(ds) == 3  # the original is unchanged
    with pytest.raises(DataError):
        ds[0]  # never cached, file gone


def test_empty_items_raise():
    with pytest.raises(DataError, match="empty"):
        _ds([])
