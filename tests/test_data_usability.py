"""Your own dataset in five minutes (issue 18): folder dataset options, `segkd prepare folder`
config, dataset docs, `trainer.precision: 32`, CamVid's test split when present, overlay colours,
export file modes. Tiny data written by each test; CLI cases through the ``segkd`` fixture."""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from test_errors import SIZE, png, write_config  # noqa: E402


# ----------------------------------------------------------------------------- config
def test_precision_as_a_yaml_number(segkd, tmp_path):
    from segkd.config.schema import config_from_dict, load_config

    assert config_from_dict({"trainer": {"precision": 32}}).trainer.precision == "32"
    cfg = write_config(tmp_path / "c.yaml")
    assert load_config(cfg, ["trainer.precision=32"]).trainer.precision == "32"
    text = cfg.read_text().replace("trainer:\n", "trainer:\n  precision: 32\n")
    cfg.write_text(text)
    assert load_config(cfg).trainer.precision == "32"


def camvid_tree(root: Path, splits: tuple[str, ...]) -> Path:
    rng = np.random.default_rng(0)
    for split in splits:
        for i in range(2):
            png(root / split / f"f{i}.png", rng.integers(0, 255, (SIZE, SIZE, 3), np.uint8))
            png(root / f"{split}annot" / f"f{i}.png", rng.integers(0, 12, (SIZE, SIZE), np.uint8))
    return root


