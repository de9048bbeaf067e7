"""Store speed on the CUT paper's two rounds (2000 triples): import, re-import, cache look-up,
a `triples` query, Parquet export, and the cost of one open → write → close.

    .venv/bin/python bench/store.py

The last line printed is JSON with the timings in seconds.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "cut-paper"

from formats.triple_file import read_cut_records  # noqa: E402
from storage.exporter import export_parquet  # noqa: E402
from storage.importer import import_file  # noqa: E402
from storage.records import TrainingStep  # noqa: E402
from storage.store import Store  # noqa: E402


def timed(action) -> tuple[float, object]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def main() -> None:
    files = [DATA / "online-iter1.json", DATA / "online-iter2.json"]
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "store.duckdb")
        import_s, _ = timed(lambda: [import_file(store, f, "bench", r) for r, f in enumerate(files)])
        reimport_s, summaries = timed(lambda: [import_file(store, f, "bench", r) for r, f in enumerate(files)])
        assert sum(s.added for s in summaries) == 0
        items = [(r.instruction, r.input, r.output) for f in files for r in read_cut_records(f)]
        lookup_s, found = timed(lambda: store.cached_judgments(items, "imported"))
        assert all(found)
        triples_s, triples = timed(lambda: store.triples("bench", 1))
        export_s, _ = timed(lambda: export_parquet(store, Path(folder) / "exports"))
        step_s, _ = timed(lambda: [store.add_training_steps([TrainingStep(run="bench", round=0, step=i)]) for i in range(20)])
    print(json.dumps({
        "triples": len(items),
        "import_s": round(import_s, 3),
        "import_triples_per_s": round(len(items) / import_s),
        "reimport_s": round(reimport_s, 3),
        "cached_judgments_s": round(lookup_s, 3),
        "triples_query_s": round(triples_s, 3),
        "triples_in_round": len(triples),
        "export_parquet_s": round(export_s, 3),
        "one_write_transaction_s": round(step_s / 20, 4),
    }))


if __name__ == "__main__":
    main()
