"""Write the CamVid evidence section of docs/benchmarks.md (between its evidence markers) from the
tables benchmarks/camvid_evidence.sh wrote under docs/results/: run it after that script."""
from __future__ import annotations

import json
import re
from pathlib import Path

from evidence_plot import STUDIES  # noqa: E402  (same folder: one list of the evidence studies)

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- evidence:start -->", "<!-- evidence:end -->"


# How each study's table is reproduced, where it is not `segkd study configs/studies/<study>.yaml`.
COMMANDS = {
    "camvid_search": "`segkd study configs/studies/camvid_search.yaml` (seed 0), then "
                     "`segkd study configs/studies/camvid_best.yaml` (seeds 1-2)",
    "camvid_kdsemseg": "`segkd study configs/studies/camvid_kdsemseg_small.yaml`",
    **{f"{name}_h200": f"`bash benchmarks/gpu_studies.sh` on one H200 (the `{name}.yaml` runs, fp32 with PyTorch's "
                       "default TF32 convolutions, which `trainer.tf32: false` now turns off; "
                       "training inputs identical to the CPU protocol's, val images JPEG at full "
                       "size: the teacher scores 0.5429 on them vs 0.5430)"
       for name in ("camvid_xfamily_mbv2_3x", "camvid_pnp_front_long", "camvid_kdsemseg_quarter")},
}


# The studies run with honest selection (configs/studies/<study>.yaml), in the order shown.
HONEST = (
    ("camvid_select", "Headline arms (`camvid_select.yaml`)"),
    ("camvid_xfamily_mbv2", "A student of another family: UNet-MobileNetV2, 8 epochs (`camvid_xfamily_mbv2.yaml`)"),
    ("camvid_xfamily_r10", "A student that cannot copy the teacher: UNet-R10 from random initialisation, "
                           "8 epochs (`camvid_xfamily_r10.yaml`)"),
    ("camvid_xfamily_mbv2_3x", "UNet-MobileNetV2 at 3x the budget, 24 epochs (`camvid_xfamily_mbv2_3x.yaml`)"),
    ("camvid_pnp_front_long", "Plug and Play, layer1-3 + decoder replaced, 60 epochs "
                              "(`camvid_pnp_front_long.yaml`)"),
    ("camvid_kdsemseg_quarter", "kdsemseg on 1/4 of the data, decoder-first stagewise "
                                "(`camvid_kdsemseg_quarter.yaml`)"),
    ("camvid_pnp_where", "Where Plug and Play loses: only the encoder's or only the decoder's "
                         "convolutions replaced, images only, 20 epochs (`camvid_pnp_where.yaml`)"),
    ("camvid_xfamily_mbv2_3x_h200", "UNet-MobileNetV2 at 3x the budget, on an H200"),
    ("camvid_pnp_front_long_h200", "Plug and Play, layer1-3 + decoder replaced, 60 epochs, on an H200"),
    ("camvid_kdsemseg_quarter_h200", "kdsemseg on 1/4 of the data, on an H200"),
)


def _quarter_vs_full(study: str) -> str:
    """kdsemseg's claim: stagewise on 1/4 of the data against scratch on all of it (Welch)."""
    from segkd.apps.report.stats import welch_interval

    def vals(method: str, fraction: str) -> list[float]:
        return [json.loads(p.read_text())["splits"]["val"]["mIoU"] for p in sorted(
            (ROOT / "docs" / "results" / study / method).glob(f"*/f{fraction}/s*/summary.json"))]

    a, b = vals("stagewise_dec8", "0.25"), vals("scratch", "1.0")
    w = welch_interval(a, b) if len(a) > 1 and len(b) > 1 else None
    if w is None:
        return ""
    d, lo, hi = w
    verdict = "better" if lo > 0 else "worse" if hi < 0 else "no difference"
    return (f"kdsemseg's claim, stagewise on 1/4 of the data vs scratch on all of it: "
            f"{sum(a) / len(a):.4f} ({len(a)} seeds) vs {sum(b) / len(b):.4f} ({len(b)} seeds), "
            f"Δ {d:+.4f} [{lo:+.4f}, {hi:+.4f}]: {verdict}.\n")


