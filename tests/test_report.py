"""segkd.apps.report.tables on hand-made summary.json files: grouping, mean ± std, tables, plot."""
import csv
import json

import pytest
from rich.console import Console

from segkd.apps.report.tables import (
    aggregate,
    load_runs,
    markdown_table,
    metrics_table,
    per_class_table,
    plot_size_vs_miou,
    report,
    summary_table,
    write_tables,
)
from segkd.core.errors import SegkdError

CLASSES = ["sky", "road", "car"]


def _summary(name, seed, val, enc="kd_resnet10", frac=1.0, test=None, train=None, pim=None,
             params=5_000_000, per_class=None):
    splits = {"val": {"mIoU": val, "pixel_acc": 0.9, "mean_acc": 0.8,
                      "per_class_iou": per_class or [val, val, None]}}
    if pim is not None:
        splits["val"]["per_image_iou"] = pim
    if test is not None:
        splits["test"] = {"mIoU": test, "pixel_acc": 0.8, "mean_acc": 0.7, "per_class_iou": [test] * 3}
    if train is not None:
        splits["train"] = {"mIoU": train, "pixel_acc": 0.95, "mean_acc": 0.9, "per_class_iou": [train] * 3}
    return {"name": name, "seed": seed, "model": {"arch": "unet", "kwargs": {"encoder": enc, "num_classes": 3}},
            "classes": CLASSES, "fraction": frac, "params": params, "splits": splits,
            "wall_time_s": 10.0, "finished": f"2025-01-01 00:00:0{seed}"}


def _write(root, rel, summary, study=None, config=None):
    d = root / rel
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps(summary))
    if study is not None:
        (d / "study.json").write_text(json.dumps(study))
    if config is not None:
        (d / "config.yaml").write_text(config)
    return d


@pytest.fixture
def three_seeds(tmp_path):
    for seed, val in enumerate([0.5, 0.6, 0.7]):
        _write(tmp_path, f"scratch-s{seed}", _summary(f"scratch-s{seed}", seed, val, train=val + 0.1,
                                                      pim=val - 0.1))
    return tmp_path


def test_population_and_sample_std(three_seeds):
    runs = load_runs([three_seeds])
    assert len(runs) == 3 and all(r["study"] is None for r in runs)
    (row,) = aggregate(runs)
    assert (row["model"], row["method"], row["fraction"], row["n"]) == ("unet-kd_resnet10", "scratch", 1.0, 3)
    assert row["val"][0] == pytest.approx(0.6)
    assert row["val"][1] == pytest.approx(0.0816497, abs=1e-6)
    assert row["train"][0] == pytest.approx(0.7)
    assert row["test"] is None
    (row1,) = aggregate(runs, ddof=1)
    assert row1["val"][1] == pytest.approx(0.1)


def test_per_image_reads_per_image_iou(three_seeds):
    (row,) = aggregate(load_runs([three_seeds]), per_image=True)
    assert row["metric"] == "per_image_iou"
    assert row["val"][0] == pytest.approx(0.5)
    assert row["train"] is None  # train split has no per_image_iou
    assert "per-image IoU" in markdown_table([row])


def test_grouping_by_model_method_fraction(tmp_path):
    for seed in (0, 1):
        _write(tmp_path, f"a/s{seed}", _summary("x", seed, 0.4), study={"method": "kd", "fraction": 1.0})
        _write(tmp_path, f"b/s{seed}", _summary("x", seed, 0.5, frac=0.25),
               study={"method": "kd", "fraction": 0.25})
        _write(tmp_path, f"c/s{seed}", _summary("x", seed, 0.6, enc="kd_resnet18", params=9_000_000),
               study={"method": "kd", "fraction": 1.0})
        _write(tmp_path, f"d/s{seed}", dict(_summary("y", seed, 0.3), method="stagewise"))
    rows = aggregate(load_runs([tmp_path]))
    keys = {(r["model"], r["method"], r["fraction"]): r for r in rows}
    assert set(keys) == {("unet-kd_resnet10", "kd", 1.0), ("unet-kd_resnet10", "kd", 0.25),
                         ("unet-kd_resnet18", "kd", 1.0), ("unet-kd_resnet10", "stagewise", 1.0)}
    assert all(r["n"] == 2 for r in rows)
    assert keys[("unet-kd_resnet10", "kd", 0.25)]["val"][0] == pytest.approx(0.5)
    assert keys[("unet-kd_resnet18", "kd", 1.0)]["params"] == 9_000_000


def test_rerun_of_a_seed_counts_once(tmp_path):
    old = _summary("m-s0", 0, 0.1)
    old["finished"] = "2024-01-01 00:00:00"
    _write(tmp_path, "old", old)
    _write(tmp_path, "new", _summary("m-s0", 0, 0.5))
    (row,) = aggregate(load_runs([tmp_path]))
    assert row["n"] == 1 and row["val"][0] == pytest.approx(0.5)


def test_load_runs_reads_config_and_errors(tmp_path):
    d = _write(tmp_path, "r", _summary("r", 0, 0.5), config="name: r\nseed: 0\n")
    (run,) = load_runs([d])
    assert run["config"]["name"] == "r"
    with pytest.raises(SegkdError, match="no summary.json"):
        load_runs([_empty(tmp_path)])
    with pytest.raises(SegkdError, match="no such run directory"):
        load_runs([tmp_path / "missing"])
    (d / "summary.json").write_text("{not json")
    with pytest.raises(SegkdError, match="summary.json"):
        load_runs([d])


def _empty(tmp_path):
    e = tmp_path / "empty"
    e.mkdir()
    return e


