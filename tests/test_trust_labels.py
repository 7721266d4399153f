"""Labels a run can trust: lossy (JPEG) masks, a value_map that drops a large share of the
pixels or matches no mask value, classes with no pixel, and `segkd prepare folder` on a symlink
loop, on `--set value_map={0: 0, 255: 1}` and on 0/255 masks.

Each case writes a tiny folder dataset (PNG images; PNG or JPEG masks of a few blobs) and goes
through the real CLI (``segkd`` fixture: in-process ``segkd.cli.main``): `segkd prepare folder`
and `segkd train`, exit code, the message (what was found and what to do) and what is written.
"""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from test_errors import assert_clean_error, assert_nothing_half_written, folder_config, png  # noqa: E402

S = 64  # masks large enough for labelled regions with an inside (JPEG noise has none)


def blobs(i: int, levels=(0, 255)) -> np.ndarray:
    """A mask of ``levels[0]`` with a disc of each further level (image ``i`` moves them)."""
    m = np.full((S, S), levels[0], np.uint8)
    yy, xx = np.mgrid[:S, :S]
    for k, level in enumerate(levels[1:]):
        cy, cx = 16 + 8 * ((i + k) % 4), 20 + 14 * k
        m[(yy - cy) ** 2 + (xx - cx) ** 2 < 14 ** 2] = level
    return m


def jpeg(mask: np.ndarray, quality: int = 75) -> np.ndarray:
    """``mask`` after a JPEG round trip (what a .jpg mask holds)."""
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="JPEG", quality=quality)
    return np.array(Image.open(io.BytesIO(buf.getvalue())))


