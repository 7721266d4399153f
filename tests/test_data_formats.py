"""Every registered file format, on tiny trees written here in that format's real layout."""
import numpy as np
import pytest
import torch
from PIL import Image

from segkd.core.errors import DataError
from segkd.core.registry import DATASETS
from segkd.data import CITYSCAPES_TRAINID_TO_LABELID, build_dataset

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")

H, W = 6, 8


def _img(path, ext_value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((H, W, 3), ext_value, np.uint8)
    Image.fromarray(arr).save(path)
    return path


def _mask(path, arr, mode=None, palette=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.asarray(arr, np.uint8), mode=mode)
    if palette is not None:
        im.putpalette(palette)
    im.save(path)
    return path


def _stripe(*values):
    """An HxW mask whose column j holds values[j % len(values)]."""
    row = [values[j % len(values)] for j in range(W)]
    return np.array([row] * H, np.uint8)


def test_all_builders_registered():
    assert {"camvid", "camvid32", "voc", "cityscapes", "folder", "image_folder",
            "synthetic"} <= set(DATASETS.names())


# ------------------------------------------------------------------------------------ camvid
def _camvid_tree(root):
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        for i in range(n):
            _img(root / split / f"{split}{i}.png", 10 * i)
            _mask(root / f"{split}annot" / f"{split}{i}.png", _stripe(i, 11, 10))
    return root


def test_camvid_pairs_and_keeps_void_as_ignore(tmp_path):
    root = _camvid_tree(tmp_path / "camvid")
    ds = build_dataset("camvid", root=root, split="val")
    assert len(ds) == 2 and ds.num_classes == 11 and ds.ignore_index == 11
    assert ds.classes[0] == "Sky" and ds.classes[-1] == "Bicyclist"
    assert ds.mean == (0.4119, 0.4251, 0.4327)
    s = ds[1]
    assert s["name"] == "val1" and s["mask"][0, :3].tolist() == [1, 11, 10]
    assert len(build_dataset("camvid", root=root, split="test")) == 1


def test_camvid_errors(tmp_path):
    root = _camvid_tree(tmp_path / "camvid")
    with pytest.raises(DataError, match="nowhere"):
        build_dataset("camvid", root=tmp_path / "nowhere", split="train")
    (root / "trainannot" / "train2.png").unlink()
    with pytest.raises(DataError, match="train2.png"):
        build_dataset("camvid", root=root, split="train")
    _mask(root / "valannot" / "val0.png", _stripe(12))
    with pytest.raises(DataError, match=r"val0\.png.*\[12\]"):
        build_dataset("camvid", root=root, split="val")[0]
    (root / "empty").mkdir()
    (root / "emptyannot").mkdir()
    with pytest.raises(DataError, match="empty"):
        build_dataset("camvid", root=root, split="empty")


def test_camvid32_fastai_layout(tmp_path):
    root = tmp_path / "camvid32"
    codes = ["Animal", "Building", "Void", "Wall"]
    root.mkdir()
    (root / "codes.txt").write_text("\n".join(codes) + "\n")
    (root / "valid.txt").write_text("b.png\n")
    for stem in ("a", "b", "c"):
        _img(root / "images" / f"{stem}.png")
        _mask(root / "labels" / f"{stem}_P.png", _stripe(0, 1, 2, 3))
    train = build_dataset("camvid32", root=root, split="train")
    val = build_dataset("camvid32", root=root, split="val")
    assert [train.item_name(i) for i in range(len(train))] == ["a", "c"]
    assert [val.item_name(i) for i in range(len(val))] == ["b"]
    assert val.classes == ["Animal", "Building", "Wall"] and val.ignore_index == 255
    assert val[0]["mask"][0, :4].tolist() == [0, 1, 255, 2]


# ------------------------------------------------------------------------------------ voc
VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0, 0, 0] * 252 + [224, 224, 192]


def _voc_tree(root):
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("2007_000001\n2007_000002\n")
    (sets / "val.txt").write_text("2007_000003\n")
    (sets / "trainval.txt").write_text("2007_000001\n2007_000002\n2007_000003\n")
    (sets / "train_aug.txt").write_text(
        "/JPEGImages/2007_000001.jpg /SegmentationClassAug/2007_000001.png\n"
        "2007_000003\n2008_000009\n")
    for i in ("2007_000001", "2007_000002", "2007_000003", "2008_000009"):
        _img(root / "JPEGImages" / f"{i}.jpg", 50)
        _mask(root / "SegmentationClass" / f"{i}.png", _stripe(0, 1, 255, 20), "P", VOC_PALETTE)
        _mask(root / "SegmentationClassAug" / f"{i}.png", _stripe(2, 0))
    return root


