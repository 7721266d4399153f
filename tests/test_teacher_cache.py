"""The teacher cache (teacher.cache): exact reuse of the frozen teacher's outputs."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from segkd.config.schema import config_from_dict
from segkd.core.checkpoint import load_checkpoint
from segkd.distill.cache_store import CacheError, locked
from segkd.engine import Engine

OFD = {"loss": "ofd", "name": "ofd", "weight": 1e-3, "student": "encoder.model.layer2.0.act2",
       "student_hook": "input", "teacher": "encoder.model.layer2.0.act2", "teacher_hook": "input",
       "connector": "conv1x1_bn"}
KD = {"loss": "kd", "options": {"temperature": 2.0}}
AT = {"loss": "at", "student": "encoder.model.layer3", "teacher": "encoder.model.layer3"}


def _raw(tiny, teacher_ckpt, cache=None, stages=None, **over):
    teacher = {"checkpoint": str(teacher_ckpt)}
    if cache is not None:
        teacher["cache"] = cache
    stages = stages or [{"name": "kd", "epochs": 2, "terms": [{"loss": "ce"}, KD, OFD, AT],
                         "optimizer": {"name": "adam", "lr": 1e-2}}]
    over = {"eval": {"splits": []}, **over}
    if not any("select" in st for st in stages):  # no validation needed: faster
        over["data"] = {"val_split": None, **over.get("data", {})}
    return tiny(name="kd", teacher=teacher, stages=stages, **over)


def _err(capsys) -> str:
    """What the run printed, with rich's line wrapping undone."""
    return " ".join(capsys.readouterr().err.split())


def _train(raw, run: Path) -> tuple[dict, list[dict]]:
    eng = Engine(config_from_dict(raw), run)
    eng.run()
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    return load_checkpoint(run / "last.pt")["state_dict"], [
        {k: v for k, v in r.items() if k.startswith("train/loss")} for r in rows if "train/loss" in r]


def _assert_same(a, b) -> None:
    (sa, la), (sb, lb) = a, b
    assert la == lb  # every epoch's mean of every loss term, exactly
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_exact_memory_cache_trains_bit_for_bit_like_the_live_teacher(tmp_path, tiny, teacher_ckpt,
                                                                     precision, capsys):
    """KD (logits), OFD (pre-ReLU input hook) and AT (output hook), flips on: the same losses
    every epoch and the same weights after two epochs, in fp32 and under bf16 autocast."""
    trainer = {"precision": precision, "progress": False, "log_every": 1}
    live = _train(_raw(tiny, teacher_ckpt, trainer=trainer), tmp_path / "live")
    cached = _train(_raw(tiny, teacher_ckpt, {"storage": "memory"}, trainer=trainer), tmp_path / "c")
    assert "teacher cache (exact): 8 images x 2 view(s)" in _err(capsys)
    _assert_same(live, cached)


def test_batches_carry_index_and_both_views(tiny):
    """Samples say which item and flip they are; the cache's view of an item is that sample."""
    from segkd.config.schema import TeacherCacheCfg
    from segkd.distill.teacher_cache import TeacherCache, find_flip
    from segkd.engine.data import build_data, make_loader

    cfg = config_from_dict(tiny())
    ds = build_data(cfg.data).train
    builder = TeacherCache(TeacherCacheCfg(storage="memory"), None, {}, 4, False,
                           torch.device("cpu"), print)
    loader = make_loader(ds, 4, True, 0, seed=0)
    seen = set()
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            for img, i, v in zip(batch["image"], batch["index"], batch["view"]):
                seen.add(int(v))
                assert torch.equal(builder._views(ds, find_flip(ds.transform), int(i), 2)[v], img)
    assert seen == {0, 1}


