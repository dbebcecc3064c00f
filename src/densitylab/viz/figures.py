"""Writing a matplotlib figure: one PNG, replaced atomically, and the figure closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from densitylab.train.files import atomic_write


def save_png(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` as PNG (a reader never sees half a file), then close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    plt.close(fig)
    return path
