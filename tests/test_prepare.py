"""`prepare` on small good and broken trees written here in each format's real layout."""
import json

import numpy as np
import pytest
import typer
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from segkd.cli.data import parse_options, register
from segkd.core.errors import ConfigError
from segkd.data.prepare import prepare
from segkd.data.prepare_print import print_report

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")

H, W = 6, 8


def _img(path, shape=(H, W)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*shape, 3), 50, np.uint8)).save(path)


def _mask(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, np.uint8)).save(path)


def _stripe(*values):
    return np.array([[values[j % len(values)] for j in range(W)]] * H, np.uint8)


def _camvid(root, n=(3, 2)):
    for split, count in zip(("train", "val"), n):
        for i in range(count):
            _img(root / split / f"{split}{i}.png")
            _mask(root / f"{split}annot" / f"{split}{i}.png", _stripe(i, 3, 11))
    return root


def _folder(root, masks, split="train"):
    for i, arr in enumerate(masks):
        _img(root / "images" / split / f"im{i}.png")
        _mask(root / "masks" / split / f"im{i}.png", arr)
    (root / "classes.txt").write_text("background\nobject\n")
    return root


def _errors(report):
    return [f for f in report.findings if f.level == "error"]


def test_good_camvid_tree_is_ok(tmp_path):
    report = prepare("camvid", _camvid(tmp_path / "camvid"))
    assert report.ok, report.findings
    train, val = report.splits
    assert (train.split, train.images, train.masks, train.pairs) == ("train", 3, 3, 3)
    assert val.pairs == 2 and train.size_min == train.size_max == (H, W)
    assert train.masks_checked == 3 and train.histogram == {0: 18, 1: 18, 2: 18, 3: 54, 11: 36}
    assert report.classes[3] == "Road" and report.ignore_index == 11
    console = Console(record=True, width=120)
    print_report(report, console)
    text = console.export_text()
    assert "OK" in text and "3 Road" in text and "ignore" in text


def test_missing_masks_and_orphans_are_reported(tmp_path):
    root = _camvid(tmp_path / "camvid")
    (root / "trainannot" / "train1.png").unlink()
    _mask(root / "valannot" / "orphan.png", _stripe(0))
    report = prepare("camvid", root)
    assert not report.ok
    train, val = report.splits
    assert train.images_without_masks == [str(root / "train" / "train1.png")]
    assert train.load_error and "train1.png" in train.load_error  # the builder's own error
    assert val.masks_without_images == [str(root / "valannot" / "orphan.png")]
    messages = " ".join(f.message for f in _errors(report))
    assert "1 image(s) without a mask" in messages and "train1.png" in messages


def test_values_outside_the_classes_are_flagged(tmp_path):
    root = _camvid(tmp_path / "camvid")
    _mask(root / "valannot" / "val1.png", _stripe(0, 12, 40))
    report = prepare("camvid", root)
    (error,) = _errors(report)
    assert error.split == "val" and "[12, 40]" in error.message and "ignore index 11" in error.message
    assert report.suggestions["value_map"] == {0: 0, 1: 1, 2: 2, 3: 3, 12: 4, 40: 5}  # 11 stays ignore


def test_binary_0_255_masks_get_a_value_map(tmp_path):
    root = _folder(tmp_path / "fg", [_stripe(0, 255)] * 3)
    report = prepare("folder", root)
    (error,) = _errors(report)
    assert "only 0 and 255" in error.message and "value_map={0: 0, 255: 1}" in error.message
    assert report.suggestions == {"value_map": {0: 0, 255: 1}}
    fixed = prepare("folder", root, value_map={"0": 0, "255": 1})  # JSON keys are strings
    assert fixed.ok, fixed.findings
    assert fixed.label_map == {0: 0, 255: 1}


def test_rgb_masks_get_a_palette(tmp_path):
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:, W // 2:] = (255, 0, 0)
    root = _folder(tmp_path / "rgb", [rgb, rgb])
    report = prepare("folder", root)
    assert not report.ok and report.splits[0].rgb_masks == 2
    assert report.suggestions["palette"] == [[0, 0, 0], [255, 0, 0]]
    assert prepare("folder", root, palette=report.suggestions["palette"]).ok
    wrong = prepare("folder", root, palette=[[0, 0, 0], [0, 255, 0]])
    assert "(255, 0, 0)" in _errors(wrong)[0].message