def test_flip_and_crop_draw_like_torchvision(tiny):
    """segkd's recording flip and crop give the samples v2.RandomHorizontalFlip and
    v2.RandomCrop gave (the same random draws)."""
    from torchvision.transforms import v2

    from segkd.data.transforms import JointRandomCrop, RandomHFlip, split_transforms
    from segkd.engine.data import build_data

    ds = build_data(config_from_dict(tiny(data={"scale": [0.5, 1.5], "crop": [24, 24]})).data).train
    ours = ds.transform

    def v2_step(s):
        if isinstance(s, RandomHFlip):
            return v2.RandomHorizontalFlip(0.5)
        if isinstance(s, JointRandomCrop):
            return v2.RandomCrop(s.size, pad_if_needed=True, fill=s.fill)
        return s
    theirs = v2.Compose([v2_step(s) for s in ours.transforms])
    for i in range(8):
        torch.manual_seed(i)
        a = ds[i]
        ds.transform = theirs
        torch.manual_seed(i)
        b = ds[i]
        ds.transform = ours
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert split_transforms  # imported for its pipeline


def test_stagewise_disk_cache_each_stage_its_position(tmp_path, tiny, teacher_ckpt):
    stages = [{"name": f"s{i}", "epochs": 1, "trainable": [f"encoder.model.{p}"],
               "terms": [{"loss": "mse", "student": f"encoder.model.{p}", "teacher": f"encoder.model.{p}",
                          "connector": "none"}],
               "optimizer": {"name": "adam", "lr": 1e-2},
               "select": {"metric": "val/loss/mse", "mode": "min", "restore_best": True}}
              for i, p in enumerate(["layer1", "layer2"])]
    live = _train(_raw(tiny, teacher_ckpt, stages=stages), tmp_path / "live")
    cache = {"dir": str(tmp_path / "cache")}
    cached = _train(_raw(tiny, teacher_ckpt, cache, stages=stages), tmp_path / "c")
    _assert_same(live, cached)
    (folder,) = (tmp_path / "cache").iterdir()
    names = sorted(p.name for p in folder.glob("*.bin"))
    assert names == ["encoder.model.layer1.output.float32.bin", "encoder.model.layer2.output.float32.bin"]
    # a second run reads them (nothing rebuilt: the files are not rewritten)
    stamps = {p: p.stat().st_mtime_ns for p in folder.glob("*.bin")}
    _assert_same(live, _train(_raw(tiny, teacher_ckpt, cache, stages=stages), tmp_path / "c2"))
    assert stamps == {p: p.stat().st_mtime_ns for p in folder.glob("*.bin")}


def _kd_only(tiny, teacher_ckpt, cache, **over):
    stages = [{"name": "kd", "epochs": 1, "terms": [{"loss": "ce"}, KD],
               "optimizer": {"name": "adam", "lr": 1e-2}}]
    return _raw(tiny, teacher_ckpt, cache, stages=stages, **over)


def test_key_changes_with_teacher_and_settings(tmp_path, tiny, teacher_ckpt):
    cache = {"dir": str(tmp_path / "cache")}
    Engine(config_from_dict(_kd_only(tiny, teacher_ckpt, cache)), tmp_path / "a").run()
    other = tmp_path / "other.pt"  # the same teacher, one weight changed
    ck = load_checkpoint(teacher_ckpt)
    k = next(k for k in ck["state_dict"] if k.endswith("weight"))
    ck["state_dict"][k] = ck["state_dict"][k] + 1
    torch.save(ck, other)
    Engine(config_from_dict(_kd_only(tiny, other, cache)), tmp_path / "b").run()
    Engine(config_from_dict(_kd_only(tiny, teacher_ckpt, cache, data={"hflip": False})),
           tmp_path / "c").run()
    keys = [json.loads((d / "key.json").read_text()) for d in (tmp_path / "cache").iterdir()]
    assert len(keys) == 3  # three folders: no run read another's outputs
    assert len({k["teacher"] for k in keys}) == 2 and {k["views"] for k in keys} == {1, 2}


def _one_bin(tmp_path) -> Path:
    (folder,) = (tmp_path / "cache").iterdir()
    (b,) = folder.glob("*.bin")
    return b


