"""select_fraction / write_file_list / read_file_list."""
import pytest

from segkd.core.errors import ConfigError, DataError
from segkd.data import build_dataset, read_file_list, select_fraction, write_file_list

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


def _kdsemseg_count(n_items: int, percent: int) -> int:
    """Transcription of kdsemseg's split script (utils/split_camvid.py): the number of training
    images kept for an integer percentage is int(n * percent / 100), i.e. truncated."""
    return int(n_items * percent / 100)


@pytest.mark.parametrize("n_items", [367, 101, 233, 100, 7, 2975])
def test_select_fraction_count_truncates_like_kdsemseg(n_items):
    for percent in range(1, 100):
        want = max(1, _kdsemseg_count(n_items, percent))  # segkd keeps at least one item
        assert len(select_fraction(n_items, percent / 100, seed=1)) == want, (n_items, percent)


def test_quarter_of_camvid_train_is_91_images():
    assert len(select_fraction(367, 0.25, seed=1)) == 91  # kdsemseg's 1/4 split; rounding gave 92
    assert len(select_fraction(100, 0.29, seed=1)) == 29  # 100 * 0.29 == 28.999... in floats


def test_select_fraction_picks_kdsemseg_positions():
    """kdsemseg: random.seed(1); random.sample(file_list, count). The same positions of a list
    in the same order are picked."""
    import random

    names = [f"img{i:03d}.png" for i in range(367)]
    random.seed(1)
    picked = random.sample(names, _kdsemseg_count(367, 25))
    assert sorted(names.index(n) for n in picked) == select_fraction(367, 0.25, seed=1)