def _summaries(study: str) -> list[dict]:
    return [json.loads(p.read_text())
            for p in sorted((ROOT / "docs" / "results" / study).glob("*/*/*/*/summary.json"))]


def _provenance(study: str) -> str:
    """Command, date, machine and epoch selection of a study's runs, read from their summaries."""
    from segkd.apps.report.runs import selection_label

    sums = _summaries(study)
    if not sums:
        return ""
    days = sorted({s["finished"][:10] for s in sums if s.get("finished")})
    when = days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"
    where = ", ".join(sorted({str(s.get("device")) for s in sums}))
    torch = ", ".join(sorted({str(s.get("torch", "?")).split("+")[0] for s in sums}))
    chosen = "; ".join(sorted({selection_label(s) for s in sums}))
    cmd = COMMANDS.get(study, f"`segkd study configs/studies/{study}.yaml`")
    return (f"Command: {cmd}. Runs finished {when} ({where}, torch {torch}). "
            f"Epoch reported: {chosen}; the table reports val mIoU at that epoch.\n")


def _table(study: str) -> str:
    path = ROOT / "docs" / "results" / study / "comparison.md"
    if not path.is_file():  # its baseline has no finished run yet: the per-method tables
        path = ROOT / "docs" / "results" / study / "results.md"
    if not path.is_file():
        return "_(no finished run yet)_\n"
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("### "):  # results.md: one table per method, under its name
            rows += ["", f"{line[4:]}:", ""]
        elif line.startswith("|"):
            rows.append(line)
    return "\n".join(rows).lstrip("\n") + "\n"


def _count(study: str) -> int:
    return len(list((ROOT / "docs" / "results" / study).glob("*/*/*/*/summary.json")))


def _configs(study: str) -> int:
    return len({p.parts[-5] for p in (ROOT / "docs" / "results" / study).glob("*/*/*/*/summary.json")})


def _diagnosis() -> str:
    """The `segkd stages` tables of docs/results/camvid_kdsemseg/diagnosis/*.json, side by side
    per seed: relative val MSE and the teacher's val mIoU with the student's stages put in."""
    files = sorted((ROOT / "docs" / "results" / "camvid_kdsemseg" / "diagnosis").glob("*.json"))
    if not files:
        return "_(no diagnosis yet: `segkd stages RUN/best.pt --teacher T --json F`)_\n"
    runs = [(f.stem, json.loads(f.read_text())) for f in files]
    head = "| stage | " + " | ".join(f"{n}: rel. MSE | alone | stages <= this" for n, _ in runs) + " |"
    lines = [head, "|" + " --- |" * (1 + 3 * len(runs))]
    for i, st in enumerate(runs[0][1]["stages"]):
        cells = []
        for _, res in runs:
            r = res["stages"][i]
            rel = "—" if r["rel_mse"] is None else f"{r['rel_mse']:.3f}"
            cells += [rel, f"{r['alone_miou']:.4f}", f"{r['prefix_miou']:.4f}"]
        lines.append(f"| {st['stage']} | " + " | ".join(cells) + " |")
    ends = "; ".join(f"{n}: teacher {res['teacher_miou']:.4f}, student {res['student_miou']:.4f}"
                     for n, res in runs)
    return "\n".join(lines) + f"\n\nval mIoU ({ends}).\n"




def _per_class() -> str:
    """Every full-data arm's per-class val IoU (mean over seeds, from each study's per_class.md)
    under the teacher's own (docs/results/teacher_val.json, `segkd eval --json`)."""
    header, rows = None, []
    for study in STUDIES:
        path = ROOT / "docs" / "results" / study / "per_class.md"
        if not path.is_file():
            continue
        lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
        header = header or lines[:2]
        for line in lines[2:]:
            cells = [c.strip() for c in line.strip("|").split("|")]
            if cells[2] in ("1", "1.0") and not any(cells[1] == r[1] and cells[0] == r[0] for r in rows):
                rows.append(cells)
    if header is None:
        return "_(no finished run yet)_\n"
    teacher = ROOT / "docs" / "results" / "teacher_val.json"
    out = list(header)
    if teacher.is_file():
        t = json.loads(teacher.read_text())
        out.append("| teacher UNet-R34 | — | 1 | — | " + " | ".join(
            "—" if v is None else f"{v:.4f}" for v in t["per_class_iou"]) + " |")
    out += ["| " + " | ".join(r) + " |" for r in sorted(rows, key=lambda r: r[1])]
    return "\n".join(out) + "\n"


