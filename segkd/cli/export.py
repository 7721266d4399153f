"""``segkd export``: a checkpoint to ONNX (parity checked) and / or safetensors.

    segkd export runs/x/best.pt --onnx student.onnx --dynamic-shape --size 512,1024
    segkd export runs/x/best.pt --safetensors student.safetensors
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from segkd.cli.base import checkpoint_arg, out, pair
from segkd.core.errors import SegkdError


def _parity_table(info: dict) -> Table:
    """One row per parity check: input size, batch, max abs error, relative error."""
    parity = info["parity"]
    t = Table(title=f"ONNX parity (onnxruntime vs PyTorch, tolerance {parity['tolerance']:g})")
    for col in ("input", "batch", "max |onnx - torch|", "||onnx - torch|| / ||torch||"):
        t.add_column(col)
    for c in parity["checks"]:
        t.add_row(f"{c['size'][0]}x{c['size'][1]}", str(c["batch"]), f"{c['max_abs_err']:.3g}",
                  f"{c['rel_err']:.3g}")
    return t


def export(checkpoint: Path = typer.Argument(..., help="segkd checkpoint (best.pt) or run dir"),
           onnx: Optional[Path] = typer.Option(None, "--onnx", help="write OUT.onnx"),
           opset: int = typer.Option(17, "--opset", help="ONNX opset"),
           dynamic_shape: bool = typer.Option(False, "--dynamic-shape",
                                              help="dynamic batch, height and width"),
           size: Optional[str] = typer.Option(None, "--size",
                                              help="H,W export size (default: data.size or 512,512)"),
           safetensors: Optional[Path] = typer.Option(None, "--safetensors",
                                                      help="write OUT.safetensors"),
           tolerance: float = typer.Option(1e-4, "--tolerance",
                                           help="max relative error onnxruntime vs PyTorch")) -> None:
    """Export a checkpoint for deployment: ONNX (checked against PyTorch) and/or safetensors."""
    from segkd.apps.export import check_export_target, export_onnx, export_safetensors

    if not onnx and not safetensors:
        raise SegkdError("nothing to export: give --onnx OUT.onnx and/or --safetensors OUT.safetensors")
    checkpoint_arg(checkpoint, "export")
    for path, option in ((onnx, "--onnx"), (safetensors, "--safetensors")):
        if path:  # both outputs before either export: nothing is written when one cannot be
            check_export_target(path, option)
    size_hw = pair(size)
    if safetensors:
        info = export_safetensors(str(checkpoint), str(safetensors))
        out.print(f"wrote {info['path']} ({info['tensors']} tensors) and {info['sidecar']}")
    if onnx:
        info = export_onnx(str(checkpoint), str(onnx), opset=opset, dynamic_shape=dynamic_shape,
                           size=size_hw, tolerance=tolerance)
        out.print(_parity_table(info))
        out.print(f"wrote {info['path']} (opset {opset}, {info['exporter']} exporter, input "
                  f"{'dynamic' if dynamic_shape else 'x'.join(map(str, info['input_size']))}) "
                  f"and {info['sidecar']}")


def register(app: typer.Typer) -> None:
    """Add ``segkd export`` to the command line."""
    app.command("export")(export)
