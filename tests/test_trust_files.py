"""What a hash vouches for is what was read: the teacher cache key is the sha256 of the bytes the
teacher was loaded from (a file replaced while a run starts never gets another file's key), a
run directory given as a teacher checkpoint works with the cache, a sidecar vouches for the
bytes serialised, and a checkpoint without its sidecar is checked by its zip records' CRC-32s."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

import segkd.core.checkpoint as ckmod
from segkd.config.schema import config_from_dict
from segkd.core.checkpoint import load_checkpoint, read_checkpoint, resolve_checkpoint, save_checkpoint
from segkd.core.errors import CheckpointError
from segkd.engine import Engine


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy_pair(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    shutil.copy(src.with_name(src.name + ".sha256"), dst.with_name(dst.name + ".sha256"))
    return dst


def _other_teacher(teacher_ckpt: Path, path: Path) -> Path:
    """The same teacher with one weight changed, saved (with its sidecar) at ``path``."""
    ck = load_checkpoint(teacher_ckpt)
    k = next(k for k in ck["state_dict"] if k.endswith("weight"))
    ck["state_dict"][k] = ck["state_dict"][k] + 1
    return save_checkpoint(ck, path)


def _kd(tiny, teacher: dict, cache_dir: Path) -> dict:
    stages = [{"name": "kd", "epochs": 1, "terms": [{"loss": "ce"}, {"loss": "kd"}],
               "optimizer": {"name": "adam", "lr": 1e-2}}]
    return tiny(name="kd", teacher={**teacher, "cache": {"dir": str(cache_dir)}}, stages=stages,
                eval={"splits": []}, data={"val_split": None})


def _keys(cache_dir: Path) -> list[str]:
    return sorted(json.loads((d / "key.json").read_text())["teacher"] for d in cache_dir.iterdir())


# ------------------------------------------------------------------ the teacher cache key
@pytest.mark.parametrize("source", ["checkpoint", "weights"])
def test_a_teacher_file_replaced_after_it_is_read_keys_the_bytes_loaded(tmp_path, tiny,
                                                                       teacher_ckpt, monkeypatch,
                                                                       source):
    """Teacher A is loaded, then (a teacher run finishing, a rename onto the same path) B takes
    its place: the cache holds A's outputs, so its key must be A's hash, and a later run with B
    must build its own cache."""
    path = _copy_pair(teacher_ckpt, tmp_path / "teacher" / "best.pt")
    a_hash = _sha(path)
    b = _other_teacher(teacher_ckpt, tmp_path / "b.pt")
    b_hash = _sha(b)
    real_load, swapped = torch.load, []

    def load_then_swap(*args, **kwargs):  # the file changes right after the teacher is read
        out = real_load(*args, **kwargs)
        if not swapped:
            swapped.append(True)
            _copy_pair(b, path)
        return out

    monkeypatch.setattr(ckmod.torch, "load", load_then_swap)
    teacher = ({"checkpoint": str(path)} if source == "checkpoint" else
               {"model": {"arch": "unet", "encoder": "kd_resnet14"}, "weights": str(path)})
    cache = tmp_path / "cache"
    eng = Engine(config_from_dict(_kd(tiny, teacher, cache)), tmp_path / "run_a")
    eng.run()
    assert swapped and _sha(path) == b_hash  # the file on disk is B now
    b_state = load_checkpoint(b)["state_dict"]
    changed = next(k for k in b_state if k.endswith("weight"))
    loaded = eng.distiller.teacher.state_dict()[changed].float().cpu()
    assert not torch.equal(loaded, b_state[changed].float())  # the run distilled from A
    assert _keys(cache) == [a_hash]  # the key is the hash of the bytes the teacher came from
    summary = json.loads((tmp_path / "run_a" / "summary.json").read_text())
    assert summary["teacher_sha256"] == a_hash  # and so is the run's record of its teacher

    monkeypatch.setattr(ckmod.torch, "load", real_load)
    Engine(config_from_dict(_kd(tiny, teacher, cache)), tmp_path / "run_b").run()
    assert _keys(cache) == sorted([a_hash, b_hash])  # B never reads A's outputs


def test_read_checkpoint_hashes_the_bytes_it_loads(tmp_path, monkeypatch):
    path = save_checkpoint({"v": torch.zeros(8)}, tmp_path / "x.pt")
    a_hash = _sha(path)
    real_load = torch.load

    def load_then_swap(*args, **kwargs):
        out = real_load(*args, **kwargs)
        save_checkpoint({"v": torch.ones(8)}, path)
        return out

    monkeypatch.setattr(ckmod.torch, "load", load_then_swap)
    read = read_checkpoint(path)
    assert torch.equal(read.obj["v"], torch.zeros(8)) and read.sha256 == a_hash != _sha(path)
    assert read.verified == "sha256"


def test_the_sidecar_vouches_for_the_bytes_serialised_not_a_reread(tmp_path, monkeypatch):
    """Another writer changing the temp file after it is written: the pair must not verify."""
    real = ckmod._write_synced

    def write_then_tamper(path, write):
        real(path, write)
        if path.name == ".x.pt.tmp":
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0xFF
            path.write_bytes(bytes(data))

    monkeypatch.setattr(ckmod, "_write_synced", write_then_tamper)
    path = save_checkpoint({"v": torch.arange(4096, dtype=torch.float32)}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match=r"is corrupt \(sha256 differs from x.pt.sha256\)"):
        load_checkpoint(path)


# ------------------------------------------------------------------ checkpoint or run directory
def test_a_run_directory_as_teacher_checkpoint_works_with_the_cache(tmp_path, tiny, teacher_ckpt):
    run = teacher_ckpt.parent  # the teacher's run directory: best.pt and last.pt
    cache = tmp_path / "cache"
    Engine(config_from_dict(_kd(tiny, {"checkpoint": str(run)}, cache)), tmp_path / "kd").run()
    assert _keys(cache) == [_sha(run / "best.pt")]


def test_one_resolution_of_checkpoint_or_run_directory(tmp_path):
    from segkd.apps.study import StudySpec, teacher_checkpoint

    rd = tmp_path / "run"
    assert resolve_checkpoint(rd) == rd  # not there: the path itself (then "not found")
    assert resolve_checkpoint(rd, run_dir=True) == rd / "best.pt"  # a run not made yet
    rd.mkdir()
    assert resolve_checkpoint(rd) == rd / "best.pt"
    save_checkpoint({"v": torch.zeros(1)}, rd / "last.pt")
    assert resolve_checkpoint(rd) == rd / "last.pt"
    save_checkpoint({"v": torch.ones(1)}, rd / "best.pt")
    assert resolve_checkpoint(rd) == rd / "best.pt"
    assert resolve_checkpoint(rd / "last.pt") == rd / "last.pt"
    read = read_checkpoint(rd)
    assert read.path == rd / "best.pt" and torch.equal(read.obj["v"], torch.ones(1))
    spec = StudySpec(name="s", out_dir=str(tmp_path / "out"), methods={"kd": "kd.yaml"},
                     students=["kd_resnet10"], teacher={"checkpoint": str(rd)})
    assert teacher_checkpoint(spec) == rd / "best.pt"  # a study injects the file


# ------------------------------------------------------------------ no sidecar: CRC-32
def _flip_in_tensor_record(path: Path) -> str:
    """Flip one byte in the middle of the largest tensor record of a torch zip file."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        rec = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    head = data[rec.header_offset:rec.header_offset + 30]
    start = rec.header_offset + 30 + int.from_bytes(head[26:28], "little") \
        + int.from_bytes(head[28:30], "little")
    data[start + rec.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return rec.filename


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    """A finished 1-epoch run with its summary removed: a run --resume would continue."""
    from conftest import tiny_cfg

    run = tmp_path_factory.mktemp("trust") / "run"
    Engine(config_from_dict(tiny_cfg(eval={"splits": []})), run).run()
    (run / "summary.json").unlink()
    return run


def _without_sidecar(stopped_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the stopped run whose last.pt has lost its sha256 sidecar: (run, last.pt)."""
    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    (run / "last.pt.sha256").unlink()
    return run, run / "last.pt"


def test_a_bit_flip_in_last_pt_without_its_sidecar_refuses_resume(tmp_path, stopped_run, segkd):
    run, last = _without_sidecar(stopped_run, tmp_path)
    record = _flip_in_tensor_record(last)
    with pytest.raises(CheckpointError, match=f"is corrupt \\(its record '{record}' fails its "
                                              "CRC-32 check; there is no last.pt.sha256\\)"):
        load_checkpoint(last)
    proc = segkd("train", str(run / "config.yaml"), "--resume", str(run))
    assert proc.returncode == 2, proc.stderr
    flat = " ".join(proc.stderr.split())
    assert f"checkpoint {last} is corrupt (its record '{record}' fails its CRC-32 check" in flat
    assert "Traceback" not in flat and not (run / "summary.json").exists()  # not marked finished


def test_an_intact_last_pt_without_its_sidecar_loads_and_resumes(tmp_path, stopped_run, segkd):
    run, last = _without_sidecar(stopped_run, tmp_path)
    read = read_checkpoint(last)
    assert read.verified == "crc32" and read.obj["progress"]["epoch"] == 1
    proc = segkd("train", str(run / "config.yaml"), "--resume", str(run))
    assert proc.returncode == 0, proc.stderr
    assert (run / "summary.json").is_file()


def test_an_uncheckable_file_loads_but_is_refused_for_resume(tmp_path, stopped_run, segkd):
    """torch's legacy (non-zip) format carries no checksums: without a sidecar nothing can
    check it, so --resume refuses it (a weights file of that age still loads elsewhere)."""
    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    last = run / "last.pt"
    obj = load_checkpoint(last)
    last.with_name("last.pt.sha256").unlink()
    torch.save(obj, last, _use_new_zipfile_serialization=False)
    assert read_checkpoint(last).verified == ""
    with pytest.raises(CheckpointError, match="cannot verify checkpoint .* has no last.pt.sha256"):
        load_checkpoint(last, must_verify=True)
    proc = segkd("train", str(run / "config.yaml"), "--resume", str(run))
    assert proc.returncode == 2 and not (run / "summary.json").exists()
    assert f"cannot verify checkpoint {last}" in " ".join(proc.stderr.split())


def test_a_damaged_zip_directory_without_sidecar_is_a_clear_error(tmp_path):
    path = save_checkpoint({"v": torch.ones(64)}, tmp_path / "x.pt")
    path.with_name("x.pt.sha256").unlink()
    data = bytearray(path.read_bytes())
    data[data.index(b"PK\x01\x02") + 1] ^= 0xFF  # the signature of the central directory
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {path}: a damaged zip"):
        load_checkpoint(path)
