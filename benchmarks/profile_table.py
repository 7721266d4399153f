"""Where a KD step's CPU time goes, by category: segkd's KD step next to the bare PyTorch one.

    python benchmarks/profile_table.py [--steps 3] [--json out.json]
    PYTHONPATH=../other-checkout python benchmarks/profile_table.py   # profile another checkout's code

``torch.profiler`` (shapes recorded) over ``--steps`` steps of each variant of bench_step.py's
UNet R34 -> R18 pair (bf16, batch 8, 192x256, channels_last, 1 thread) on real CamVid batches;
self CPU milliseconds per step summed into: convolutions (forward + backward), batch norm,
copies of logit-sized tensors, copies of convolution weights (autocast casts), log_softmax
(+ backward), the optimiser, and all ops. One profiled run varies by a few percent: judge a
change by bench_step.py's interleaved timing, use this to see where the time is.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_step as bs  # noqa: E402  (benchmarks/ is not a package)

ADAM_FOREACH = {"aten::_foreach_add_", "aten::_foreach_lerp_", "aten::_foreach_mul_",
                "aten::_foreach_addcmul_", "aten::_foreach_sqrt", "aten::_foreach_div_",
                "aten::_foreach_addcdiv_", "aten::sqrt", "aten::addcdiv_", "aten::lerp_",
                "aten::addcmul_"}


def categorise(key: str, shape: list, logits_shape: list[int]) -> str | None:
    """The category of one profiler row (op name, first input's shape), or None."""
    if key in ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::convolution"):
        return "conv" if key != "aten::convolution" else None
    if key.startswith("aten::native_batch_norm"):
        return "batch_norm"
    if key == "aten::copy_" and shape == logits_shape:
        return "copy_logits"
    if key == "aten::copy_" and len(shape) == 4 and shape[2] == shape[3] and shape[2] in (1, 3, 7):
        return "copy_weights"
    if "log_softmax" in key:
        return "log_softmax"
    if "adam" in key.lower() or key in ADAM_FOREACH:
        return "optimizer"
    return None


def profile_variant(run, batches: list[dict], steps: int, logits_shape: list[int]) -> dict:
    from torch.profiler import ProfilerActivity, profile

    run(batches[:1])  # warm
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        run(batches[:steps])
    out = {"conv": 0.0, "batch_norm": 0.0, "copy_logits": 0.0, "copy_logits_calls": 0.0,
           "copy_weights": 0.0, "log_softmax": 0.0, "optimizer": 0.0, "all_ops": 0.0}
    for e in prof.key_averages(group_by_input_shape=True):
        ms = e.self_cpu_time_total / 1e3 / steps
        out["all_ops"] += ms
        cat = categorise(e.key, list(e.input_shapes[0]) if e.input_shapes else [], logits_shape)
        if cat:
            out[cat] += ms
            if cat == "copy_logits":
                out["copy_logits_calls"] += e.count / steps
    return {k: round(v, 1) for k, v in out.items()}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--data-root", default=str(bs.CAMVID))
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    import segkd

    torch.set_num_threads(1)
    size, batch, device = (192, 256), 8, torch.device("cpu")
    teacher, student, _ = bs.build_pair("unet", False)
    batches, ignore, source = bs.load_batches(size, batch, a.steps, device, True, Path(a.data_root))
    su = bs.Setup(teacher, student, device, "bf16", True, False, ignore, "unet")
    variants, _ = bs.build_variants(su, ["segkd_kd", "bare_kd_tuned"], size, batches)
    logits_shape = [batch, bs.PAIRS["unet"][2], *size]
    result = {"segkd_code": str(Path(segkd.__file__).parent), "data": source,
              **{name: profile_variant(run, batches, a.steps, logits_shape)
                 for name, run in variants.items()}}
    print(json.dumps(result, indent=1))
    bs.write_json(a.json, result)
    return result


if __name__ == "__main__":
    main()
