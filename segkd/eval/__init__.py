"""Evaluation: confusion-matrix metrics and inference modes (whole, sliding, flip, scales)."""
from segkd.eval.inference import InferenceSpec, predict_logits
from segkd.eval.metrics import ConfusionMatrix, PerImageIoU, metrics_from_confusion

__all__ = ["ConfusionMatrix", "InferenceSpec", "PerImageIoU", "metrics_from_confusion", "predict_logits"]
