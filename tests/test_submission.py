"""Submission files round-trip through segkd's own loaders; palettes, colorize and overlay."""
import numpy as np
import pytest
from PIL import Image

from segkd.core.errors import SegkdError
from segkd.data import build_dataset
from segkd.data.submission import (
    CAMVID_PALETTE,
    CITYSCAPES_PALETTE,
    VOC_RESULTS_DIR,
    cityscapes_name,
    colorize,
    default_palette,
    overlay,
    write_submission,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")

H, W = 6, 8


def _image(path, shape=(H, W)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((*shape, 3), np.uint8)).save(path)


def _ids(values, ignore=255):
    """An HxW id map cycling through ``values`` (every value appears), with one ignore pixel."""
    arr = np.resize(np.asarray(values, np.int64), H * W).reshape(H, W)
    arr[0, 0] = ignore
    return arr


def test_default_palette_is_the_voc_colour_map():
    pal = default_palette(256)
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    assert pal[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert pal[15].tolist() == [192, 128, 128] and pal[255].tolist() == [224, 224, 192]
    assert len(CAMVID_PALETTE) == 11 and len(CITYSCAPES_PALETTE) == 19


def test_colorize_and_overlay():
    ids = np.array([[0, 1], [2, 255]])
    rgb = colorize(ids, CITYSCAPES_PALETTE)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 1].tolist() == [244, 35, 232] and rgb[1, 1].tolist() == [0, 0, 0]
    image = np.full((2, 2, 3), 100, np.uint8)
    blended = overlay(image, ids, CITYSCAPES_PALETTE, alpha=0.5)
    assert blended[0, 0].tolist() == [114, 82, 114]  # (100 + (128, 64, 128)) / 2
    assert blended[1, 1].tolist() == [100, 100, 100]  # ignore keeps the image
    assert overlay(image, ids, CITYSCAPES_PALETTE, alpha=0.0).tolist() == image.tolist()
    with pytest.raises(SegkdError, match="uint8"):
        overlay(image.astype(np.float32), ids, CITYSCAPES_PALETTE)


@pytest.mark.parametrize("name", [
    "frankfurt_000000_000294_leftImg8bit", "frankfurt_000000_000294_leftImg8bit.png",
    "frankfurt_000000_000294", "some/dir/frankfurt_000000_000294_leftImg8bit.png",
])
def test_cityscapes_name_keeps_the_image_file_name(name):
    assert cityscapes_name(name) == "frankfurt_000000_000294_leftImg8bit.png"


def test_cityscapes_name_rejects_other_names(tmp_path):
    with pytest.raises(SegkdError, match="prefix"):
        write_submission(np.zeros((H, W), np.int64), "holiday_photo", tmp_path, "cityscapes")
    with pytest.raises(SegkdError, match="unknown submission format"):
        write_submission(np.zeros((H, W), np.int64), "x", tmp_path, "coco")


def test_cityscapes_labelids_round_trip_through_the_loader(tmp_path):
    """labelId PNGs placed as gtFine labels read back as the same train ids."""
    root, out = tmp_path / "cityscapes", tmp_path / "submission"
    preds = {"frankfurt_000000_000294": _ids(range(19)), "lindau_000001_000019": _ids(range(18, -1, -1))}
    for prefix, ids in preds.items():
        path = write_submission(ids, f"{prefix}_leftImg8bit", out, "cityscapes")
        assert path == out / f"{prefix}_leftImg8bit.png"  # flat folder, original image name
        city = prefix.split("_")[0]
        _image(root / "leftImg8bit" / "val" / city / f"{prefix}_leftImg8bit.png")
        gt = root / "gtFine" / "val" / city / f"{prefix}_gtFine_labelIds.png"
        gt.parent.mkdir(parents=True, exist_ok=True)
        path.rename(gt)
    with Image.open(gt) as im:
        assert im.mode == "L" and int(np.array(im)[0, 0]) == 0  # ignore -> 0 (unlabeled)
    ds = build_dataset("cityscapes", root=root, split="val")
    for i in range(len(ds)):
        prefix = ds.item_name(i)[: -len("_leftImg8bit")]
        assert ds[i]["mask"].numpy().tolist() == preds[prefix].tolist()


def test_voc_palette_png_round_trips_through_the_loader(tmp_path):
    root = tmp_path / "VOC2012"
    preds = {"2008_000001": _ids(range(21)), "2008_000002": _ids([0, 15, 20])}
    for image_id, ids in preds.items():
        path = write_submission(ids, image_id, tmp_path / "out", "voc")
        assert path == tmp_path / "out" / VOC_RESULTS_DIR / f"{image_id}.png"
        with Image.open(path) as im:
            assert im.mode == "P" and im.getpalette()[3:6] == [128, 0, 0]
        _image(root / "JPEGImages" / f"{image_id}.jpg")
        (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        path.replace(root / "SegmentationClass" / f"{image_id}.png")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(preds) + "\n")
    ds = build_dataset("voc", root=root, split="val")
    assert [ds[i]["mask"].numpy().tolist() for i in range(2)] == [p.tolist() for p in preds.values()]
