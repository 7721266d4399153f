"""`segkd report --html`: the page as a person sees it, rendered by headless Chromium (every
section, image and plot present and decoded, no network request), the page of results
committed without checkpoints, and `segkd predict`'s colour legend and several inputs."""
from __future__ import annotations

import shutil
from html.parser import HTMLParser

import pytest
from tiny_report_runs import shared_runs

from segkd.apps.deploy_compare import LatencySetup
from segkd.apps.report.browser import find_browser, render
from segkd.apps.report.tables import report

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


def test_the_page_says_how_each_epoch_was_chosen(tmp_path):
    """Runs that chose their epoch on a held-out share of train, next to runs that chose on val:
    the summary table gets a column saying which."""
    import json

    for method, selected in (("ce", {"metric": "val/mIoU"}),
                             ("kd", {"metric": "select/mIoU", "select_fraction": 0.1, "select_seed": 3})):
        d = tmp_path / method
        d.mkdir()
        (d / "summary.json").write_text(json.dumps({
            "name": method, "seed": 0, "params": 1000, "classes": ["a", "b"], "selected": selected,
            "model": {"arch": "unet", "kwargs": {"encoder": "kd_resnet10"}},
            "splits": {"val": {"mIoU": 0.4, "per_class_iou": [0.4, 0.4]}}}))
    out = tmp_path / "out"
    written = report([tmp_path / "ce", tmp_path / "kd"], out, html=out / "r.html", latency=False)
    page = Page(written["html"].read_text())
    assert "epoch reported" in [" ".join(t.split()) for t in page.text]  # a column of its own
    text = " ".join(" ".join(page.text).split())
    assert "best select/mIoU (a held-out 10% of train, seed 3)" in text
    assert "best val/mIoU (chosen on val itself)" in text
    assert "0.4000 (n=1)" in text and "± 0.0000" not in text


def test_gallery_images_are_the_largest_disagreements_then_random_ones():
    from segkd.apps.report.gallery import pick

    chosen = pick([0.1, 0.5, 0.3, 0.9, 0.2, 0.0, 0.7, 0.4], n=6, n_random=2)
    assert chosen[:4] == [(3, "largest disagreement"), (6, "largest disagreement"),
                          (1, "largest disagreement"), (7, "largest disagreement")]
    assert {why for _, why in chosen[4:]} == {"random"}
    assert len({i for i, _ in chosen}) == 6 and {i for i, _ in chosen[4:]} <= {0, 2, 4, 5}
    assert chosen == pick([0.1, 0.5, 0.3, 0.9, 0.2, 0.0, 0.7, 0.4], n=6, n_random=2)  # seeded
    assert [i for i, _ in pick([0.1, 0.5, 0.3], n=6, n_random=2)] == [1, 2, 0]  # fewer images