@pytest.mark.parametrize("with_test", [False, True], ids=["train+val", "train+val+test"])
def test_camvid_test_split_evaluated_when_present(segkd, tmp_path, with_test):
    root = camvid_tree(tmp_path / "camvid", ("train", "val") + (("test",) if with_test else ()))
    cfg = write_config(tmp_path / "c.yaml", options={},
                       data={"name": "camvid", "root": str(root), "test_split": "auto",
                             "batch_size": 2},
                       eval={"splits": ["val", "test"]})
    run = tmp_path / "run"
    proc = segkd("train", str(cfg), "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert sorted(summary["splits"]) == (["test", "val"] if with_test else ["val"])
    if with_test:
        assert summary["splits"]["test"]["mIoU"] >= 0


def test_camvid_recipes_ask_for_the_test_split():
    from segkd.config.schema import load_config

    base = Path(__file__).resolve().parents[1] / "configs" / "camvid" / "_base.yaml"
    cfg = load_config(base)
    assert cfg.data.test_split == "auto" and "test" in cfg.eval.splits


# ----------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("classes", [2, ["background", "membrane"], 21, 300])
def test_every_class_has_a_visible_colour(classes):
    from segkd.data.submission import class_palette, overlay

    pal = class_palette(classes)
    n = classes if isinstance(classes, int) else len(classes)
    assert pal.shape == (n, 3) and pal.dtype == np.uint8
    assert (pal.astype(int).sum(1) > 0).all()  # no black class
    assert len({tuple(c) for c in pal}) == n  # distinct
    dark = np.full((1, n, 3), (10, 20, 30), np.uint8)  # a dark picture (not a class colour)
    blended = overlay(dark, np.arange(n)[None], pal)
    assert (blended != dark).any(-1).all()  # every class changes the picture


def test_known_datasets_keep_their_colours():
    from segkd.data.camvid import CAMVID_CLASSES
    from segkd.data.cityscapes import CITYSCAPES_CLASSES
    from segkd.data.submission import CAMVID_PALETTE, CITYSCAPES_PALETTE, class_palette

    assert class_palette(CITYSCAPES_CLASSES).tolist() == [list(c) for c in CITYSCAPES_PALETTE]
    assert class_palette(CAMVID_CLASSES).tolist() == [list(c) for c in CAMVID_PALETTE]


def test_predict_colour_masks_show_class_zero(segkd, tmp_path, teacher_ckpt):
    from PIL import Image

    from segkd.data.submission import class_palette

    img = png(tmp_path / "in" / "a.png", np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3),
                                                                            np.uint8))
    proc = segkd("predict", str(teacher_ckpt), str(img), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    mask = np.asarray(Image.open(tmp_path / "out" / "a_mask.png").convert("RGB"))
    assert (mask.reshape(-1, 3).sum(1) > 0).all()  # no black pixel: class 0 has a colour too
    colours = {tuple(c) for c in mask.reshape(-1, 3)}
    assert colours <= {tuple(c) for c in class_palette(4)}


def test_export_and_checkpoint_files_share_the_onnx_mode(tmp_path, teacher_ckpt):
    """safetensors writes 0600; every file segkd writes gets the umask's mode (0644 here)."""
    pytest.importorskip("onnx")
    from segkd.apps.export import export_onnx, export_safetensors
    from segkd.core.checkpoint import load_checkpoint, save_checkpoint

    old = os.umask(0o022)
    try:
        export_onnx(teacher_ckpt, tmp_path / "m.onnx")
        export_safetensors(teacher_ckpt, tmp_path / "m.safetensors")
        save_checkpoint(load_checkpoint(teacher_ckpt), tmp_path / "best.pt")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes["m.onnx"] == 0o644
    assert modes["m.safetensors"] == modes["best.pt"] == modes["m.json"] == 0o644


# ----------------------------------------------------------------------------- folder dataset
def membrane_tree(root: Path, n: int = 10) -> Path:
    """An EM-like set as users have it: img/*.jpg + label/*_mask.png (0/255), no classes.txt."""
    rng = np.random.default_rng(0)
    for i in range(n):
        png(root / "img" / f"s{i:02d}.jpg", rng.integers(0, 255, (SIZE, SIZE, 3), np.uint8))
        mask = np.zeros((SIZE, SIZE), np.uint8)
        mask[: SIZE // 2] = 255
        png(root / "label" / f"s{i:02d}_mask.png", mask)
    return root


def test_folder_names_and_mask_suffix_are_options(tmp_path):
    from segkd.core.errors import DataError
    from segkd.data import build_dataset

    root = membrane_tree(tmp_path / "m", n=4)
    opts = {"images": "img", "masks": "label", "value_map": {0: 0, 255: 1}, "num_classes": 2}
    for suffix in ("_mask", "_mask.png"):
        ds = build_dataset("folder", root=root, split=None, mask_suffix=suffix, **opts)
        assert [(i.name, m.name) for i, m in ds.items][:2] == [("s00.jpg", "s00_mask.png"),
                                                               ("s01.jpg", "s01_mask.png")]
        assert sorted(ds[0]["mask"].unique().tolist()) == [0, 1]
    with pytest.raises(DataError, match="no mask for image .*s00.jpg.*expected s00.png; options 'masks', 'mask_suffix'"):
        build_dataset("folder", root=root, split=None, **opts)
    with pytest.raises(DataError, match="mask folder \\(option 'masks'\\) not found"):
        build_dataset("folder", root=root, split=None, images="img", num_classes=2)


def test_flat_folder_splits_by_a_seeded_val_fraction(tmp_path):
    from segkd.data import build_dataset

    root = membrane_tree(tmp_path / "m", n=10)
    opts = {"images": "img", "masks": "label", "mask_suffix": "_mask", "num_classes": 2,
            "value_map": {0: 0, 255: 1}}

    def names(split, **kw):
        return [i.name for i, _ in build_dataset("folder", root=root, split=split, **opts, **kw).items]

    train, val = names("train"), names("val")
    assert len(val) == 2 and len(train) == 8 and not set(train) & set(val)
    assert sorted(train + val) == sorted(p.name for p in (root / "img").iterdir())
    assert names("val") == val  # seeded: the same split every time
    assert names("val", split_seed=1) != val and len(names("val", val_fraction=0.5)) == 5
    (root / "val.txt").write_text("s03\n")  # a list wins over the fraction
    assert names("val") == ["s03.jpg"]


def test_prepare_folder_prints_a_config_that_trains(segkd, tmp_path):
    """The five-minute path: prepare finds img/label/_mask and the 0/255 value_map; its config
    trains as written (shortened to one epoch of a small model)."""
    root = membrane_tree(tmp_path / "membranes")
    cfg_path = tmp_path / "membranes.yaml"
    proc = segkd("prepare", "folder", "--root", str(root), "--config", str(cfg_path))
    assert proc.returncode == 0, proc.stdout  # the 0/255 problem is found, and the config fixes it
    flat = " ".join(proc.stdout.split())
    assert "fixed [all] masks hold only 0 and 255, and 255 is the ignore index" in flat
    assert "the suggested config sets value_map={0: 0, 255: 1}" in flat
    assert "suggested config" in proc.stdout and "segkd train THIS_FILE" in proc.stdout
    cfg = yaml.safe_load(cfg_path.read_text())
    assert cfg["data"]["options"] == {"images": "img", "masks": "label", "mask_suffix": "_mask",
                                      "num_classes": 2, "value_map": {0: 0, 255: 1}}
    assert (cfg["data"]["train_split"], cfg["data"]["val_split"]) == ("train", "val")
    run = tmp_path / "run"
    proc = segkd("train", str(cfg_path), "--run-dir", str(run), "--set", "stages.0.epochs=1",
                 "--set", "model.encoder=kd_resnet10", "--set", "data.num_workers=0",
                 "--set", "trainer.channels_last=false")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["classes"] == ["class_0", "class_1"] and "val" in summary["splits"]


# ----------------------------------------------------------------------------- docs
def test_list_datasets_verbose_shows_layout_and_options(segkd):
    from segkd.apps.describe import list_names

    proc = segkd("list", "datasets", "--verbose")
    assert proc.returncode == 0, proc.stderr
    for name in list_names("datasets"):
        assert f"\n{name}\n" in f"\n{proc.stdout}"
    assert "mask_suffix=''" in proc.stdout and "val_fraction=0.2" in proc.stdout
    assert "<root>/<split>annot/" in proc.stdout  # camvid's layout


def test_docs_describe_every_dataset_and_option():
    """docs/datasets.md names every registered dataset and every one of its data.options."""
    from segkd.apps.describe import list_names
    from segkd.data.catalog import dataset_options

    text = (Path(__file__).resolve().parents[1] / "docs" / "datasets.md").read_text()
    for name in list_names("datasets"):
        assert f"### {name}:" in text, name
        for option in dataset_options(name):
            assert f"`{option}`" in text, (name, option)
