"""The suite's tables, from the sub-commands' JSON: every step row, the headline comparisons with
their bootstrap intervals, every comparison's verdict, and the data-pipeline verdict; printed with
rich and written as Markdown (suite.md)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import bench_step as bs
from bench_stats import NO_DIFFERENCE, fmt_ratio
from bench_variants import CACHED

if TYPE_CHECKING:
    import rich.table

STEP, DATA = "bench_step.py", "bench_data.py"
FEATURE_VARIANTS = ("segkd_ofd", "segkd_cwd")
# ============================================================================ tables
@dataclass
class Table:
    """A titled table of strings, rendered both by rich (console) and as Markdown (docs)."""

    title: str
    headers: list[str]
    rows: list[list[str]]

    def rich(self) -> rich.table.Table:
        """A rich table, cells never wrapped (print_tables widens the console instead)."""
        from rich.markup import escape
        from rich.table import Table as RichTable

        tab = RichTable(title=escape(self.title))
        for i, h in enumerate(self.headers):
            tab.add_column(h, justify="left" if i == 0 else "right", no_wrap=True)
        for r in self.rows:
            tab.add_row(*(escape(c) for c in r))
        return tab

    def markdown(self) -> str:
        """A bold title line, then a pipe table."""
        lines = [f"**{self.title}**", "", "| " + " | ".join(self.headers) + " |",
                 "|" + "---|" * len(self.headers)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)


def _f(v: float | None, fmt: str = ".3f") -> str:
    return "-" if v is None else format(v, fmt)


def _prec(p: str) -> str:
    return "fp32" if p == "32" else p


def _ctx(r: dict) -> list[str]:
    """pair, device, precision, batch, resolution, channels_last, compile of a step row."""
    return [r["pair"], r["device"], _prec(r["precision"]), str(r["batch"]), r["resolution"],
            "on" if r["channels_last"] else "off", "on" if r["compile"] else "off"]


CTX = ["pair", "device", "precision", "batch", "HxW", "channels_last", "compile"]


def step_table(records: list[dict]) -> Table:
    """Every variant row of every bench_step run."""
    rows = []
    for rec in records:
        floor = rec["result"]["ratios"].get("floor_s (median)")
        for r in rec["result"]["rows"]:
            rows.append([*_ctx(r), r["variant"], _f(r["median_s"]), r["clock"],
                         _f(r["images_per_s"], ".2f"), _f(r["peak_mib"], ".0f"),
                         _f(r["median_s"] / floor if floor else None, ".2f")])
    return Table("training step: median s/step of rotated rounds (img/s on the same clock; "
                 "peak MiB above the step's start)",
                 [*CTX, "variant", "s/step", "clock", "img/s", "peak MiB", "x floor"], rows)


def _cmp(comps: dict, key: str) -> str:
    """``"1.012 [0.998, 1.027]"`` of one comparison, with "=" when its interval contains 1."""
    q = comps.get(key)
    if not q:
        return "-"
    return fmt_ratio(q) + (" =" if q["verdict"] == NO_DIFFERENCE else "")


HEADLINE = [("segkd_kd/floor", "segkd_kd/floor"), ("feat/floor", None),
            ("bare_kd_tuned/floor", "bare_kd_tuned/floor"), ("td_kd_tuned/floor", "td_kd_tuned/floor"),
            ("segkd_kd/bare_kd_tuned", "segkd_kd/bare_kd_tuned"),
            ("segkd_kd/td_kd_tuned", "segkd_kd/td_kd_tuned"),
            ("segkd_kd/bare_kd (defaults)", "segkd_kd/bare_kd"),
            ("segkd_kd/td_kd (defaults)", "segkd_kd/td_kd"),
            ("segkd_ce/student", "segkd_ce/student"),
            ("cached/student_kd", f"{CACHED}/floor_cached")]


def headline_table(records: list[dict]) -> Table:
    """The headline comparisons of each bench_step run: median of per-round ratios [bootstrap
    95% interval]; "=" marks an interval containing 1 (no measurable difference)."""
    rows = []
    for rec in records:
        res = rec["result"]
        comps, q, rows0 = res.get("comparisons", {}), res["ratios"], res["rows"]
        feat = next((v for v in FEATURE_VARIANTS if f"{v}/floor" in comps), None)
        cells = []
        for _, key in HEADLINE:
            if key is None:
                cells.append(_cmp(comps, f"{feat}/floor") + f" ({feat.split('_')[1]})"
                             if feat else "-")
            elif key.startswith(CACHED) and CACHED in res.get("skipped", {}):
                cells.append("n/a")
            else:
                cells.append(_cmp(comps, key))
        rows.append([*_ctx(rows0[0]), str(rows0[0].get("rounds", "-")),
                     _f(q.get("floor_s (median)")), *cells])
    return Table("headline: median of per-round ratios [bootstrap 95% interval]; '=': no "
                 "measurable difference; floor = student step + loss + teacher forward",
                 [*CTX, "rounds", "floor s", *(h for h, _ in HEADLINE)], rows)


def verdict_table(records: list[dict]) -> Table:
    """Every paired comparison of every bench_step run with its verdict."""
    rows = []
    for rec in records:
        r0 = rec["result"]["rows"][0]
        for key, q in rec["result"].get("comparisons", {}).items():
            rows.append([*_ctx(r0), key, fmt_ratio(q), q["verdict"]])
    return Table("every comparison (a/b: median of per-round ratios [bootstrap 95% interval])",
                 [*CTX, "a/b", "ratio [95% CI]", "verdict"], rows)


def data_table(records: list[dict]) -> Table:
    """Per bench_data run: loader images/s at the default worker count (PNG decode each time)
    against what the student step and segkd's KD step consume, and the verdict."""
    rows = []
    for rec in records:
        res = rec["result"]
        rate = {r["what"]: r["images_per_s"] for r in res["rows"]}
        r0 = res["rows"][0]
        w = r0["default_workers"]
        load = rate.get(f"loader w={w} cache=off")
        need = {s: rate.get(f"step {s}") for s in ("student", "segkd_kd")}
        ratio = {s: load / n if load and n else None for s, n in need.items()}
        worst = min((v for v in ratio.values() if v is not None), default=None)
        verdict = "-" if worst is None else ("keeps up" if worst >= 1 else "data-bound")
        rows.append([r0["pair"], r0["device"], _prec(r0["precision"]), str(r0["batch"]),
                     r0["resolution"], str(w), _f(load, ".1f"),
                     _f(rate.get("loader w=0 cache=off"), ".1f"),
                     _f(rate.get("loader w=0 cache=on"), ".1f"), _f(need["student"], ".1f"),
                     _f(need["segkd_kd"], ".1f"), _f(ratio["student"], ".2f"),
                     _f(ratio["segkd_kd"], ".2f"), verdict])
    return Table("data pipeline vs training step (img/s; loader at the recipes' default workers, "
                 "PNG decode every batch)",
                 ["pair", "device", "precision", "batch", "HxW", "workers", "loader img/s",
                  "loader w=0", "w=0 cache=on", "student step", "segkd_kd step",
                  "loader/student", "loader/segkd_kd", "verdict"], rows)