def test_markdown_and_csv(tmp_path, three_seeds):
    for seed, (val, test) in enumerate([(0.2, 0.1), (0.4, 0.3)]):
        _write(three_seeds, f"kd/s{seed}", _summary(f"kd-s{seed}", seed, val, test=test))
    rows = aggregate(load_runs([three_seeds]))
    paths = write_tables(rows, tmp_path / "out", Console(file=open(tmp_path / "log.txt", "w")))
    md = paths["markdown"].read_text()
    assert "population std (ddof=0" in md and "dataset-level mIoU" in md
    assert "| Model | Params (M) | Seeds | Train mIoU | Val mIoU | Test mIoU |" in md
    assert "### scratch, fraction 1" in md and "### kd, fraction 1" in md
    assert "| unet-kd_resnet10 | 5.00 | 3 | 0.7000 ± 0.0816 | 0.6000 ± 0.0816 | — |" in md
    assert "| unet-kd_resnet10 | 5.00 | 2 | — | 0.3000 ± 0.1000 | 0.2000 ± 0.1000 |" in md
    with paths["csv"].open() as fh:
        table = list(csv.DictReader(fh))
    scratch = next(r for r in table if r["method"] == "scratch")
    assert float(scratch["val_mean"]) == pytest.approx(0.6)
    assert float(scratch["val_std"]) == pytest.approx(0.0816497, abs=1e-6)
    assert scratch["test_mean"] == "" and scratch["seeds"] == "0 1 2"
    assert "sample std" in markdown_table(aggregate(load_runs([three_seeds]), ddof=1))


def test_per_class_table(three_seeds):
    md = per_class_table(load_runs([three_seeds]))
    assert "| Model | Method | Fraction | Seeds | sky | road | car |" in md
    assert "| unet-kd_resnet10 | scratch | 1 | 3 | 0.6000 | 0.6000 | — |" in md


def test_plot_and_full_report(tmp_path, three_seeds):
    rows = aggregate(load_runs([three_seeds]))
    png = plot_size_vs_miou(rows, tmp_path / "p" / "plot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = report([three_seeds], tmp_path / "rep", plot=True, sample_std=True,
                     console=Console(file=open(tmp_path / "log2.txt", "w")))
    assert set(written) == {"markdown", "csv", "per_class", "plot"}
    assert all(p.is_file() for p in written.values())


def test_single_run_tables_render():
    s = _summary("run", 0, 0.5, test=0.4, pim=0.45)
    console = Console(record=True, width=120)
    console.print(summary_table(s))
    console.print(metrics_table(s["splits"]["val"], CLASSES))
    text = console.export_text()
    assert "0.5000" in text and "0.4500" in text and "5.00M params" in text
    assert "sky" in text and "—" in text  # class 'car' is absent


# ------------------------------------------------------------- methods from the resolved config
def _cfg(name, seed, encoder="kd_resnet10", lr=0.001, losses=("ce", "kd"), threads=1):
    import yaml

    return yaml.safe_dump({"name": name, "seed": seed, "model": {"arch": "unet", "encoder": encoder},
                           "trainer": {"threads": threads},
                           "stages": [{"terms": [{"loss": x} for x in losses],
                                       "optimizer": {"lr": lr}}]})


def test_method_is_named_from_the_resolved_config_not_the_run_name(tmp_path):
    """`--set model.encoder=kd_resnet10` on a config named camvid-r18-kd: the method column says
    what was trained (ce+kd), the model column the encoder."""
    for seed in (0, 1):
        _write(tmp_path, f"a{seed}", _summary("camvid-r18-kd", seed, 0.4),
               config=_cfg("camvid-r18-kd", seed, threads=seed + 1))  # threads: not a difference
    (row,) = aggregate(load_runs([tmp_path]))
    assert (row["model"], row["method"], row["n"]) == ("unet-kd_resnet10", "ce+kd", 2)


def test_recipe_label_of_multi_stage_configs():
    from segkd.apps.report.runs import recipe_label

    stages = [{"terms": [{"loss": "mse"}]}] * 10 + [{"terms": [{"loss": "ce"}]}]
    assert recipe_label({"stages": stages}) == "mse×10 > ce"
    assert recipe_label({"stages": [{"terms": [{"loss": "hint"}], "replace": [{}]}]}) == "hint+replace"


def test_runs_sharing_name_and_seed_with_different_configs_are_separate_rows(tmp_path):
    _write(tmp_path, "a", _summary("kd", 0, 0.4), config=_cfg("kd", 0, lr=0.001))
    _write(tmp_path, "b", _summary("kd", 0, 0.6), config=_cfg("kd", 0, lr=0.01))
    rows = aggregate(load_runs([tmp_path]))
    assert sorted((r["method"], r["n"], round(r["val"][0], 3)) for r in rows) == [
        ("ce+kd (stages.0.optimizer.lr=0.001)", 1, 0.4), ("ce+kd (stages.0.optimizer.lr=0.01)", 1, 0.6)]


def test_same_seed_twice_with_the_same_config_is_named_in_the_report(tmp_path):
    old = _summary("kd", 0, 0.1)
    old["finished"] = "2024-01-01 00:00:00"
    a = _write(tmp_path, "old", old, config=_cfg("kd", 0))
    _write(tmp_path, "new", _summary("kd", 0, 0.5), config=_cfg("kd", 0))
    console = Console(file=open(tmp_path / "out.txt", "w"), width=400)
    report([tmp_path], tmp_path / "report", console=console)
    console.file.close()
    text = (tmp_path / "out.txt").read_text()
    assert "seed 0: 2 runs with the same config; kept the newest" in text and f"ignored {a}" in text