def test_voc_palette_masks_give_indices(tmp_path):
    root = _voc_tree(tmp_path / "VOCdevkit" / "VOC2012")
    ds = build_dataset("voc", root=tmp_path / "VOCdevkit", split="val")  # parent folder works
    assert len(ds) == 1 and ds.num_classes == 21 and ds.ignore_index == 255
    assert ds[0]["mask"][0, :4].tolist() == [0, 1, 255, 20]
    assert ds[0]["name"] == "2007_000003"
    assert len(build_dataset("voc", root=root, split="trainval")) == 3


def test_voc_train_aug_excludes_val(tmp_path):
    root = _voc_tree(tmp_path / "VOC2012")
    ds = build_dataset("voc", root=root, split="train_aug", sbd=True)
    names = [ds.item_name(i) for i in range(len(ds))]
    assert names == ["2007_000001", "2008_000009"]  # 2007_000003 is VOC val
    assert ds.items[0][1].parent.name == "SegmentationClassAug"
    assert ds[0]["mask"][0, :2].tolist() == [2, 0]
    with pytest.raises(DataError, match="sbd"):
        build_dataset("voc", root=root, split="train_aug")
    (root / "JPEGImages" / "2007_000002.jpg").unlink()
    with pytest.raises(DataError, match="2007_000002.jpg"):
        build_dataset("voc", root=root, split="train")


# ------------------------------------------------------------------------------------ cityscapes
def test_cityscapes_label_ids_to_train_ids(tmp_path):
    root = tmp_path / "cityscapes"
    for city, n in (("aachen", 2), ("bochum", 1)):
        for k in range(n):
            prefix = f"{city}_{k:06d}_000019"
            _img(root / "leftImg8bit" / "train" / city / f"{prefix}_leftImg8bit.png")
            _mask(root / "gtFine" / "train" / city / f"{prefix}_gtFine_labelIds.png",
                  _stripe(7, 8, 0, 33, 26, 4, 24, 1))
    ds = build_dataset("cityscapes", root=root, split="train")
    assert len(ds) == 3 and ds.num_classes == 19 and ds.ignore_index == 255
    assert ds[2]["name"] == "bochum_000000_000019_leftImg8bit"
    assert ds[0]["mask"][0].tolist() == [0, 1, 255, 18, 13, 255, 11, 255]
    assert CITYSCAPES_TRAINID_TO_LABELID[0] == 7 and CITYSCAPES_TRAINID_TO_LABELID[13] == 26
    assert len(CITYSCAPES_TRAINID_TO_LABELID) == 19
    gt = root / "gtFine" / "train" / "bochum" / "bochum_000000_000019_gtFine_labelIds.png"
    gt.unlink()
    with pytest.raises(DataError, match="bochum_000000_000019_leftImg8bit.png"):
        build_dataset("cityscapes", root=root, split="train")


# ------------------------------------------------------------------------------------ folder
def test_folder_split_dirs_value_map_and_classes_file(tmp_path):
    root = tmp_path / "f"
    for stem in ("x", "y"):
        _img(root / "images" / "train" / f"{stem}.jpg")
        _mask(root / "masks" / "train" / f"{stem}.png", _stripe(0, 255, 128))
    (root / "classes.txt").write_text("background\nforeground\n")
    ds = build_dataset("folder", root=root, split="train", value_map={0: 0, 255: 1})
    assert ds.classes == ["background", "foreground"] and len(ds) == 2
    assert ds[0]["mask"][0, :3].tolist() == [0, 1, 255]
    with pytest.raises(DataError, match=r"\[255\]"):
        build_dataset("folder", root=root, split="train", ignore_index=128)[0]
    with pytest.raises(DataError, match="val"):
        build_dataset("folder", root=root, split="val")


def test_folder_split_lists_and_palette(tmp_path):
    root = tmp_path / "f"
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:, 4:] = (255, 0, 0)
    for stem in ("p", "q", "r"):
        _img(root / "images" / f"{stem}.png")
        Image.fromarray(rgb).save(_img(root / "masks" / f"{stem}.png"))
    (root / "val.txt").write_text("r.png\np\n")
    ds = build_dataset("folder", root=root, split="val", classes=["road", "car"],
                       palette=[(0, 0, 0), (255, 0, 0)])
    assert [ds.item_name(i) for i in range(len(ds))] == ["r", "p"]
    assert ds[0]["mask"][0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    with pytest.raises(DataError, match="classes"):
        build_dataset("folder", root=root, split="val")


def test_image_folder_unlabeled(tmp_path):
    root = tmp_path / "unl"
    _img(root / "a" / "1.jpg")
    _img(root / "b" / "c" / "2.png")
    (root / "notes.txt").write_text("ignore me")
    ds = build_dataset("image_folder", root=root, num_classes=4)
    assert len(ds) == 2 and ds.num_classes == 4 and all(m is None for _, m in ds.items)
    assert torch.all(ds[1]["mask"] == 255) and ds[1]["name"] == "2"
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="none"):
        build_dataset("image_folder", root=tmp_path / "none")
