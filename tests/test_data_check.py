"""Data that would train or score silently wrong (issue 18): 16-bit images, low-bit masks,
all-ignore masks, a value_map that matches nothing, 0/255 masks with 255 ignored, an empty
config, evaluation of an unlabeled split, benchmark submissions from the wrong model.

Each case writes its own tiny data (32x32 PNGs) and goes through the real CLI (``segkd``
fixture: in-process ``segkd.cli.main``): exit code, the message (naming the file and what to
set) and nothing written. The pre-flight check itself (segkd.data.check) is tested directly for
its strictness modes and sampling.
"""
from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from test_errors import (  # noqa: E402
    SIZE,
    assert_clean_error,
    assert_nothing_half_written,
    folder_config,
    folder_tree,
    png,
    write_config,
)


def low_bit_png(path: Path, values: np.ndarray, bits: int) -> Path:
    """A greyscale PNG with ``bits`` (1, 2 or 4) bits per pixel holding ``values`` as stored."""
    h, w = values.shape
    per = 8 // bits
    rows = []
    for row in values:
        packed = bytearray()
        for i in range(0, w, per):
            byte = 0
            for j in range(per):
                v = int(row[i + j]) if i + j < w else 0
                byte |= v << (8 - bits * (j + 1))
            packed.append(byte)
        rows.append(b"\x00" + bytes(packed))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, bits, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))
    return path


