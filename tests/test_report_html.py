"""`segkd report --html`: the page as a person sees it, rendered by headless Chromium (every
section, image and plot present and decoded, no network request), the page of results
committed without checkpoints, and `segkd predict`'s colour legend and several inputs."""
from __future__ import annotations

import shutil
from html.parser import HTMLParser

import pytest
from tiny_report_runs import shared_runs

from segkd.compare import LatencySetup
from segkd.report import report
from segkd.report_browser import find_browser, render

SECTIONS = ("summary", "per-class", "gallery", "curves", "scatter", "configs")
FAST = LatencySetup(threads=1, warmup=1, iters=2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return shared_runs(tmp_path_factory)


class Page(HTMLParser):
    """Every element's tag and attributes, in order, with the section each one is in."""

    def __init__(self, html: str):
        super().__init__()
        self.elements: list[tuple[str, dict, str]] = []
        self.section = ""
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.section = attrs.get("id", "")
        self.elements.append((tag, attrs, self.section))

    def handle_data(self, data):
        self.text.append(data)

    def tags(self, tag: str, section: str | None = None) -> list[dict]:
        return [a for t, a, s in self.elements if t == tag and (section is None or s == section)]

    def external_links(self) -> list[str]:
        return [v for _, a, _ in self.elements for k, v in a.items()
                if k in ("src", "href", "srcset", "action", "poster") and v and "//" in v.split(",")[0]]


def test_the_page_renders_in_a_browser_complete_and_offline(runs, tmp_path):
    browser = find_browser()
    if browser is None:
        pytest.skip("no headless Chromium on this machine (apt-get install -y chromium; .ci/run "
                    "installs it where it can)")
    out = tmp_path / "report"
    written = report(list(runs.values()), out, html=out / "report.html", screenshot=True,
                     setup=FAST, size=(32, 32), gallery=4)
    shot = written["screenshot"]
    assert shot == out / "report.png" and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    seen = render(written["html"])
    assert seen.network() == [], f"the page asked the network for {seen.network()}"
    page = Page(seen.dom)
    assert {a.get("id") for a in page.tags("section")} == set(SECTIONS)
    assert page.external_links() == []
    assert all(w > 0 for w, _ in seen.images), f"images the browser could not decode: {seen.images}"
    assert all(a["src"].startswith("data:image/png;base64,") for a in page.tags("img"))
    # summary: teacher, baseline and the student group (two seeds) in one table
    assert [a.get("class") for a in page.tags("tr", "summary")][1:] == ["teacher", "baseline", "student"]
    # one per-class figure (one student), teacher + student + baseline bars
    assert len(page.tags("img", "per-class")) == 1
    # gallery: 4 images x (image, ground truth, teacher, student, baseline), a legend of 4 classes
    assert len(page.tags("img", "gallery")) == 4 * 5
    assert len([a for a in page.tags("span", "gallery") if a.get("class") == "swatch"]) == 4
    assert len(page.tags("img", "curves")) == 3  # teacher, baseline, student (its seeds overlaid)
    assert len(page.tags("img", "scatter")) == 2  # accuracy vs parameters, vs latency
    assert len(page.tags("details", "configs")) == 3
    text = " ".join(" ".join(page.text).split())
    assert "segkd distill" in text and "segkd train" in text  # the commands that reproduce them
    assert "Latency: PyTorch, cpu, fp32, batch 1, 1 thread(s), 32x32" in text
    assert "best val/mIoU (chosen on val itself)" in text


def test_results_without_checkpoints_still_make_a_page(runs, tmp_path):
    """The committed results (docs/results) hold summary.json, metrics.jsonl and config.yaml
    only: no gallery (said so), latency from the architecture in summary.json (said so)."""
    small = tmp_path / "results"
    for name, d in runs.items():
        (small / name).mkdir(parents=True)
        for f in ("summary.json", "metrics.jsonl", "config.yaml"):
            shutil.copy(d / f, small / name / f)
    out = tmp_path / "out"
    written = report([small], out, html=out / "r.html", setup=FAST, size=(32, 32))
    page = Page(written["html"].read_text())
    assert page.tags("img", "gallery") == [] and len(page.tags("img", "scatter")) == 2
    text = " ".join(" ".join(page.text).split())
    assert "prediction gallery skipped: it needs the checkpoints" in text
    assert "T, B, S1: no checkpoint in the run directory; GFLOPs and latency measured on the " \
           "architecture rebuilt from summary.json" in text
    assert page.external_links() == []


def test_predict_takes_several_inputs_and_writes_a_colour_legend(segkd, runs, tmp_path):
    import numpy as np
    from PIL import Image

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for path in (a / "one.png", a / "two.png", b / "three.png"):
        Image.fromarray((np.random.rand(30, 40, 3) * 255).astype("uint8")).save(path)
    ckpt = str(runs["baseline"] / "best.pt")
    proc = segkd("predict", ckpt, str(a / "one.png"), str(b), "--out", str(tmp_path / "pred"))
    assert proc.returncode == 0, proc.stderr
    made = sorted(p.name for p in (tmp_path / "pred").iterdir())
    assert made == ["legend.png", "one_mask.png", "one_overlay.png", "three_mask.png",
                    "three_overlay.png"]
    legend = Image.open(tmp_path / "pred" / "legend.png")
    assert legend.width > 100 and legend.height > 10
    (b / "one.png").write_bytes((a / "one.png").read_bytes())
    proc = segkd("predict", ckpt, str(a), str(b), "--out", str(tmp_path / "pred2"))
    assert proc.returncode == 2 and "would write the same output names" in proc.stderr