def section(intro: str) -> str:
    parts = [START, intro]
    for study, title in (("camvid_methods", "Methods (`configs/studies/camvid_methods.yaml`)"),
                         ("camvid_search", "Recipe search (`camvid_search.yaml`, then `camvid_best.yaml` for seeds 1-2)"),
                         ("camvid_kdsemseg", "kdsemseg arms (`camvid_kdsemseg_small.yaml`)"),
                         ("camvid_kdsemseg_followup", "Stagewise follow-up (`camvid_kdsemseg_followup.yaml`, "
                          "vs the kdsemseg scratch arm)"),
                         ("camvid_pnp", "Plug and Play on CamVid, layer3/layer4 replaced (`camvid_pnp.yaml`)"),
                         ("camvid_pnp_front", "Plug and Play on CamVid, layer1-3 + decoder replaced "
                          "(`camvid_pnp_front.yaml`)")):
        parts.append(f"#### {title}: {_count(study)} finished run(s), {_configs(study)} configuration(s)\n")
        parts.append(_provenance(study))
        parts.append(_table(study))
        if study == "camvid_kdsemseg":
            parts.append("#### Where stagewise loses to its teacher (`segkd stages`, full data)\n")
            parts.append("Command, per stagewise run: `segkd stages runs/<study>/<arm>/kd_resnet18/f1.0/s<seed>/"
                         "best.pt --teacher ../shared/teachers/camvid-unet-r34-128x96.pt --json "
                         "docs/results/camvid_kdsemseg/diagnosis/<arm>_f1.0_s<seed>.json` (val split, "
                         "the run's size). rel. MSE: the stage's val feature MSE over the teacher "
                         "feature's variance; alone: the teacher's val mIoU with that stage's student "
                         "modules put in; stages <= this: with every stage up to it.\n")
            parts.append(_diagnosis())
    parts.append("### Honest selection: the epoch chosen on a held-out 10% of train, val reported\n")
    parts.append("These studies train on the other 90% of train (331 images) and choose each run's "
                 "epoch on the held-out 10% (`data.select_fraction: 0.1`, `select.metric: "
                 "select/mIoU`), so val is reported unselected. Studies still running show the "
                 "seeds finished so far.\n")
    for study, title in HONEST:
        if not _count(study):
            continue
        parts.append(f"#### {title}: {_count(study)} finished run(s), {_configs(study)} configuration(s)\n")
        parts.append(_provenance(study))
        parts.append(_table(study))
        if study.startswith("camvid_kdsemseg_quarter"):
            parts.append(_quarter_vs_full(study))
    compress = ROOT / "docs" / "results" / "compress_camvid" / "results.md"
    if compress.is_file():
        parts.append("#### `segkd compress` (`bash benchmarks/compress_camvid.sh TARGET SEED`, "
                     "tabulated by `python benchmarks/compress_table.py`)\n")
        parts.append("\n".join(line for line in compress.read_text().splitlines()
                               if line.startswith("|")) + "\n")
        parts.append(next((line for line in compress.read_text().splitlines()
                           if line.startswith("Teacher val")), "") + "\n")
    parts.append("#### Per-class val IoU, every full-data arm (mean over its seeds)\n")
    parts.append(_per_class())
    parts.append(END)
    return "\n".join(parts)


def main() -> None:
    text = DOC.read_text()
    intro = (ROOT / "benchmarks" / "evidence_intro.md").read_text()
    new = section(intro)
    if START in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: new, text, flags=re.S)
    else:
        anchor = "## Distillation methods on CamVid"
        text = text.replace(anchor, new + "\n\n" + anchor, 1)
    DOC.write_text(text)
    print(f"wrote the evidence section of {DOC}")


if __name__ == "__main__":
    main()