def test_corrupt_or_truncated_file_is_rebuilt_never_read(tmp_path, tiny, teacher_ckpt, capsys):
    cache = {"dir": str(tmp_path / "cache")}
    ref = _train(_kd_only(tiny, teacher_ckpt, None), tmp_path / "live")
    _train(_kd_only(tiny, teacher_ckpt, cache), tmp_path / "a")
    b = _one_bin(tmp_path)
    data = bytearray(b.read_bytes())
    data[len(data) // 2] ^= 0x40  # one flipped bit
    b.write_bytes(bytes(data))
    _assert_same(ref, _train(_kd_only(tiny, teacher_ckpt, cache), tmp_path / "b"))
    assert "fails its checksum (corrupt); rebuilding it" in _err(capsys)
    b.write_bytes(b.read_bytes()[:100])
    _assert_same(ref, _train(_kd_only(tiny, teacher_ckpt, cache), tmp_path / "c"))
    assert "it is truncated; rebuilding it" in _err(capsys)


def test_file_of_another_teacher_is_refused(tmp_path, tiny, teacher_ckpt):
    cache = {"dir": str(tmp_path / "cache")}
    Engine(config_from_dict(_kd_only(tiny, teacher_ckpt, cache)), tmp_path / "a").run()
    b = _one_bin(tmp_path)
    man = b.with_suffix(".json")
    m = json.loads(man.read_text())
    m["key"]["teacher"] = "0" * 64
    man.write_text(json.dumps(m))
    with pytest.raises(CacheError, match="built for another teacher.*differs in: teacher"):
        Engine(config_from_dict(_kd_only(tiny, teacher_ckpt, cache)), tmp_path / "b").run()


def test_interrupted_build_resumes(tmp_path, tiny, teacher_ckpt, monkeypatch, capsys):
    from segkd.distill import cache_store

    cache = {"dir": str(tmp_path / "cache"), "batch_size": 2}  # 1 image x 2 views per batch
    ref = _train(_kd_only(tiny, teacher_ckpt, None), tmp_path / "live")
    orig, calls = cache_store.PartialArray.write, {"n": 0}

    def dies_on_fourth(self, rows, values):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return orig(self, rows, values)

    monkeypatch.setattr(cache_store.PartialArray, "write", dies_on_fourth)
    monkeypatch.setattr(cache_store.PartialArray, "SAVE_EVERY_S", 0.0)  # progress after each batch
    with pytest.raises(KeyboardInterrupt):
        Engine(config_from_dict(_kd_only(tiny, teacher_ckpt, cache)), tmp_path / "a").run()
    monkeypatch.setattr(cache_store.PartialArray, "write", orig)
    _assert_same(ref, _train(_kd_only(tiny, teacher_ckpt, cache), tmp_path / "b"))
    assert "resuming: 3 of 8 images done" in _err(capsys)


def test_two_runs_sharing_the_directory_build_once(tmp_path, tiny, teacher_ckpt):
    from segkd.distill import teacher_cache

    cache = {"dir": str(tmp_path / "cache")}
    built, orig = [], teacher_cache.TeacherCache._build

    def counting(self, *a, **k):
        built.append(1)
        return orig(self, *a, **k)

    teacher_cache.TeacherCache._build = counting
    try:
        errors = []

        def run(name):
            try:
                Engine(config_from_dict(_kd_only(tiny, teacher_ckpt, cache)), tmp_path / name).run()
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        teacher_cache.TeacherCache._build = orig
    assert not errors and len(built) == 1


def test_lock_makes_the_second_process_wait(tmp_path):
    said, order = [], []
    with locked(tmp_path, ["x"], said.append):
        t = threading.Thread(target=lambda: locked(tmp_path, ["x"], said.append).__enter__()
                             or order.append("second"))
        t.start()
        t.join(0.5)
        order.append("first done")
    t.join(5)
    assert order == ["first done", "second"] and "another process is building" in said[0]


def test_unwritable_dir_random_transform_and_budget_errors(tmp_path, tiny, teacher_ckpt, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CacheError, match=r"teacher cache directory .*file/c/\w+ is not writable \(Not a directory\)"):
        Engine(config_from_dict(_kd_only(tiny, teacher_ckpt, {"dir": str(blocker / "c")})),
               tmp_path / "a").run()
    for key, value in (("scale", [0.5, 2.0]), ("color_jitter", 0.2), ("crop", [24, 24])):
        with pytest.raises(CacheError, match=f"horizontal flips only; data.{key} "):
            Engine(config_from_dict(_kd_only(tiny, teacher_ckpt, {"storage": "memory"},
                                             data={key: value})), tmp_path / key).run()
    small = {"storage": "memory", "budget_mb": 0.001}
    with pytest.raises(CacheError, match="more than teacher.cache.budget_mb"):
        Engine(config_from_dict(_kd_only(tiny, teacher_ckpt, {**small, "over_budget": "refuse"})),
               tmp_path / "b").run()
    capsys.readouterr()
    ref = _train(_kd_only(tiny, teacher_ckpt, None), tmp_path / "live")
    _assert_same(ref, _train(_kd_only(tiny, teacher_ckpt, small), tmp_path / "c"))
    assert "this stage runs the live teacher" in _err(capsys)


@pytest.mark.parametrize("scale,atol", [((1.0, 1.0), 1e-4), ((2.0, 2.0), 0.02)])
def test_approximate_mode_cuts_the_cached_output_like_the_image(tiny, scale, atol):
    """With a "teacher" that returns its input, the warped cached output of each sample is the
    sample's own image (crop offsets, padding, flips, a 2x scale): the geometry is right."""
    from segkd.config.schema import TeacherCacheCfg
    from segkd.distill.teacher_cache import LOGITS_POS, TeacherCache
    from segkd.engine.data import build_data, make_loader

    cfg = config_from_dict(tiny(data={"size": [32, 32], "scale": list(scale), "crop": [40, 24]}))
    ds = build_data(cfg.data).train
    cache = TeacherCache(TeacherCacheCfg(mode="approximate", storage="memory"),
                         lambda x: {LOGITS_POS: x.clone()}, {"t": 1}, 4, False,
                         torch.device("cpu"), lambda m: None)
    stage = cache.for_stage(ds, [LOGITS_POS])
    loader = make_loader(ds, 4, True, 0, seed=0)
    views, pads = set(), 0
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            out = stage.batch(batch, torch.device("cpu"))[LOGITS_POS]
            assert out.shape == batch["image"].shape
            keep = (batch["mask"] != ds.ignore_index).unsqueeze(1).expand_as(out)
            assert torch.allclose(out[keep], batch["image"][keep], atol=atol)
            views |= set(batch["view"].tolist())
            pads += int((~keep).any())
    assert views == {0, 1} and (pads > 0) == (scale[0] == 1.0)  # 40 rows > 32: padded


def test_approximate_mode_trains_and_names_itself(tmp_path, tiny, teacher_ckpt, capsys):
    raw = _kd_only(tiny, teacher_ckpt, {"mode": "approximate", "storage": "memory"},
                   data={"scale": [0.75, 1.5], "crop": [24, 24]})
    _, losses = _train(raw, tmp_path / "a")
    assert all(v == v and v < 1e3 for v in losses[0].values())
    assert "teacher cache (approximate)" in _err(capsys)
    raw["data"]["color_jitter"] = 0.2
    with pytest.raises(CacheError, match="approximate.*data.color_jitter"):
        Engine(config_from_dict(raw), tmp_path / "b").run()


def test_camvid_distillation_recipes_use_the_exact_cache():
    """Every CamVid recipe with a teacher caches it, and its training transforms allow exact mode."""
    from segkd.config.schema import load_config
    from segkd.data.transforms import split_transforms
    from segkd.distill.teacher_cache import check_exact

    recipes = [p for p in sorted((Path(__file__).parents[1] / "configs" / "camvid").glob("[!_]*.yaml"))
               if load_config(p).teacher is not None]
    assert len(recipes) >= 10
    for p in recipes:
        cfg = load_config(p)
        assert cfg.teacher.cache is not None and cfg.teacher.cache.mode == "exact", p
        d = cfg.data
        check_exact(split_transforms(True, size=d.size, scale=d.scale, crop=d.crop, hflip=d.hflip,
                                     color_jitter=d.color_jitter, blur=d.blur)[1])


def test_cache_switches_from_the_command_line():
    """`cache: true` in a recipe, then --set teacher.cache.dir=... / teacher.cache=false."""
    from segkd.config.schema import load_config

    kd = Path(__file__).parents[1] / "configs" / "camvid" / "kd.yaml"
    assert load_config(kd, ["teacher.cache.dir=/x"]).teacher.cache.dir == "/x"
    assert load_config(kd, ["teacher.cache.storage=memory"]).teacher.cache.mode == "exact"
    assert load_config(kd, ["teacher.cache=false"]).teacher.cache is None
    assert load_config(kd, ["teacher.cache.mode=off"]).teacher.cache.mode == "off"
