"""Evaluate a saved model on a dataset split (``segkd eval``)."""
from __future__ import annotations

from typing import Optional

import torch

from segkd.config.schema import DataCfg
from segkd.core.errors import DataError, SegkdError
from segkd.data import dataset_from_config
from segkd.engine.data import check_data, make_loader
from segkd.eval.evaluate import evaluate, inference_forward
from segkd.eval.inference import InferenceSpec
from segkd.models.spec import model_from_checkpoint


def _data_cfg(ckpt: dict, data_root: Optional[str], dataset: Optional[str],
              size: Optional[tuple[int, int]]) -> DataCfg:
    saved = dict((ckpt.get("config") or {}).get("data") or {})
    keep = {k: saved[k] for k in ("name", "root", "size", "options", "mean", "std", "check",
                                  "check_files") if k in saved}
    cfg = DataCfg(**keep)
    if dataset:
        cfg.name = dataset
        if dataset != saved.get("name"):
            cfg.options = {}
    if data_root:
        cfg.root = data_root
    if size:
        cfg.size = size
    if cfg.mean is None and ckpt.get("meta", {}).get("mean"):
        cfg.mean, cfg.std = tuple(ckpt["meta"]["mean"]), tuple(ckpt["meta"]["std"])
    if cfg.name != "synthetic" and not cfg.root:
        raise SegkdError("no data root: pass --data-root DIR")
    return cfg


def checkpoint_split(ckpt: dict, split: str, data_root: Optional[str] = None,
                     dataset: Optional[str] = None, size: Optional[tuple[int, int]] = None):
    """The ``split`` of the data a checkpoint was trained on (dataset, root, size, normalisation
    from its config unless overridden), through the pre-flight data check, for evaluation."""
    cfg = _data_cfg(ckpt, data_root, dataset, size)
    ds = dataset_from_config(cfg, split)
    check_data(cfg, [(split, ds)], relax="")
    return cfg, ds


def evaluate_checkpoint(path: str, data_root: Optional[str] = None, dataset: Optional[str] = None,
                        split: str = "val", size: Optional[tuple[int, int]] = None,
                        sliding: Optional[tuple[int, int]] = None, overlap: float = 1 / 3,
                        flip: bool = False, scales: list[float] = (1.0,), batch_size: int = 4,
                        device: Optional[str] = None) -> dict:
    """mIoU (dataset-level), per-class IoU, accuracies and kdsemseg per-image IoU of a model."""
    model, meta, ckpt = model_from_checkpoint(path)
    cfg, ds = checkpoint_split(ckpt, split, data_root, dataset, size)
    if meta.get("num_classes") and ds.num_classes != meta["num_classes"]:
        raise SegkdError(f"the model predicts {meta['num_classes']} classes, dataset "
                         f"'{cfg.name}' has {ds.num_classes}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(dev).eval()
    spec = InferenceSpec(sliding_crop=sliding, overlap=overlap, flip=flip, scales=list(scales))
    loader = make_loader(ds, batch_size, False, 0, 0)
    m = evaluate(inference_forward(model, spec), loader, ds.num_classes, ds.ignore_index, dev)
    if all(v is None for v in m["per_class_iou"]):  # an empty confusion matrix: nothing scored
        raise DataError(f"split '{split}' of dataset '{cfg.name}' has no labeled pixels in its "
                        f"{len(ds)} image(s) (every mask is the ignore index {ds.ignore_index} "
                        "after the label mapping): mIoU is undefined; evaluate a labeled split "
                        "(a benchmark's test labels are withheld: use segkd predict --format)")
    m.update(classes=ds.classes, split=split, dataset=cfg.name, checkpoint=str(path), images=len(ds))
    return m
