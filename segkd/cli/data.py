"""``segkd download`` and ``segkd prepare``: getting data in."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

import typer
import yaml

from segkd.cli.base import flags, out
from segkd.core.errors import ConfigError


def _unique_pairs(where: str):
    """A ``json.loads`` object hook refusing a key given twice (JSON keeps the last silently)."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise ConfigError(f"{where}: key '{k}' is given twice in one object; keep one")
            out[k] = v
        return out
    return pairs


def parse_options(options_json: Optional[str], sets: Optional[List[str]]) -> dict[str, Any]:
    """Dataset options from ``--options '{"k": v}'`` then ``--set k=v`` (values parsed as JSON
    when they parse, e.g. ``sbd=true``, ``value_map={"0":0,"255":1}``, else as YAML like
    ``segkd train --set``, e.g. ``value_map={0: 0, 255: 1}``; else kept as strings).
    A key twice in one JSON object, or one ``--set`` key with two values, is an error."""
    from segkd.config.loading import refuse_repeated

    refuse_repeated(list(sets or []))
    options: dict[str, Any] = {}
    if options_json:
        try:
            options = json.loads(options_json, object_pairs_hook=_unique_pairs("--options"))
        except json.JSONDecodeError as e:
            raise ConfigError(f"--options is not valid JSON ({e}): {options_json}") from None
        if not isinstance(options, dict):
            raise ConfigError(f"--options must be a JSON object, got: {options_json}")
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got '{item}'")
        try:
            hook = _unique_pairs(f"--set {item}")
            options[key.strip()] = json.loads(value, object_pairs_hook=hook)
        except json.JSONDecodeError:
            options[key.strip()] = _yaml_value(value)
    return options


def _yaml_value(text: str) -> Any:
    """A ``--set`` value that is not JSON, read as YAML as ``segkd train --set`` reads it
    (``value_map={0: 0, 255: 1}``); text that is not YAML either stays a string."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if value is None else value


def download_cmd(
    name: str = typer.Argument(..., help="camvid | voc | sbd | cityscapes"),
    root: Path = typer.Option(Path("data"), "--root", help="parent folder of the dataset"),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="mirror: <URL>/<archive name>"),
    sha256: Optional[str] = typer.Option(None, "--sha256", help="expected checksum (overrides the table)"),
    keep_archive: bool = typer.Option(False, "--keep-archive", help="keep the archive after extracting"),
    force: bool = typer.Option(False, "--force", help="fetch even if the dataset already loads"),
) -> None:
    """Download, verify and extract a public dataset (resumable); Cityscapes: what to fetch."""
    from segkd.data.download import download

    download(name, root, base_url, sha256=sha256, keep_archive=keep_archive, force=force,
             progress=not flags.quiet)


def prepare_cmd(
    name: str = typer.Argument(..., help="a registered dataset (segkd list datasets)"),
    root: Path = typer.Option(..., "--root", help="dataset root, as given to the dataset"),
    options_json: Optional[str] = typer.Option(None, "--options", help="dataset options as JSON"),
    set_: Optional[List[str]] = typer.Option(None, "--set", "-s", help="dataset option key=value"),
    max_masks: int = typer.Option(500, "--max-masks", help="masks decoded per split (0 = all)"),
    split: Optional[List[str]] = typer.Option(None, "--split", help="only this split (repeatable)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the report as JSON"),
    config_out: Optional[Path] = typer.Option(None, "--config",
                                              help="folder: also write the suggested config here"),
) -> None:
    """Check a dataset tree: pairing, sizes, unreadable files, mask values vs classes.

    For the "folder" dataset the image / mask sub-folders and the mask name suffix are found
    from the files, and a config that trains on the dataset is printed (``--config``: written).
    Exits with code 1 when the report has errors (for "folder": errors the printed config does
    not fix; those it fixes are reported as "fixed", saying what the config sets).
    """
    from segkd.data.prepare import prepare
    from segkd.data.prepare_print import print_report

    options = parse_options(options_json, set_)
    if name == "folder":
        from segkd.data.base import require_dir
        from segkd.data.folder_setup import detect_layout

        require_dir(root, "dataset root")  # before a config naming it is written
        options = {**detect_layout(root, options), **options}
        options = _with_class_count(root, options, max_masks)
    report = prepare(name, root, max_masks=max_masks or None, splits=split or None, **options)
    if name == "folder":
        from segkd.data.folder_setup import with_suggestions

        report = with_suggestions(report, options)
    print_report(report, out)
    if json_out:
        json_out.write_text(json.dumps(report.to_dict(), indent=2, default=str))
    if name == "folder":
        _print_config(report, root, options, config_out)
    if not report.ok:
        raise SystemExit(1)  # not typer.Exit: segkd.cli runs click with standalone_mode=False


def _with_class_count(root: Path, options: dict[str, Any], max_masks: int) -> dict[str, Any]:
    """Without class names (no classes / num_classes option, no classes.txt), the class count
    implied by a first look at the mask values (0/255 masks: 2 classes)."""
    from segkd.data.folder_setup import class_count
    from segkd.data.prepare import prepare

    if options.get("classes") or options.get("num_classes") or (root / "classes.txt").is_file():
        return options
    first = prepare("folder", root, max_masks=min(50, max_masks or 50), **options)
    return {**options, "num_classes": class_count(first, options)}


def _print_config(report: Any, root: Path, options: dict[str, Any], path: Optional[Path]) -> None:
    """Print (and with ``path``, write) the config suggested for a folder dataset."""
    from segkd.data.folder_setup import config_text, suggest_config

    text = config_text(suggest_config(report, root, options), root, report.ok, report.applied)
    out.print("\n[bold]suggested config[/bold]" + (f" (written to {path})" if path else "") + ":")
    out.print(text, markup=False, highlight=False, soft_wrap=True)
    if path:
        path.write_text(text)


def register(app: typer.Typer) -> None:
    """Add the data commands to the ``segkd`` app."""
    app.command("download")(download_cmd)
    app.command("prepare")(prepare_cmd)