def rgb16_png(path: Path, rgb: np.ndarray) -> Path:
    """A 16-bit RGB PNG (PIL cannot write one) of uint16 ``rgb`` [H, W, 3]."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def masks(tree: Path, fill) -> None:
    """Rewrite every mask of ``tree`` as ``fill(shape) -> uint8 array``."""
    for mask in (tree / "masks").rglob("*.png"):
        png(mask, fill((SIZE, SIZE)))


def halves(shape, low: int = 0, high: int = 1) -> np.ndarray:
    m = np.full(shape, low, np.uint8)
    m[: shape[0] // 2] = high
    return m


def nothing_written(run: Path) -> None:
    assert_nothing_half_written(run)
    assert not (run / "train_files.txt").exists()


# ----------------------------------------------------------------------------- decoding
def test_16bit_image_is_rescaled_by_its_bit_depth(tmp_path):
    from segkd.data.base import read_image

    grey = np.array([[0, 257 * 100, 65535, 128]], np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    img = read_image(tmp_path / "g16.png")
    assert img.dtype == torch.uint8 and img.shape == (3, 1, 4)
    assert img[0, 0].tolist() == [0, 100, 255, 0]  # round(v / 257)
    rgb = np.stack([grey, grey[:, ::-1], np.full_like(grey, 257 * 7)], -1)  # [1, 4, 3]
    img = read_image(rgb16_png(tmp_path / "rgb16.png", rgb))
    assert img.permute(1, 2, 0).tolist() == [[[0, 0, 7], [100, 255, 7], [255, 100, 7], [0, 0, 7]]]


def test_16bit_images_train_with_normalised_values(segkd, tmp_path):
    """A 16-bit folder dataset trains, and what reaches the model is normalised (not ~267,000)."""
    from segkd.data import build_dataset

    tree = folder_tree(tmp_path / "data", classes=3)
    rng = np.random.default_rng(1)
    for img in (tree / "images").rglob("*.png"):
        Image.fromarray(rng.integers(0, 65535, (SIZE, SIZE), np.uint16)).save(img)
    x = build_dataset("folder", root=tree, split="train")[0]["image"]
    assert float(x.abs().max()) < 3.0
    proc = segkd(*folder_config(tmp_path, tree))
    assert proc.returncode == 0, proc.stderr
    # no data warning (the 1-step run's training warnings name the stage)
    assert [l for l in proc.stderr.splitlines() if "warning" in l and "stage 'train'" not in l] == []


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_low_bit_masks_decode_to_their_stored_values(tmp_path, bits):
    from segkd.data.base import read_raw_mask

    values = np.random.default_rng(bits).integers(0, 2 ** bits, (6, 11))
    mask = read_raw_mask(low_bit_png(tmp_path / "m.png", values, bits))
    assert mask.dtype == torch.uint8
    assert np.array_equal(mask.numpy(), values)


def test_one_bit_masks_give_class_one(tmp_path):
    """PIL writes 0/1 bool masks as 1-bit PNGs: class 1 must stay 1, not become 255 (ignored)."""
    from segkd.data import build_dataset

    tree = folder_tree(tmp_path / "data", classes=2)
    for mask in (tree / "masks").rglob("*.png"):
        Image.fromarray(halves((SIZE, SIZE)).astype(bool)).save(mask)
    assert Image.open(mask).mode == "1"
    ds = build_dataset("folder", root=tree, split="train")
    assert sorted(torch.unique(ds[0]["mask"]).tolist()) == [0, 1]


# ----------------------------------------------------------------------------- train refuses
def test_all_ignore_masks_refused(segkd, tmp_path):
    tree = folder_tree(tmp_path / "data", classes=3)
    masks(tree, lambda shape: np.full(shape, 255, np.uint8))
    proc = segkd(*folder_config(tmp_path, tree))
    assert_clean_error(proc, "no labeled pixels in the 2 checked mask(s) of split 'train'",
                       str(tree / "masks" / "train" / "im0.png"), "ignore index 255",
                       "data.check=warn")
    nothing_written(tmp_path / "run")


def test_value_map_matching_no_mask_value_refused(segkd, tmp_path):
    tree = folder_tree(tmp_path / "data", classes=2)
    masks(tree, lambda shape: halves(shape, 0, 255))
    args = folder_config(tmp_path, tree)
    proc = segkd(*args, "--set", "data.options.value_map.7=1")
    assert_clean_error(proc, "no labeled pixels", "data.options.value_map maps none of the mask "
                       "values [0, 255] to a class (its keys: [7])")
    nothing_written(tmp_path / "run")


def test_binary_masks_with_255_ignored_refused_with_the_value_map_to_set(segkd, tmp_path):
    """The membrane case: 0/255 masks, 2 classes, ignore 255 -> class 1 would never be learnt."""
    tree = folder_tree(tmp_path / "data", classes=2)
    masks(tree, lambda shape: halves(shape, 0, 255))
    proc = segkd(*folder_config(tmp_path, tree))
    assert_clean_error(proc, "hold only 0 and 255", "255 is the ignore index",
                       "data.options.value_map={0: 0, 255: 1}")
    nothing_written(tmp_path / "run")


def test_empty_config_file_refused(segkd, tmp_path):
    for text in ("", "# only a comment\n"):
        cfg = tmp_path / "empty.yaml"
        cfg.write_text(text)
        proc = segkd("train", str(cfg), "--run-dir", str(tmp_path / "run"))
        assert_clean_error(proc, f"{cfg}: the config file is empty")
        assert not (tmp_path / "run").exists()


def stray(shape, value: int = 200) -> np.ndarray:
    """0/128 halves with 3 stray pixels of ``value`` (0.3% of a 32x32 mask)."""
    m = halves(shape, 0, 128)
    m[-1, :3] = value
    return m


def test_warnings_name_the_file_and_training_goes_on(segkd, tmp_path):
    """A value_map that leaves out a few stray pixels and a 12-bit image in a 16-bit file:
    warnings, exit 0."""
    tree = folder_tree(tmp_path / "data", classes=2)
    masks(tree, stray)
    dim = tree / "images" / "train" / "im1.png"
    Image.fromarray(np.full((SIZE, SIZE), 4000, np.uint16)).save(dim)
    proc = segkd(*folder_config(tmp_path, tree), "--set", "data.options.value_map={0: 0, 128: 1}")
    assert proc.returncode == 0, proc.stderr
    flat = " ".join(proc.stderr.split())
    assert "mask values [200] of split 'train' (0.3% of the checked pixels" in flat and "not keys of data.options.value_map" in flat
    assert f"image {dim} is 16-bit but its brightest value is 4000" in flat


# ----------------------------------------------------------------------------- eval / predict
@pytest.fixture(scope="module")
def two_class_run(tmp_path_factory) -> Path:
    """A 1-epoch 2-class folder run (its best.pt): the model for eval/predict cases."""
    from segkd.config.schema import config_from_dict
    from segkd.engine import Engine

    tmp = tmp_path_factory.mktemp("two_class")
    tree = folder_tree(tmp / "data", classes=2)
    import yaml

    cfg = yaml.safe_load(Path(folder_config(tmp, tree)[1]).read_text())
    Engine(config_from_dict(cfg), tmp / "run").run()
    return tmp / "run" / "best.pt"


def void_split(tmp_path: Path) -> Path:
    """A folder tree whose split 'test' has masks that are all 255 (labels withheld)."""
    tree = folder_tree(tmp_path / "void", classes=2)
    for name in ("im0", "im1"):
        png(tree / "images" / "test" / f"{name}.png", np.zeros((SIZE, SIZE, 3), np.uint8))
        png(tree / "masks" / "test" / f"{name}.png", np.full((SIZE, SIZE), 255, np.uint8))
    return tree


def test_eval_on_an_unlabeled_split_refused(segkd, tmp_path, two_class_run):
    tree = void_split(tmp_path)
    out = tmp_path / "m.json"
    proc = segkd("eval", str(two_class_run), "--data-root", str(tree), "--split", "test",
                 "--json", str(out))
    assert_clean_error(proc, "no labeled pixels in the 2 checked mask(s) of split 'test'",
                       str(tree / "masks" / "test" / "im0.png"))
    assert "mIoU" not in proc.stdout and not out.exists()


def test_eval_without_the_sample_check_still_refuses_an_empty_score(tmp_path, two_class_run,
                                                                    monkeypatch):
    """The final guard: an empty confusion matrix is an error, not mIoU 0 / per-image IoU 1."""
    from segkd.apps.eval_checkpoint import evaluate_checkpoint
    from segkd.core.errors import DataError

    monkeypatch.setattr("segkd.apps.eval_checkpoint.check_data", lambda *a, **k: None)
    with pytest.raises(DataError, match="split 'test' of dataset 'folder' has no labeled pixels"):
        evaluate_checkpoint(str(two_class_run), str(void_split(tmp_path)), split="test")


@pytest.mark.parametrize("fmt", ["cityscapes", "voc"])
def test_submission_format_refuses_a_model_of_other_classes(segkd, tmp_path, two_class_run, fmt):
    img = png(tmp_path / "in" / "frankfurt_000000_000294_leftImg8bit.png",
              np.zeros((SIZE, SIZE, 3), np.uint8))
    out = tmp_path / "out"
    proc = segkd("predict", str(two_class_run), str(img.parent), "--out", str(out), "--format", fmt)
    assert_clean_error(proc, f"--format {fmt} writes a {fmt} benchmark submission",
                       str(two_class_run), "has 2 classes (c0, c1)", "--format color or ids")
    assert not out.exists()


def test_submission_check_accepts_the_benchmark_classes():
    from segkd.core.errors import SegkdError
    from segkd.data.cityscapes import CITYSCAPES_CLASSES
    from segkd.data.submission import check_model_classes
    from segkd.data.voc import VOC_CLASSES

    check_model_classes({"num_classes": 19, "classes": list(CITYSCAPES_CLASSES)}, "cityscapes", "m")
    check_model_classes({"num_classes": 21, "classes": list(VOC_CLASSES)}, "voc", "m")
    swapped = list(CITYSCAPES_CLASSES)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    for meta in ({"num_classes": 19, "classes": swapped}, {"num_classes": 19},
                 {"num_classes": 21, "classes": list(VOC_CLASSES)}):
        with pytest.raises(SegkdError, match="--format cityscapes"):
            check_model_classes(meta, "cityscapes", "m")


# ----------------------------------------------------------------------------- the check itself
def _folder(tree: Path, split: str = "train", **options):
    from segkd.data import build_dataset

    return build_dataset("folder", root=tree, split=split, **options)


def test_check_modes(tmp_path):
    from segkd.core.errors import DataError
    from segkd.data.check import check_splits

    tree = folder_tree(tmp_path / "data", classes=2)
    masks(tree, lambda shape: np.full(shape, 255, np.uint8))
    ds = {"train": _folder(tree)}
    with pytest.raises(DataError, match="no labeled pixels"):
        check_splits(ds, "error")
    said: list[str] = []
    facts = check_splits(ds, "warn", say=said.append)
    assert len(said) == 1 and "no labeled pixels" in said[0] and facts[0].labeled == 0
    assert check_splits(ds, "off", say=said.append) == [] and len(said) == 1


def test_check_reads_at_most_the_sample(tmp_path):
    from segkd.data.check import check_splits

    tree = folder_tree(tmp_path / "data", n=7, classes=3)
    facts = check_splits({"train": _folder(tree)}, "error", files=3)
    assert facts[0].checked == 3
    assert facts[0].pixels == 3 * SIZE * SIZE and facts[0].labeled == facts[0].pixels


def test_check_reports_a_corrupt_file_even_in_warn_mode(tmp_path):
    from segkd.core.errors import DataError
    from segkd.data.check import check_splits

    tree = folder_tree(tmp_path / "data", classes=3)
    bad = tree / "masks" / "train" / "im1.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match=f"cannot decode mask {bad}"):
        check_splits({"train": _folder(tree)}, "warn", say=lambda m: None)


def test_training_config_check_off_skips_it(segkd, tmp_path):
    """data.check=off: the all-ignore set trains (the user said so), exit 0."""
    tree = folder_tree(tmp_path / "data", classes=3)
    masks(tree, lambda shape: np.full(shape, 255, np.uint8))
    proc = segkd(*folder_config(tmp_path, tree, data={"check": "off"}))
    assert proc.returncode == 0, proc.stderr


def test_one_bit_masks_pass_prepare_and_train(segkd, tmp_path):
    """Through the CLI: prepare sees values 0 and 1 (before the fix: 0/255, "255 is the ignore
    index" error), and a run scores class 1 (it is in the val labels)."""
    import json

    tree = folder_tree(tmp_path / "data", classes=2)
    for mask in (tree / "masks").rglob("*.png"):
        Image.fromarray(halves((SIZE, SIZE)).astype(bool)).save(mask)
    proc = segkd("prepare", "folder", "--root", str(tree))
    assert proc.returncode == 0, proc.stdout
    assert "│     1 │ 1 c1" in proc.stdout and "│   255 │" not in proc.stdout
    proc = segkd(*folder_config(tmp_path, tree))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["splits"]["val"]["per_class_iou"][1] is not None


# ----------------------------------------------------------------------------- Cityscapes layout
def cityscapes_tree(root: Path) -> Path:
    """val: labelIds of road (7) and car (26); test: all 0 (unlabeled), as published."""
    rng = np.random.default_rng(0)
    for split, ids in (("val", (7, 26)), ("test", (0,))):
        name = "frankfurt_000000_000294"
        png(root / "leftImg8bit" / split / "frankfurt" / f"{name}_leftImg8bit.png",
            rng.integers(0, 255, (SIZE, SIZE, 3), np.uint8))
        png(root / "gtFine" / split / "frankfurt" / f"{name}_gtFine_labelIds.png",
            rng.choice(np.array(ids, np.uint8), (SIZE, SIZE)))
    return root


@pytest.fixture(scope="module")
def cityscapes_model(tmp_path_factory) -> Path:
    """An untrained 19-class segkd checkpoint with the Cityscapes classes (eval/predict only)."""
    from segkd.core.checkpoint import save_checkpoint
    from segkd.data.cityscapes import CITYSCAPES_CLASSES
    from segkd.engine.state import model_checkpoint
    from segkd.models.spec import build_from_spec

    spec = {"arch": "unet", "kwargs": {"encoder": "kd_resnet10", "num_classes": 19,
                                       "decoder_channels": [32, 16, 16, 8, 8]}}
    meta = {"classes": list(CITYSCAPES_CLASSES), "num_classes": 19, "ignore_index": 255,
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    path = tmp_path_factory.mktemp("cs") / "cs.pt"
    save_checkpoint(model_checkpoint(build_from_spec(spec).eval(), spec, [], meta,
                                     {"data": {"name": "cityscapes"}}), path)
    return path


def test_cityscapes_test_split_eval_refused_val_scored(segkd, tmp_path, cityscapes_model):
    root = cityscapes_tree(tmp_path / "cs")
    proc = segkd("eval", str(cityscapes_model), "--data-root", str(root), "--split", "test")
    assert_clean_error(proc, "no labeled pixels in the 1 checked mask(s) of split 'test'",
                       "frankfurt_000000_000294_gtFine_labelIds.png",
                       "label mapping of dataset 'cityscapes' sends every mask value [0] to the "
                       "ignore index 255", "labels withheld")
    proc = segkd("eval", str(cityscapes_model), "--data-root", str(root), "--split", "val")
    assert proc.returncode == 0, proc.stderr
    assert "mIoU" in proc.stdout


def test_cityscapes_submission_from_a_cityscapes_model(segkd, tmp_path, cityscapes_model):
    root = cityscapes_tree(tmp_path / "cs")
    out = tmp_path / "sub"
    proc = segkd("predict", str(cityscapes_model), str(root / "leftImg8bit" / "test"),
                 "--out", str(out), "--format", "cityscapes")
    assert proc.returncode == 0, proc.stderr
    written = Image.open(out / "frankfurt_000000_000294_leftImg8bit.png")
    assert set(np.unique(np.asarray(written)).tolist()) <= {7, 8, 11, 12, 13, 17, 19, 20, 21, 22,
                                                            23, 24, 25, 26, 27, 28, 31, 32, 33}


def test_warnings_are_printed_by_the_main_process_only(tmp_path, monkeypatch, capsys):
    """In a multi-process run every rank checks (and would stop), one prints the warnings."""
    from segkd.core.errors import DataError
    from segkd.data.check import check_splits

    tree = folder_tree(tmp_path / "data", classes=2)
    masks(tree, lambda shape: np.full(shape, 255, np.uint8))
    ds = {"train": _folder(tree)}
    check_splits(ds, "warn")
    assert "no labeled pixels" in capsys.readouterr().err
    monkeypatch.setenv("LOCAL_RANK", "1")
    check_splits(ds, "warn")
    assert capsys.readouterr().err == ""
    with pytest.raises(DataError, match="no labeled pixels"):
        check_splits(ds, "error")