def tables(records: list[dict]) -> list[Table]:
    """The suite's three tables from the successful records (empty tables left out)."""
    ok = [r for r in records if r["ok"]]
    steps = [r for r in ok if r["script"] == STEP and r["result"]["rows"]]
    data = [r for r in ok if r["script"] == DATA and r["result"]["rows"]]
    out = [step_table(steps), headline_table(steps), verdict_table(steps), data_table(data)]
    return [t for t in out if t.rows]


def print_tables(tabs: list[Table]) -> None:
    """Print with rich, the console widened to the widest table so that no cell wraps."""
    from rich.console import Console

    con = bs.console()
    rendered = [t.rich() for t in tabs]
    wide = con.options.update_width(10**4)
    need = max((con.measure(r, options=wide).maximum for r in rendered), default=0)
    if need > con.width:
        con = Console(width=need)
    con.print(*rendered)


def write_markdown(path: Path, tabs: list[Table], meta: dict, failed: list[str]) -> None:
    """``suite.md``: a header line (tier, machine, date) and the tables, ready to paste."""
    m = meta["machine"]
    machine = (f"Machine: {m['cpu']}, {m['cores']} cores, GPU {m['gpu'] or 'none'}, torch "
               f"{m['torch']}, Python {m['python']}; {meta['started']}. Commands and every row: "
               "`suite.json`.")
    head = [f"# Benchmark suite: {meta['tier']} tier{' (quick)' if meta['quick'] else ''}", "",
            machine, ""]
    if failed:
        head += [f"Failed sub-commands: {', '.join(failed)}.", ""]
    path.write_text("\n".join(head) + "\n" + "\n\n".join(t.markdown() for t in tabs) + "\n")


