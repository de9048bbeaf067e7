"""The one way the project draws a figure: matplotlib without a display, saved and closed."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def saved_figure(target: Path | io.BytesIO, *, dpi: int, **subplots: Any) -> Iterator[tuple[Any, Any]]:
    """`plt.subplots(**subplots)` as (figure, axes); on leaving, the figure is saved as PNG to `target` and closed."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(**subplots)
    try:
        yield figure, axes
        figure.tight_layout()
        figure.savefig(target, format="png", dpi=dpi)
    finally:
        plt.close(figure)
