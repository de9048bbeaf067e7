"""Folders copied to and from shared storage: a path, or an fsspec URL (s3://, gs://, file://, ...).

What other machines read — the placed steps' inputs and outputs, mirrored adapters and
exports — goes through these functions. A reader never sees half a file: on a local or
mounted file system each is written under a temporary name and renamed, and an object
store's upload is whole or absent.
"""

from __future__ import annotations

from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *parts])


def remove_folder(url: str) -> None:
    """Delete `url` and everything under it, if it exists (a step's leftovers from an earlier attempt)."""
    fs, root = fsspec.core.url_to_fs(url)
    if fs.exists(root):
        fs.rm(root, recursive=True)


def put_folder(local: Path, url: str) -> None:
    """Copy every file under `local` to the same relative paths under `url`."""
    fs, root = fsspec.core.url_to_fs(url)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        target = join(root, *path.relative_to(local).parts)
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        if isinstance(fs, LocalFileSystem):
            fs.put_file(str(path), f"{target}.partial")
            fs.mv(f"{target}.partial", target)
        else:  # an object store's upload is whole or absent already
            fs.put_file(str(path), target)


def get_folder(url: str, local: Path) -> None:
    """Copy every file under `url` into `local` (created), keeping relative paths."""
    fs, root = fsspec.core.url_to_fs(url)
    if not fs.isdir(root):
        raise FileNotFoundError(f"{url}: no such folder on shared storage")
    root = root.rstrip("/")
    inside = local.resolve()
    targets = {remote: local / remote[len(root) + 1 :] for remote in fs.find(root)}
    for remote, target in targets.items():
        # An object store's keys are free text: "../x" would write outside the folder.
        if not target.resolve().is_relative_to(inside):
            raise ValueError(f"{url}: the object {remote!r} would be written outside {local}; nothing was copied")
    for remote, target in targets.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote, str(target))
