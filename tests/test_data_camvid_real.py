"""The real CamVid val split from the shared data folder (skipped when absent)."""
from pathlib import Path

import pytest

from segkd.data import build_dataset

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "camvid"


@pytest.mark.skipif(not (ROOT / "val").is_dir(), reason="shared CamVid data not present")
def test_real_camvid_val():
    ds = build_dataset("camvid", root=ROOT, split="val")
    assert len(ds) == 101
    s = ds[0]
    assert s["image"].shape == (3, 360, 480) and s["mask"].shape == (360, 480)
    for i in range(len(ds)):  # load_raw decodes and checks every label value
        image, mask = ds.load_raw(i)
        assert image.shape == (3, 360, 480) and mask.shape == (360, 480)
        assert int(mask.max()) <= 11
