"""docs/architecture.md "Adding a dataset", done: a dataset written in this file alone (its
builder and layout, options, scanner and download in one DatasetSpec, one registration) is
downloaded, listed, checked, trained on through a config and evaluated with the command line."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkd.core.errors import DataError
from segkd.core.registry import DATASETS
from segkd.data import Archive, DatasetSpec, Download, SegmentationDataset, register_dataset
from segkd.data.base import list_images, read_lines, require_dir, require_items
from segkd.data.pairing import Pairing, match, stems


# ------------------------------------------------------------------ the dataset: one file's worth
def tiles(root: str | Path, split: str = "train", label_suffix: str = "_label") -> SegmentationDataset:
    """Tiles: ``<root>/<split>/<name>.png`` images, each with its mask
    ``<root>/<split>/<name><label_suffix>.png`` (values = class ids, 255 = unlabeled); class names
    in ``<root>/classes.txt``, one per line."""
    folder = require_dir(Path(root) / split, f"tiles split '{split}'")
    items = []
    for image in (p for p in list_images(folder) if not p.stem.endswith(label_suffix)):
        mask = image.with_name(f"{image.stem}{label_suffix}.png")
        if not mask.is_file():
            raise DataError(f"no mask for image {image}: expected {mask}")
        items.append((image, mask))
    return SegmentationDataset(items=require_items(items, folder),
                               classes=read_lines(Path(root) / "classes.txt"), ignore_index=255,
                               name=f"tiles/{split}")


def scan_tiles(root: Path, options: dict) -> dict[str, Pairing]:
    """Every split folder: its images and masks paired by name, leftovers on both sides."""
    suffix = options.get("label_suffix", "_label")
    out = {}
    for folder in sorted(d for d in root.iterdir() if d.is_dir()):
        files = stems(folder)
        masks = {k[: -len(suffix)]: p for k, p in files.items() if k.endswith(suffix)}
        images = {k: p for k, p in files.items() if not k.endswith(suffix)}
        out[folder.name] = match(images, masks)
    return out


def install_tiles(root: Path, fetch) -> bool:
    """The archive's ``tiles/`` folder becomes ``root/tiles``."""
    from segkd.data.download import extract, under

    archive = fetch.get()
    extract(archive, root / "tiles", under(0, "tiles"))
    fetch.done(archive)
    return True


TILES = DatasetSpec(
    "tiles", tiles, scan=scan_tiles,
    downloads=(Download("tiles", install_tiles, data_root="tiles", expected={"train": 6, "val": 2},
                        archive=Archive("tiles.zip", ("https://example.invalid/tiles.zip",), None)),))


# ------------------------------------------------------------------ the test
CLASSES = ["ground", "road", "car"]


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _scene(i: int) -> tuple[np.ndarray, np.ndarray]:
    """A 32x32 image and its mask: ground above, road below, a car (square) on the road;
    every class is in every mask, each class its own colour plus noise."""
    rng = np.random.default_rng(i)
    mask = np.zeros((32, 32), np.uint8)
    mask[16:] = 1
    x = 4 + 3 * i
    mask[18:26, x:x + 8] = 2
    colours = np.array([[60, 140, 60], [90, 90, 90], [200, 30, 30]])
    image = colours[mask] + rng.integers(-20, 20, (32, 32, 3))
    return np.clip(image, 0, 255), mask


def _archive(path: Path) -> None:
    """tiles.zip as a mirror would serve it: tiles/{train,val}/..., tiles/classes.txt."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("tiles/classes.txt", "\n".join(CLASSES) + "\n")
        for split, n in (("train", 6), ("val", 2)):
            for i in range(n):
                image, mask = _scene(i + (10 if split == "val" else 0))
                zf.writestr(f"tiles/{split}/t{i}.png", _png(image))
                zf.writestr(f"tiles/{split}/t{i}_label.png", _png(mask))


@pytest.fixture
def registered():
    register_dataset(TILES)
    yield TILES
    DATASETS.unregister("tiles")


def test_a_dataset_written_outside_the_package_trains_and_evaluates(registered, segkd, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _archive(mirror / "tiles.zip")

    got = segkd("download", "tiles", "--root", str(tmp_path / "data"),
                "--base-url", mirror.resolve().as_uri())
    assert got.returncode == 0, got.stderr
    root = tmp_path / "data" / "tiles"
    assert (root / "train" / "t0_label.png").is_file() and not (tmp_path / "data" / "downloads" / "tiles.zip").exists()

    listed = segkd("list", "datasets", "--verbose")
    assert listed.returncode == 0
    assert "\ntiles\n" in listed.stdout and "<root>/<split>/<name><label_suffix>.png" in listed.stdout
    assert "data.options: label_suffix='_label'" in listed.stdout

    checked = segkd("prepare", "tiles", "--root", str(root))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "OK" in checked.stdout

    config = tmp_path / "tiles.yaml"
    config.write_text(json.dumps({
        "name": "tiles-unet", "seed": 0,
        "data": {"name": "tiles", "root": str(root), "batch_size": 2, "num_workers": 0,
                 "options": {"label_suffix": "_label"}},
        "model": {"arch": "unet", "encoder": "kd_resnet10"},
        "stages": [{"name": "train", "epochs": 1, "terms": [{"loss": "ce"}],
                    "optimizer": {"name": "adam", "lr": 1e-3}}],
        "trainer": {"progress": False, "precision": "32"},
        "eval": {"splits": ["val"]},
    }))
    run = tmp_path / "run"
    trained = segkd("train", str(config), "--run-dir", str(run))
    assert trained.returncode == 0, trained.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["classes"] == CLASSES and "mIoU" in summary["splits"]["val"]

    scores = tmp_path / "eval.json"
    evaluated = segkd("eval", str(run), "--split", "val", "--json", str(scores))
    assert evaluated.returncode == 0, evaluated.stderr
    m = json.loads(scores.read_text())
    assert m["dataset"] == "tiles" and m["images"] == 2 and m["classes"] == CLASSES
    assert m["mIoU"] == pytest.approx(summary["splits"]["val"]["mIoU"])


def test_an_unknown_option_of_the_new_dataset_names_its_options(registered, tmp_path):
    from segkd.config.schema import DataCfg
    from segkd.core.errors import ConfigError
    from segkd.data import dataset_from_config

    with pytest.raises(ConfigError, match=r"data.options.label_sufix: dataset 'tiles' has no option "
                                          r"'label_sufix'. Did you mean: label_suffix\?"):
        dataset_from_config(DataCfg(name="tiles", root=str(tmp_path), options={"label_sufix": "_m"}),
                            "train")
