"""select_fraction / write_file_list / read_file_list."""
import pytest

from segkd.data import build_dataset, read_file_list, select_fraction, write_file_list
from segkd.errors import ConfigError, DataError

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning")


def test_select_fraction_seeded_sorted_at_least_one():
    a = select_fraction(100, 0.1, seed=3)
    assert a == select_fraction(100, 0.1, seed=3)
    assert a != select_fraction(100, 0.1, seed=4)
    assert len(a) == 10 and a == sorted(a) and len(set(a)) == 10
    assert all(0 <= i < 100 for i in a)
    assert len(select_fraction(5, 0.01, seed=0)) == 1
    assert select_fraction(7, 1.0, seed=9) == list(range(7))


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_select_fraction_rejects_bad_fraction(fraction):
    with pytest.raises(ConfigError, match="fraction"):
        select_fraction(10, fraction, seed=0)


def test_write_and_read_file_list(tmp_path):
    ds = build_dataset("synthetic", split="val", num_images=10)
    idx = select_fraction(len(ds), 0.3, seed=1)
    path = write_file_list(ds, idx, tmp_path / "sub" / "list.txt")
    lines = path.read_text().splitlines()
    assert lines == [f"synthetic_val_{i:05d}" for i in idx]
    assert read_file_list(ds, path) == idx
    (tmp_path / "bad.txt").write_text("nope.png\n")
    with pytest.raises(DataError, match="nope.png"):
        read_file_list(ds, tmp_path / "bad.txt")
