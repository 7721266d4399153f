"""The real CamVid val split from the shared data folder (skipped when absent; a failure when
SEGKD_REQUIRE_SHARED=1 or CI is set, see conftest.require_shared)."""
from pathlib import Path

import pytest
from conftest import require_shared

from segkd.data import build_dataset

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "camvid"


def test_real_camvid_val():
    require_shared(ROOT / "val")
    ds = build_dataset("camvid", root=ROOT, split="val")
    assert len(ds) == 101
    s = ds[0]
    assert s["image"].shape == (3, 360, 480) and s["mask"].shape == (360, 480)
    for i in range(len(ds)):  # load_raw decodes and checks every label value
        image, mask = ds.load_raw(i)
        assert image.shape == (3, 360, 480) and mask.shape == (360, 480)
        assert int(mask.max()) <= 11
