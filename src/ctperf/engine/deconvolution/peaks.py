"""Reading a residue's peak: its height and time, with sub-sample precision, within a search window."""

from __future__ import annotations

import numpy as np


def residue_peak(residue: np.ndarray, dt_s: float, n_pos: int, n_neg: int) -> tuple[np.ndarray, np.ndarray]:
    """Peak value and sub-sample time (clipped at >= 0) of each residue row; see :func:`_peak_signed`."""
    pk, t = _peak_signed(residue, dt_s, n_pos, n_neg)
    return pk, np.maximum(t, 0.0).astype(np.float32)


def _search_window(residue: np.ndarray, n_pos: int, n_neg: int) -> np.ndarray:
    if n_neg > 0:
        return np.concatenate([residue[:, -n_neg:], residue[:, :n_pos]], axis=1)
    return residue[:, :n_pos]


def _peak_signed(residue: np.ndarray, dt_s: float, n_pos: int, n_neg: int, centre_idx: np.ndarray | None = None,
                 half_width: int = 0, span_idx: tuple[np.ndarray, np.ndarray] | None = None,
                 window: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Peak value and sub-sample time (s, may be negative) of each residue row (circulant layout).

    Searches times ``-n_neg*dt .. (n_pos-1)*dt`` (negative times are the wrapped end of the window) - or only
    ``centre_idx +- half_width`` samples of it when given - locates the maximum sample and refines it with a
    parabola through its two neighbours.  ``window``: ``_search_window(residue, n_pos, n_neg)`` when the caller
    already has it (several searches of the same residues).
    """
    win = _search_window(residue, n_pos, n_neg) if window is None else window
    if span_idx is not None:
        i = _argmax_between(win, np.asarray(span_idx[0]) - half_width, np.asarray(span_idx[1]) + half_width)
    elif centre_idx is not None and half_width > 0:
        i = _argmax_near(win, centre_idx, half_width)
    else:
        i = np.argmax(win, axis=1)
    frac, peak = _parabola_peak(win, i)
    t = (i + frac - n_neg) * dt_s
    return peak.astype(np.float32), t.astype(np.float32)


def _argmax_near(win: np.ndarray, centre_idx: np.ndarray, half_width: int) -> np.ndarray:
    """Index of each row's maximum within ``centre_idx +- half_width``."""
    centre = np.asarray(centre_idx)
    return _argmax_between(win, centre - half_width, centre + half_width)


def _argmax_between(win: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Index of each row's maximum over the columns ``lo .. hi`` (inclusive, clipped to the window; the first of
    equal maxima; 0 where the range is empty), read from a band of those columns only."""
    n, w = win.shape
    lo = np.maximum(np.asarray(lo, np.int64), 0)
    hi = np.minimum(np.asarray(hi, np.int64), w - 1)
    if n == 0:
        return np.zeros(0, np.int64)
    cols = lo[:, None] + np.arange(max(int((hi - lo).max()), 0) + 1)[None, :]
    band = np.where(cols <= hi[:, None], win[np.arange(n)[:, None], np.minimum(cols, w - 1)], -np.inf)
    return np.where(hi >= lo, lo + np.argmax(band, axis=1), 0)


def _parabola_peak(y: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-sample offset (-0.5..0.5) and height of each row's maximum near its sample ``i``: the parabola through
    ``i`` and its two neighbours (offset 0 and the sample itself at the ends or where the parabola is not
    concave)."""
    w = y.shape[1]
    rows = np.arange(len(y))
    y0 = y[rows, np.clip(i - 1, 0, w - 1)]
    y1 = y[rows, i]
    y2 = y[rows, np.clip(i + 1, 0, w - 1)]
    denom = y0 - 2.0 * y1 + y2
    interior = (i > 0) & (i < w - 1) & (denom < 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.clip(np.where(interior, 0.5 * (y0 - y2) / denom, 0.0), -0.5, 0.5)
    return frac, np.where(interior, y1 - 0.25 * (y0 - y2) * frac, y1)


def _time_index(time_s: np.ndarray, dt_s: float, t: int, n_neg: int) -> np.ndarray:
    """Index in the peak-search window (:func:`_search_window`) of the sample nearest each time (s)."""
    return np.clip(np.rint(np.asarray(time_s) / dt_s).astype(int) + n_neg, 0, t + n_neg - 1)
