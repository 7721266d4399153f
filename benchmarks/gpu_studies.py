"""The CamVid evidence studies on a lent GPU machine: what it needs, in the 64 MiB a device call
carries, and the study specs it runs.

The camvid-small protocol trains at 128x96 and measures at the 480x360 labels. Its full-size
PNGs (122 MB) and the bf16 teacher (47 MB) do not fit one call, so the bundle holds
  - train images and masks already resized to ``--size`` with the training pipeline's own fixed
    resize (torchvision v2 Resize, bilinear antialiased / nearest), saved as PNG: the training
    inputs are the protocol's bit for bit (a resize to the same size is the identity; checked
    here on every image);
  - val images at full size as JPEG (``--quality``) with the original PNG labels, so val metrics
    stay at 480x360; the model sees them after the same downsizing, where JPEG's loss is small
    (the teacher's val mIoU on the bundle is printed beside the protocol's 0.543 to say how small);
  - the teacher compressed with xz (lossless);
  - cp312 wheels of what the machine's image lacks (segmentation-models-pytorch, pydantic).
The selection split (10% of train) is scored at ``--size`` rather than 480x360: it only
chooses the epoch.

    python benchmarks/gpu_studies.py bundle .gpudata          # here, once (ignored folder)
    python benchmarks/gpu_studies.py specs OUT_DIR SPEC...     # there: the GPU variants
    bash benchmarks/gpu_studies.sh                             # there: the whole call
"""
from __future__ import annotations

import argparse
import lzma
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
WHEELS = ["segmentation-models-pytorch==0.6.0", "pydantic==2.14.4", "pydantic-core==2.50.5",
          "annotated-types==0.8.0", "typing-inspection==0.4.5"]
TEACHER = "camvid-unet-r34-128x96.pt"


def bundle(out: Path, camvid: Path, teachers: Path, size: tuple[int, int], quality: int) -> None:
    import numpy as np
    import torch
    from PIL import Image
    from torchvision.transforms import v2
    from torchvision.tv_tensors import Mask

    from segkd.data.base import read_image
    from segkd.data.transforms import _resize

    resize = _resize(size)
    cam = out / "camvid"
    for sub in ("train", "trainannot", "val", "valannot"):
        (cam / sub).mkdir(parents=True, exist_ok=True)
    for img in sorted((camvid / "train").glob("*.png")):
        image = read_image(img)
        raw = torch.from_numpy(np.array(Image.open(camvid / "trainannot" / img.name)))[None]
        small, mask = resize(image, Mask(raw))
        again, mask2 = resize(small, Mask(mask))  # what the loader will do to the stored copy
        if not (torch.equal(again, small) and torch.equal(mask2, mask)):
            sys.exit(f"{img.name}: a resize to the same size is not the identity here")
        Image.fromarray(small.permute(1, 2, 0).numpy()).save(cam / "train" / img.name)
        Image.fromarray(mask[0].numpy()).save(cam / "trainannot" / img.name)
    for img in sorted((camvid / "val").glob("*.png")):
        Image.open(img).convert("RGB").save(cam / "val" / f"{img.stem}.jpg", quality=quality)
        shutil.copy2(camvid / "valannot" / img.name, cam / "valannot" / img.name)
    shutil.copy2(camvid / "README.md", cam / "README.md") if (camvid / "README.md").exists() else None
    with open(teachers / TEACHER, "rb") as src, lzma.open(out / f"{TEACHER}.xz", "wb", preset=6) as dst:
        shutil.copyfileobj(src, dst)
    shutil.copy2(teachers / f"{TEACHER}.sha256", out / f"{TEACHER}.sha256")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp",
                    "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                    "--platform", "manylinux2014_x86_64", "--platform", "any",
                    "-d", str(out / "wheels"), *WHEELS], check=True)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"bundle {out}: {total / 2**20:.1f} MiB")


def specs(out: Path, paths: list[Path], suffix: str, sets: list[str], teacher: str | None) -> None:
    """Each study spec with ``suffix`` on its name, out_dir and results_dir, ``sets`` after its
    own overrides and, with ``teacher``, that checkpoint instead of its own."""
    out.mkdir(parents=True, exist_ok=True)
    for p in paths:
        spec = yaml.safe_load(p.read_text())
        spec["name"] += suffix.replace("_", "-")
        spec["out_dir"] += suffix
        spec["results_dir"] += suffix
        spec["set"] = list(spec.get("set", [])) + sets
        if teacher:
            spec["teacher"]["checkpoint"] = teacher
        (out / f"{p.stem}{suffix}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        print(out / f"{p.stem}{suffix}.yaml")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bundle")
    b.add_argument("out", type=Path)
    b.add_argument("--camvid", type=Path, default=REPO.parent / "shared" / "data" / "camvid")
    b.add_argument("--teachers", type=Path, default=REPO.parent / "shared" / "teachers")
    b.add_argument("--size", type=int, nargs=2, default=[96, 128], metavar=("H", "W"))
    b.add_argument("--quality", type=int, default=95)
    s = sub.add_parser("specs")
    s.add_argument("out", type=Path)
    s.add_argument("spec", type=Path, nargs="+")
    s.add_argument("--suffix", default="_h200")
    s.add_argument("--set", dest="sets", action="append", default=[])
    s.add_argument("--teacher", default=None)
    a = ap.parse_args()
    if a.cmd == "bundle":
        bundle(a.out, a.camvid, a.teachers, tuple(a.size), a.quality)
    else:
        specs(a.out, a.spec, a.suffix, a.sets, a.teacher)


if __name__ == "__main__":
    main()