def test_unreadable_files_and_size_mismatches(tmp_path):
    root = _folder(tmp_path / "f", [_stripe(0, 1)] * 3)
    (root / "masks" / "train" / "im1.png").write_bytes(b"not a png")
    _mask(root / "masks" / "train" / "im2.png", np.zeros((H + 2, W), np.uint8))
    rep = prepare("folder", root).splits[0]
    assert len(rep.unreadable) == 2 and "im1.png" in rep.unreadable[0]  # header, then decoding
    assert rep.size_mismatch and "im2.png" in rep.size_mismatch[0]
    assert rep.masks_checked == 2


def test_max_masks_samples_evenly(tmp_path):
    root = _folder(tmp_path / "f", [_stripe(0, 1)] * 7)
    rep = prepare("folder", root, max_masks=3).splits[0]
    assert rep.pairs == 7 and rep.masks_checked == 3
    assert prepare("folder", root, max_masks=None).splits[0].masks_checked == 7


def test_voc_listed_ids_and_cityscapes_label_mapping(tmp_path):
    voc = tmp_path / "VOC2012"
    for i in ("a", "b"):
        _img(voc / "JPEGImages" / f"{i}.jpg")
    _mask(voc / "SegmentationClass" / "a.png", _stripe(0, 15, 255))
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nb\nc\n")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("a\n")
    train = prepare("voc", voc).splits[0]
    assert train.pairs == 1 and train.images_without_masks == [str(voc / "JPEGImages" / "b.jpg")]
    assert train.masks_without_images == [str(voc / "JPEGImages" / "c.jpg")]

    city = tmp_path / "cityscapes"
    for split in ("train", "val"):
        _img(city / "leftImg8bit" / split / "ulm" / "ulm_000000_000001_leftImg8bit.png")
        _mask(city / "gtFine" / split / "ulm" / "ulm_000000_000001_gtFine_labelIds.png", _stripe(7, 26, 1))
    report = prepare("cityscapes", city)
    assert report.ok and report.label_map[7] == 0 and report.label_map[26] == 13
    console = Console(record=True, width=120)
    print_report(report, console)
    text = console.export_text()
    assert "0 road" in text and "13 car" in text


def test_layout_errors_and_generated_datasets(tmp_path):
    report = prepare("cityscapes", tmp_path / "nowhere")
    assert not report.ok and "not found" in report.splits[0].load_error
    synthetic = prepare("synthetic", tmp_path, num_images=2)
    assert synthetic.ok and synthetic.splits[0].generated == 2
    with pytest.raises(ConfigError, match="no option 'value_mpa'"):
        prepare("folder", tmp_path, value_mpa={})


def test_cli_prepare_exit_codes_and_options(tmp_path):
    app = typer.Typer()
    register(app)
    root = _folder(tmp_path / "fg", [_stripe(0, 255)] * 2)
    runner = CliRunner()
    # 0/255 masks: the printed config sets the value_map, so the verdict is OK (the problem is
    # reported as found and fixed), exit 0
    fixed = runner.invoke(app, ["prepare", "folder", "--root", str(root), "--json", str(tmp_path / "r.json")])
    assert fixed.exit_code == 0 and "OK with the suggested config" in fixed.output, fixed.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["suggestions"]["value_map"] == {"0": 0, "255": 1} and report["ok"]
    assert [f["level"] for f in report["findings"]][:1] == ["fixed"]
    good = runner.invoke(app, ["prepare", "folder", "--root", str(root),
                               "--set", 'value_map={"0":0,"255":1}'])
    assert good.exit_code == 0, good.output
    _mask(root / "masks" / "train" / "im1.png", np.zeros((H + 2, W), np.uint8))
    bad = runner.invoke(app, ["prepare", "folder", "--root", str(root)])
    assert bad.exit_code == 1 and "NOT OK" in bad.output
    assert parse_options('{"sbd": true}', ["split=train", "num_classes=3"]) == \
        {"sbd": True, "split": "train", "num_classes": 3}
    with pytest.raises(ConfigError, match="key=value"):
        parse_options(None, ["novalue"])
