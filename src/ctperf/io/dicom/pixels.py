"""Decode the chosen files straight into one preallocated float32 (t, z, y, x) HU array."""

from __future__ import annotations

import struct
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom

from ctperf.config import thread_count
from ctperf.errors import DicomError
from ctperf.io.dicom.plan import _Plan
from ctperf.io.dicom.scan import _Header
from ctperf.io.dicom.values import _IMPLICIT_LE, _NATIVE_LE

#: HU given to voxels outside the reconstructed field of view (pixel padding).
OUTSIDE_FOV_HU = -1024.0


def _read_native(h: _Header) -> np.ndarray | None:
    """Stored pixels of an uncompressed little-endian file via one seek + read; None if the layout is unexpected."""
    if h.transfer_syntax not in _NATIVE_LE or h.bits_allocated not in (8, 16) or h.samples_per_pixel != 1:
        return None
    n_bytes = h.rows * h.cols * h.bits_allocated // 8
    with open(h.path, "rb") as fp:
        fp.seek(h.pixel_offset)
        head = fp.read(8 if h.transfer_syntax == _IMPLICIT_LE else 12)
        if len(head) < 8 or struct.unpack("<HH", head[:4]) != (0x7FE0, 0x0010):
            return None
        length = struct.unpack("<I", head[4:8] if h.transfer_syntax == _IMPLICIT_LE else head[8:12])[0]
        if length < n_bytes or length == 0xFFFFFFFF:
            return None
        buf = bytearray(n_bytes)
        if fp.readinto(buf) != n_bytes:
            return None
    kind = ("i" if h.signed else "u") + str(h.bits_allocated // 8)
    arr = np.frombuffer(buf, dtype="<" + kind).reshape(h.rows, h.cols)  # writable: backed by a bytearray
    if h.bits_stored < h.bits_allocated:
        shift = h.bits_allocated - h.bits_stored
        if h.signed:  # sign-extend from bits_stored
            np.left_shift(arr, shift, out=arr)
            np.right_shift(arr, shift, out=arr)
        else:  # ignore bits above bits_stored (e.g. old overlay bits)
            np.bitwise_and(arr, (1 << h.bits_stored) - 1, out=arr)
    return arr


def _stored_pixels(h: _Header) -> np.ndarray:
    arr = None
    try:
        arr = _read_native(h)
        if arr is None:
            ds = pydicom.dcmread(h.path, force=True)
            arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - missing plugin, corrupt stream, ...
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DicomError(
            f"cannot decode pixel data of {Path(h.path).name} (transfer syntax {h.transfer_syntax}): {msg}"
        ) from None
    if arr.shape != (h.rows, h.cols):
        raise DicomError(
            f"{Path(h.path).name}: pixel data shape {arr.shape} does not match Rows x Columns {h.rows}x{h.cols}"
        )
    return arr


def _decode_into(plan: _Plan, hu: np.ndarray, progress: Callable[[int, int], None] | None,
                 bin_factor: int = 1, workers: int | None = None) -> np.ndarray | None:
    """Fill ``hu`` (t, z, y, x) in place; return the (z, y, x) padding mask or None.

    With ``bin_factor`` > 1 every decoded slice is block-averaged in-plane (``ctperf.core.grid.bin_inplane``)
    before it is stored, so the full-resolution 4D array never exists; a block touching padding is outside.
    ``workers``: CPU threads (None = all cores); one more thread than that overlaps file reads, at most 4.
    """
    n_t, n_z = len(plan.frames), len(plan.frames[0])
    has_padding = any(h.padding_value is not None for row in plan.frames for h in row)
    outside = np.zeros(hu.shape[1:], dtype=bool) if has_padding else None
    lock = threading.Lock()
    if bin_factor > 1:
        from ctperf.core.grid import bin_inplane
    h0 = plan.frames[0][0]
    scratch = threading.local()

    def work(t: int, z: int) -> None:
        h = plan.frames[t][z]
        stored = _stored_pixels(h)
        if bin_factor > 1:
            if getattr(scratch, "buf", None) is None:
                scratch.buf = np.empty((h0.rows, h0.cols), np.float32)
            dst = scratch.buf
        else:
            dst = hu[t, z]
        if h.slope == 1.0:  # one pass: stored + intercept -> float32 HU
            np.add(stored, np.float32(h.intercept), out=dst, dtype=np.float32)
        else:
            np.multiply(stored, np.float32(h.slope), out=dst, dtype=np.float32)
            if h.intercept != 0.0:
                dst += np.float32(h.intercept)
        pad = None
        if h.padding_value is not None:
            lim = h.padding_value if h.padding_limit is None else h.padding_limit
            lo, hi = min(h.padding_value, lim), max(h.padding_value, lim)
            pad = (stored >= lo) & (stored <= hi)
        if bin_factor > 1:
            if pad is not None:
                dst[pad] = OUTSIDE_FOV_HU
                pad = bin_inplane(pad[None].astype(np.float32), bin_factor)[0] > 0
            hu[t, z] = bin_inplane(dst[None], bin_factor)[0]
        if pad is not None:
            with lock:
                outside[z] |= pad

    jobs = [(t, z) for t in range(n_t) for z in range(n_z)]
    total = len(jobs)
    n_workers = min(4, thread_count(workers) + 1)
    done = 0
    if progress:
        progress(0, total)
    with ThreadPoolExecutor(max_workers=n_workers) as ex:
        futures = [ex.submit(work, t, z) for t, z in jobs]
        try:
            for fut in as_completed(futures):
                fut.result()
                done += 1
                if progress:
                    progress(done, total)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    if outside is not None:
        if not outside.any():
            return None
        hu[:, outside] = OUTSIDE_FOV_HU
    return outside