def tree(root: Path, fmt: str = "png", levels=(0, 255), classes: int | None = None, n: int = 2,
         mask=None) -> Path:
    """``root/images/{train,val}/im<i>.png`` + ``root/masks/...`` (``fmt``: png or jpg) of
    ``mask(i)`` (default: blobs of ``levels``); ``classes``: a classes.txt of c0..c<k-1>."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i in range(n):
            png(root / "images" / split / f"im{i}.png", rng.integers(0, 255, (S, S, 3), np.uint8))
            m = mask(i) if mask else blobs(i, levels)
            path = root / "masks" / split / f"im{i}.{fmt}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(m).save(path, **({"quality": 75} if fmt == "jpg" else {}))
    if classes:
        (root / "classes.txt").write_text("".join(f"c{i}\n" for i in range(classes)))
    return root


def flat(text: str) -> str:
    return " ".join(text.split())


# ----------------------------------------------------------------------------- lossy masks
def test_jpeg_masks_refused_at_prepare_with_the_fix(segkd, tmp_path):
    """0/255 JPEG masks: prepare says they look lossy and how to fix it (exit 1), and the config
    it writes has 2 classes, not 255 (that made the foreground the ignore value)."""
    root = tree(tmp_path / "data", "jpg")
    cfg = tmp_path / "cfg.yaml"
    proc = segkd("prepare", "folder", "--root", str(root), "--config", str(cfg))
    assert proc.returncode == 1, proc.stdout
    text = flat(proc.stdout)
    assert "masks of split 'train' look lossy:" in text and "around the levels [0, 255]" in text
    assert "2 of the checked masks are JPEG/WebP files" in text
    assert "re-save the masks losslessly (PNG) from the original labels" in text
    assert "value_map={0-127: 0, 128-255: 1} (2 classes)" in text and "NOT OK" in text
    assert yaml.safe_load(cfg.read_text())["data"]["options"]["num_classes"] == 2
    assert "errors this config does not fix" in cfg.read_text()


def test_jpeg_masks_refused_at_train_even_with_a_value_map(segkd, tmp_path):
    """Training on lossy masks stops before the first step; with the 0/255 value_map the message
    still says the masks are lossy (it does not blame the value_map for the noise values)."""
    root = tree(tmp_path / "data", "jpg", classes=2)
    args = folder_config(tmp_path, root)
    for extra in ([], ["--set", "data.options.value_map={0: 0, 255: 1}"]):
        proc = segkd(*args, *extra)
        msg = assert_clean_error(proc, "masks of split 'train' look lossy:",
                                 str(root / "masks" / "train"), "data.options.value_map={0-127: 0, 128-255: 1}")
        assert "not keys of" not in msg
        assert_nothing_half_written(tmp_path / "run")


def test_binned_jpeg_masks_train_and_score_both_classes(segkd, tmp_path):
    """The fix the message names: a value_map of ranges bins the noise to the nearest level."""
    root = tree(tmp_path / "data", "jpg", classes=2)
    proc = segkd(*folder_config(tmp_path, root), "--set",
                 "data.options.value_map={0-127: 0, 128-255: 1}")
    assert proc.returncode == 0, proc.stderr
    assert "look lossy" not in proc.stderr and "not keys of" not in proc.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert None not in summary["splits"]["val"]["per_class_iou"]  # both classes in the labels
    from segkd.data import build_dataset

    ds = build_dataset("folder", root=root, split="val", value_map={"0-127": 0, "128-255": 1})
    assert set(np.unique(ds[0]["mask"].numpy())) == {0, 1}


@pytest.mark.parametrize("how", ["jpeg_as_png", "bilinear"])
def test_lossy_png_masks_found_by_their_values(tmp_path, how):
    """No .jpg to go by: JPEG noise saved as PNG, or masks resized with a smooth filter, are
    found from their values (the pre-flight check and prepare); 255, the ignore index, stays
    ignored in the binning value_map."""
    from segkd.core.errors import DataError
    from segkd.data import build_dataset
    from segkd.data.check import check_splits
    from segkd.data.prepare import prepare

    def mask(i):
        if how == "jpeg_as_png":
            return jpeg(blobs(i, (0, 128, 255)))
        big = Image.fromarray(np.kron(blobs(i, (0, 128, 255)), np.ones((4, 4), np.uint8)))
        return np.array(big.resize((S, S), Image.BILINEAR))

    root = tree(tmp_path / "data", mask=mask)
    ds = build_dataset("folder", root=root, split="train", num_classes=255)
    with pytest.raises(DataError, match=r"look lossy: .* around the levels \[0, 128, 255\]"):
        check_splits({"train": ds}, "error")
    report = prepare("folder", root, num_classes=255)
    errors = [f for f in report.findings if f.level == "error"]
    assert [f.split for f in errors] == ["train", "val"] and report.levels == [0, 128, 255]
    for error in errors:
        assert "look lossy" in error.message and "value_map={0-64: 0, 65-191: 1, 192-255: 255} (2 classes)" in error.message
        assert "JPEG/WebP files" not in error.message


def test_lossy_values_keeps_clean_masks_apart():
    """Clean index masks are not lossy: thin classes (lane lines), many small classes, random
    ids; JPEG noise around levels is, and a binning value_map sends each value to its level."""
    from segkd.data.mask_values import binning_map, lossy_values, parse_value_map, value_counts

    def judge(masks, lossy_format=False):
        hist, inner = np.zeros(256, np.int64), np.zeros(256, np.int64)
        for m in masks:
            h, n = value_counts(m)
            hist, inner = hist + h, inner + n
        return lossy_values(dict(enumerate(hist.tolist())), dict(enumerate(inner.tolist())), lossy_format)

    lanes = np.zeros((S, S), np.uint8)
    for c in range(1, 6):
        lanes[:, 10 * c] = c
    rng = np.random.default_rng(0)
    assert judge([lanes]) is None
    assert judge([rng.integers(0, 20, (S, S)).astype(np.uint8)]) is None
    assert judge([blobs(i, tuple(range(0, 12))) for i in range(4)]) is None
    found = judge([jpeg(blobs(i)) for i in range(4)])
    assert found is not None and found.levels == [0, 255] and len(found.noise) >= 8
    assert judge([jpeg(blobs(i), 100) for i in range(4)]) is None  # few noise values: the file
    assert judge([jpeg(blobs(i), 100) for i in range(4)], lossy_format=True) is not None  # format says
    assert binning_map([0, 255], 255) == {"0-127": 0, "128-255": 1}
    assert binning_map([0, 1, 2, 255], 255) == {"0": 0, "1": 1, "2-128": 2, "129-255": 255}
    vm = parse_value_map({"0-127": 0, "128-255": 1, "255": 1})
    assert len(vm) == 256 and vm[127] == 0 and vm[128] == 1


# ----------------------------------------------------------------------------- value_map coverage
def test_value_map_leaving_out_half_the_pixels_refused(segkd, tmp_path):
    """0/255 masks with value_map {0: 0, 1: 1}: the 255 pixels (the foreground) would all be
    ignored: an error naming the values, their share and the fix; the key 1 that matches no
    value leaves class c1 without a pixel: a warning naming the class."""
    root = tree(tmp_path / "data", classes=2)
    args = folder_config(tmp_path, root)
    proc = segkd(*args, "--set", "data.options.value_map={0: 0, 1: 1}")
    msg = assert_clean_error(proc, "mask values [255] of split 'train' (", "of the checked pixels, e.g.",
                             "are not keys of data.options.value_map (its keys: [0, 1])",
                             "255: 255 to ignore them on purpose")
    assert "[data check: data.check=warn goes on anyway]" in msg
    assert "warning: no pixel of class 'c1' (id 1) in the 2 checked mask(s) of split 'train'; " \
           "data.options.value_map key(s) [1] match no mask value (the masks hold [0, 255])" in flat(proc.stderr)
    assert_nothing_half_written(tmp_path / "run")
    # a few stray pixels outside the map: a warning, the run goes on
    for mask in (root / "masks").rglob("*.png"):
        m = np.array(Image.open(mask))
        m[-1, :4] = 7  # 0.1% of the pixels
        png(mask, m)
    proc = segkd(*args, "--set", "data.options.value_map={0: 0, 255: 1}")
    assert proc.returncode == 0, proc.stderr
    assert "warning: mask values [7] of split 'train' (0.1% of the checked pixels" in flat(proc.stderr)


def test_prepare_refuses_a_value_map_leaving_out_the_foreground(segkd, tmp_path):
    root = tree(tmp_path / "data", classes=2)
    proc = segkd("prepare", "folder", "--root", str(root), "--set", "value_map={0: 0, 1: 1}")
    assert proc.returncode == 1, proc.stdout
    text = flat(proc.stdout)
    assert "error [train, val] mask values [255] of splits train, val (" in text
    assert "are not keys of value_map (its keys: [0, 1])" in text
    assert "warning [train] no pixel of class 'c1' (id 1) in the 2 checked mask(s) of split 'train'" in text


def test_class_without_a_pixel_in_the_training_sample_is_named(segkd, tmp_path):
    """Masks hold 0 and 1 of 3 classes: training goes on, with a warning naming class c2 (for
    the training split only: a small val split need not hold every class)."""
    root = tree(tmp_path / "data", levels=(0, 1), classes=3)
    proc = segkd(*folder_config(tmp_path, root))
    assert proc.returncode == 0, proc.stderr
    text = flat(proc.stderr)
    assert "warning: no pixel of class 'c2' (id 2) in the 2 checked mask(s) of split 'train'" in text
    assert "split 'val'" not in text


# ----------------------------------------------------------------------------- prepare folder
def test_prepare_on_a_symlink_loop_is_one_clean_error(segkd, tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    cfg = tmp_path / "cfg.yaml"
    proc = segkd("prepare", "folder", "--root", str(loop), "--config", str(cfg))
    assert_clean_error(proc, f"dataset root not found: {loop}", "symbolic link that loops or points nowhere")
    assert not cfg.exists()


def test_prepare_set_reads_values_as_train_does(segkd, tmp_path):
    """`--set value_map={0: 0, 255: 1}` (YAML, as `segkd train --set` takes it) is a mapping;
    a value_map that is no mapping is one clean error, in prepare and in train."""
    root = tree(tmp_path / "data", classes=2)
    proc = segkd("prepare", "folder", "--root", str(root), "--set", "value_map={0: 0, 255: 1}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "│   255 │ 1 c1" in proc.stdout and "fixed" not in proc.stdout
    proc = segkd("prepare", "folder", "--root", str(root), "--set", "value_map=0:0,255:1")
    assert_clean_error(proc, "value_map must be a mapping of mask value -> class id")
    proc = segkd(*folder_config(tmp_path, root), "--set", "data.options.value_map=[0, 1]")
    assert_clean_error(proc, "value_map must be a mapping of mask value -> class id", "got list")


def test_prepare_on_binary_masks_says_what_the_config_does(segkd, tmp_path):
    """0/255 masks: the finding is reported with the option the written config sets, the verdict
    is OK for that config (exit 0), and the config says so."""
    root = tree(tmp_path / "data")
    cfg = tmp_path / "cfg.yaml"
    proc = segkd("prepare", "folder", "--root", str(root), "--config", str(cfg))
    assert proc.returncode == 0, proc.stdout
    text = flat(proc.stdout)
    assert ("fixed [train, val] masks hold only 0 and 255, and 255 is the ignore index: every "
            "foreground pixel would be ignored: the suggested config sets value_map={0: 0, 255: 1}") in text
    assert "OK with the suggested config (value_map={0: 0, 255: 1})" in text and "NOT OK" not in text
    written = cfg.read_text()
    assert "# It sets value_map={0: 0, 255: 1}, as the report suggests" in written
    assert yaml.safe_load(written)["data"]["options"] == {"num_classes": 2, "value_map": {0: 0, 255: 1}}
