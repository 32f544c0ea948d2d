"""Vendor-style colour tables of ``pct-pma-colormaps`` (read at run time from ../shared/third_party, never copied).

``load_pma_luts()`` returns ``{name: (256, 3) uint8}`` for the 27 tables of ``data_PMA_lut.csv`` (layout: header
row, then R, G and B blocks of 256 rows each, separated by blank lines; see the folder's NOTES.md), or ``None``
when the folder is absent (tests then skip).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

PMA_DIR = Path(os.environ.get("CTPERF_THIRD_PARTY", Path(__file__).resolve().parents[2] / "shared" / "third_party")
               ) / "pct-pma-colormaps"


def load_pma_luts() -> dict[str, np.ndarray] | None:
    path = PMA_DIR / "data_PMA_lut.csv"
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    names = [n for n in rows[0][1:] if n and n != "End"]
    blocks = []
    for start in (1, 259, 517):
        blk = np.array([[int(v) for v in r[1:1 + len(names)]] for r in rows[start:start + 256]])
        assert blk.shape == (256, len(names)), "unexpected data_PMA_lut.csv layout"
        blocks.append(blk)
    return {n: np.stack([b[:, i] for b in blocks], axis=1).astype(np.uint8) for i, n in enumerate(names)}


def load_mat(name: str):
    """A ``.mat`` file of the folder as a dict (scipy.io), or ``None`` when absent."""
    from scipy.io import loadmat

    p = PMA_DIR / name
    return loadmat(p) if p.is_file() else None
