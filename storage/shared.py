"""Folders copied to and from shared storage: a path, or an fsspec URL (s3://, gs://, file://, ...).

What other machines read — the placed steps' inputs and outputs, mirrored adapters and
exports — goes through these functions. Each file is written under a temporary name and
renamed, so a reader never sees half of one.
"""

from __future__ import annotations

from pathlib import Path

import fsspec


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
        partial = f"{target}.partial"
        fs.put_file(str(path), partial)
        fs.mv(partial, target)


def get_folder(url: str, local: Path) -> None:
    """Copy every file under `url` into `local` (created), keeping relative paths."""
    fs, root = fsspec.core.url_to_fs(url)
    if not fs.isdir(root):
        raise FileNotFoundError(f"{url}: no such folder on shared storage")
    root = root.rstrip("/")
    for remote in fs.find(root):
        target = local / remote[len(root) + 1 :]
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote, str(target))
