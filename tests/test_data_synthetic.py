"""The synthetic demo set: deterministic, split-dependent, context-dependent classes."""
import pytest
import torch

from segkd.core.errors import DataError
from segkd.data import build_dataset, build_transforms
from segkd.data.synthetic import PERSON, SIGN

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")


def test_deterministic_and_splits_differ():
    a = build_dataset("synthetic", split="train", num_images=4, seed=1)
    b = build_dataset("synthetic", split="train", num_images=4, seed=1)
    for i in range(4):
        assert torch.equal(a[i]["image"], b[i]["image"]) and torch.equal(a[i]["mask"], b[i]["mask"])
    v = build_dataset("synthetic", split="val", num_images=4, seed=1)
    c = build_dataset("synthetic", split="train", num_images=4, seed=2)
    assert not torch.equal(a[0]["image"], v[0]["image"])
    assert not torch.equal(a[0]["image"], c[0]["image"])
    assert a[0]["name"] == "synthetic_train_00000"


def test_defaults_shapes_and_classes():
    ds = build_dataset("synthetic", split="train")
    assert len(ds) == 96 and len(build_dataset("synthetic", split="val")) == 32
    assert ds.classes[:2] == ["background_sky", "ground"] and ds.num_classes == 6
    s = ds[0]
    assert s["image"].dtype == torch.float32 and s["image"].shape == (3, 96, 128)
    assert s["mask"].dtype == torch.int64 and s["mask"].shape == (96, 128)
    seen = set()
    for i in range(16):
        seen |= set(ds[i]["mask"].unique().tolist())
    assert seen == set(range(6))


def test_same_shape_class_depends_on_position():
    # Discs above the horizon are signs, below are persons: signs sit higher on average.
    ds = build_dataset("synthetic", split="train", num_images=24)
    rows = torch.arange(96).view(96, 1).float()
    sign_rows, person_rows = [], []
    for i in range(len(ds)):
        _, m = ds.load_raw(i)
        sign_rows += rows.expand(96, 128)[m == SIGN].tolist()
        person_rows += rows.expand(96, 128)[m == PERSON].tolist()
    assert sum(sign_rows) / len(sign_rows) < sum(person_rows) / len(person_rows)


def test_subset_transform_and_num_classes():
    t = build_transforms(train=True, crop=(64, 64))
    ds = build_dataset("synthetic", split="val", num_images=8, num_classes=3, transform=t)
    sub = ds.subset([5, 2])
    assert [sub.item_name(i) for i in range(2)] == ["synthetic_val_00005", "synthetic_val_00002"]
    assert torch.equal(sub.load_raw(0)[1], ds.load_raw(5)[1])
    assert sub[0]["image"].shape == (3, 64, 64)
    assert int(sub[0]["mask"].max()) < 3
    with pytest.raises(DataError, match="num_classes"):
        build_dataset("synthetic", num_classes=9)
