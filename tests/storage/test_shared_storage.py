"""Folders to and from shared storage, as a path or an fsspec URL: what placed steps and the mirror use."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.remote_folders import get_folder, join, put_folder, remove_folder


def _folder(root: Path) -> Path:
    (root / "nested").mkdir(parents=True)
    (root / "adapter_config.json").write_text('{"r": 16}')
    (root / "nested" / "weights.bin").write_bytes(bytes(range(256)) * 64)
    return root


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_folder_round_trip_keeps_every_file_and_leaves_no_partial(tmp_path: Path, scheme: str) -> None:
    source = _folder(tmp_path / "source")
    url = f"{scheme}{tmp_path / 'shared' / 'run' / 'round-1'}"
    put_folder(source, url)
    stored = sorted(p.relative_to(tmp_path / "shared").as_posix() for p in (tmp_path / "shared").rglob("*") if p.is_file())
    assert stored == ["run/round-1/adapter_config.json", "run/round-1/nested/weights.bin"]
    get_folder(url, tmp_path / "copy")
    for name in ("adapter_config.json", "nested/weights.bin"):
        assert (tmp_path / "copy" / name).read_bytes() == (source / name).read_bytes()


def test_in_memory_filesystem_round_trip(tmp_path: Path) -> None:
    source = _folder(tmp_path / "source")
    put_folder(source, "memory://online-cut-test/exchange")
    get_folder("memory://online-cut-test/exchange/", tmp_path / "copy")
    assert (tmp_path / "copy" / "nested" / "weights.bin").read_bytes() == (source / "nested" / "weights.bin").read_bytes()


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such/out: no such folder"):
        get_folder(join(f"file://{tmp_path}", "no-such", "out"), tmp_path / "copy")


def test_remove_folder_clears_leftovers_and_accepts_a_missing_one(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'exchange' / 'judge'}"
    put_folder(_folder(tmp_path / "source"), url)
    remove_folder(url)
    assert not (tmp_path / "exchange" / "judge").exists()
    remove_folder(url)


def test_an_object_key_that_leaves_the_folder_is_refused_and_nothing_is_copied(tmp_path: Path) -> None:
    import fsspec

    memory = fsspec.filesystem("memory")
    memory.pipe("/online-cut-escape/exchange/ok.txt", b"ok")
    memory.pipe("/online-cut-escape/exchange/../../escaped.txt", b"outside")
    copy = tmp_path / "deep" / "copy"
    with pytest.raises(ValueError, match="would be written outside .*nothing was copied"):
        get_folder("memory://online-cut-escape/exchange", copy)
    assert not copy.exists() and not (tmp_path / "escaped.txt").exists()
