"""Helpers of gpu_bundle.sh: the pinned wheel list a bare GPU machine needs, and a small JPEG copy
of CamVid.

    python benchmarks/gpu_bundle.py requirements            # pinned list on stdout
    python benchmarks/gpu_bundle.py camvid SRC DST --images 96 --val 16

``requirements``: every distribution the benchmark suite imports (segkd's models, engine and
data path, lightning's Fabric, torchdistill), found by importing them here and mapping the loaded
modules to their distributions, plus their declared requirements for CPython 3.12 on Linux
x86_64, at the versions installed here (the ones the suite was tested with). PyTorch itself,
triton and the CUDA libraries are left out: the GPU machine has them.

``camvid``: the first ``--images`` training and ``--val`` validation images of a SegNet-layout
CamVid as JPEG (quality 90), with their label PNGs copied unchanged (labels must stay lossless).
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# what the GPU machine brings (PyTorch and what its wheel installs), and packaging tools
PROVIDED = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*|setuptools|pip|wheel|segkd)$")
# declared or probed, never needed by the suite: torchmetrics imports matplotlib and scipy only
# when they are installed; torchdistill declares scipy and cython but its distillation box
# imports neither; huggingface-hub runs without hf-xet (downloads only). 65 MB of wheels.
NOT_NEEDED = {"matplotlib", "scipy", "cython", "hf-xet"}
TARGET = {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
          "implementation_name": "cpython", "platform_python_implementation": "CPython",
          "extra": ""}


def norm(name: str) -> str:
    """A distribution name in its normalised form (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_distributions() -> set[str]:
    """Distributions of every module loaded after importing what the suite's runs import."""
    import importlib.metadata as md

    sys.path.insert(0, str(BENCH))
    import bench_data  # noqa: F401
    import bench_step  # noqa: F401
    import suite  # noqa: F401

    import segkd.engine.loop  # noqa: F401
    import segkd.engine.train  # noqa: F401
    from segkd.config.schema import TrainerCfg
    from segkd.engine.fabric import make_fabric
    from segkd.models import create_model

    make_fabric(TrainerCfg(accelerator="cpu"))
    create_model("deeplabv3plus", num_classes=21, encoder="resnet18")
    import torchdistill.core.distillation  # noqa: F401  (the td_kd rows are required on the GPU)

    dists = md.packages_distributions()
    return {norm(d) for m in list(sys.modules) for d in dists.get(m.split(".")[0], [])}


def closure(names: set[str], skip: set[str] | None = None) -> dict[str, str]:
    """``names`` and everything they require on the target (CPython 3.12, Linux x86_64), as
    installed here: normalised name -> version. PROVIDED and ``skip`` are left out (and not
    followed)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    out: dict[str, str] = {}
    todo = sorted(names)
    while todo:
        name = norm(todo.pop())
        if name in out or PROVIDED.match(name) or name in (skip or set()):
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # an optional requirement not installed here: not needed by the suite
        out[name] = dist.version
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate(TARGET):
                todo.append(req.name)
    return dict(sorted(out.items()))


def _requires(dist: str) -> set[str]:
    """The names ``dist`` requires on the target (no extras)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    reqs = [Requirement(r) for r in md.distribution(dist).requires or []]
    return {r.name for r in reqs if r.marker is None or r.marker.evaluate(TARGET)}


def jpeg_camvid(src: Path, dst: Path, images: int, val: int) -> int:
    """Copy the first ``images`` train and ``val`` val images of ``src`` into ``dst`` as JPEG,
    labels unchanged; returns how many images were written. Refuses a non-CamVid ``src``."""
    from PIL import Image

    n = 0
    for split, count in (("train", images), ("val", val)):
        img_dir, ann_dir = src / split, src / f"{split}annot"
        if not img_dir.is_dir() or not ann_dir.is_dir():
            raise SystemExit(f"error: {src} is not a SegNet-layout CamVid (no {split}/ and "
                             f"{split}annot/)")
        (dst / split).mkdir(parents=True, exist_ok=True)
        (dst / f"{split}annot").mkdir(parents=True, exist_ok=True)
        for img in sorted(img_dir.glob("*.png"))[:count]:
            label = ann_dir / img.name
            if not label.is_file():
                continue
            Image.open(img).convert("RGB").save(dst / split / f"{img.stem}.jpg", quality=90)
            shutil.copyfile(label, dst / f"{split}annot" / label.name)
            n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("requirements", help="the pinned wheel list, on stdout")
    cv = sub.add_parser("camvid", help="a small JPEG copy of CamVid")
    cv.add_argument("src", type=Path)
    cv.add_argument("dst", type=Path)
    cv.add_argument("--images", type=int, default=96)
    cv.add_argument("--val", type=int, default=16)
    a = p.parse_args(argv)
    if a.cmd == "requirements":
        torch_deps = set(closure(_requires("torch")))  # installed with torch
        # roots: what segkd and torchdistill declare and the suite imports
        roots = {norm(n) for n in _requires("segkd") | {"torchdistill"}} & imported_distributions()
        for name, version in closure(roots, NOT_NEEDED | torch_deps).items():
            print(f"{name}=={version}")
        return 0
    n = jpeg_camvid(a.src, a.dst, a.images, a.val)
    print(f"wrote {n} images to {a.dst}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
