"""Where a run's data lives."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from formats.strict_model import LocalPath, StrictModel


class StorageConfig(StrictModel):
    db: LocalPath = Field(Path(".online-cut/store.duckdb"), description="the DuckDB store")
    adapters_dir: LocalPath = Field(Path(".online-cut/adapters"), description="one folder per trained adapter")
    exports_dir: LocalPath = Field(Path(".online-cut/exports"), description="per-round Parquet exports")
    mirror: str | None = Field(
        None,
        description="a folder or fsspec URL (s3://bucket/prefix, ...) where each round's Parquet export and "
        "candidate adapter are copied for other machines; None: no copy",
    )
    lock_timeout_s: float = Field(
        30.0, ge=0, description="how long a writer waits for another process to release the store's lock"
    )
    reader_wait_s: float = Field(
        2.0, ge=0, description="how long `online-cut sql` waits for the lock before reading the Parquet exports"
    )
    sql_timeout_s: float = Field(
        20.0,
        gt=0,
        description="`online-cut sql` interrupts a statement after this long; keep it under lock_timeout_s, since "
        "the store cannot be written while a query reads it",
    )
    sql_memory_limit: str = Field(
        "2GB", pattern=r"^\d+(\.\d+)?\s*[KMGT]i?B$", description="the most memory one `online-cut sql` query may use"
    )
