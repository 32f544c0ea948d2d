"""Load an existing perfusion map (Mode B) from NIfTI or DICOM, and check that several maps share one grid.

Accepted inputs for :func:`load_map`:

- NIfTI (``.nii`` / ``.nii.gz``) via :func:`ctperf.io.nifti.load_volume`;
- a scalar DICOM series: one file per slice (CT-like, ``RescaleSlope`` / ``RescaleIntercept`` applied) or one
  multi-frame file (e.g. Parametric Map storage 1.2.840.10008.5.1.4.1.1.30 with float pixel data, or enhanced CT)
  with per-frame positions in the functional groups;
- a colour-coded DICOM series (PhotometricInterpretation RGB, YBR_* or PALETTE COLOR), e.g. Siemens syngo.via
  TMAXD / CBVD / CBFD secondary captures, decoded through the burned-in colour bar by
  :mod:`ctperf.modeb.colormap_decode` (needs the colour-bar value range).

Every volume is returned as ``(z, y, x)`` float32 with a 4x4 RAS affine mapping voxel ``(x, y, z)`` to mm
(see :mod:`ctperf.core.types`); slices are ordered along the slice normal (cross product of the two
ImageOrientationPatient vectors) by ImagePositionPatient, never by InstanceNumber or file name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from ctperf.errors import InputError
from ctperf.io.nifti import load_volume

PARAMETRIC_MAP_UID = "1.2.840.10008.5.1.4.1.1.30"
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _is_nifti(p: Path) -> bool:
    name = p.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _list_dicom(source) -> list[pydicom.Dataset]:
    """Every readable DICOM dataset with pixel data in ``source``: a file, a folder (searched recursively) or a
    list of file paths."""
    if isinstance(source, (list, tuple)):
        files = [Path(f) for f in source]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise InputError(f"map file not found: {missing[0]}")
        source = Path(files[0]).parent if files else Path(".")
    elif source.is_file():
        files = [source]
    elif source.is_dir():
        files = sorted(f for f in source.rglob("*") if f.is_file() and not f.name.startswith("."))
    else:
        raise InputError(f"map not found: {source}")
    out = []
    for f in files:
        try:
            ds = pydicom.dcmread(f)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        if any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            out.append(ds)
    if not out:
        raise InputError(f"no DICOM images found in {source}")
    return out


def _frame_attr(shared, per_frame, seq: str, attr: str):
    """Look an attribute up in the per-frame then the shared functional group ``seq``."""
    for grp in (per_frame, shared):
        if grp is None:
            continue
        s = getattr(grp, seq, None)
        if s is not None and len(s) and attr in s[0]:
            return s[0].get(attr)
    return None


def _affine(iop, ipp_sorted: np.ndarray, pixel_spacing, fallback_dz: float) -> np.ndarray:
    """RAS affine for slices with orientation ``iop``, sorted positions ``ipp_sorted`` (n, 3) in LPS mm."""
    iop = np.asarray(iop, float)
    rowcos, colcos = iop[:3], iop[3:]
    normal = np.cross(rowcos, colcos)
    ps = np.asarray(pixel_spacing, float)
    lps = np.eye(4)
    lps[:3, 0] = rowcos * ps[1]  # column index x runs along the row direction, step = column spacing
    lps[:3, 1] = colcos * ps[0]  # row index y runs along the column direction, step = row spacing
    n = len(ipp_sorted)
    lps[:3, 2] = (ipp_sorted[-1] - ipp_sorted[0]) / (n - 1) if n > 1 else normal * fallback_dz
    lps[:3, 3] = ipp_sorted[0]
    return _LPS_TO_RAS @ lps


def _check_spacing(ipp_sorted: np.ndarray, normal: np.ndarray, warnings: list[str]) -> None:
    d = ipp_sorted @ normal
    steps = np.diff(d)
    if len(steps) and np.any(steps < 1e-3):
        raise InputError("map has several slices at the same position (duplicate or mixed series)")
    if len(steps) > 1 and np.ptp(steps) > 0.05 * np.median(steps) + 1e-3:
        warnings.append(f"non-uniform slice spacing ({steps.min():.2f}-{steps.max():.2f} mm); mean step used")


def _pixels(ds) -> np.ndarray:
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot decode DICOM pixel data: {exc}") from None


def read_dicom_series(source) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read one DICOM map series from a folder, a file or a list of files.

    Returns ``(data, affine_ras, meta)`` with ``data`` either float32 ``(z, y, x)`` (scalar images, rescale /
    real-world value mapping applied) or uint8 ``(z, y, x, 3)`` RGB (colour images; YBR converted to RGB,
    PALETTE COLOR expanded through its lookup table).
    ``meta`` holds ``photometric``, ``sop_class``, ``series_description``, ``n_files``, ``warnings``.
    Raises :class:`InputError` for empty folders, several series, inconsistent orientation or size.
    """
    src = Path(source[0]).parent if isinstance(source, (list, tuple)) and source else Path(source)
    dss = _list_dicom(list(source) if isinstance(source, (list, tuple)) else src)
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in dss}
    if len(series) > 1:
        desc = sorted({str(ds.get("SeriesDescription", "?")) for ds in dss})
        raise InputError(f"{src.name} holds {len(series)} DICOM series ({', '.join(desc)}); pass one series folder")
    first = dss[0]
    photometric = str(first.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    palette = photometric == "PALETTE COLOR"
    colour = photometric.startswith("RGB") or photometric.startswith("YBR") or palette
    warnings: list[str] = []
    meta = dict(photometric=photometric, sop_class=str(first.get("SOPClassUID", "")),
                series_description=str(first.get("SeriesDescription", "")), n_files=len(dss), warnings=warnings,
                manufacturer=str(first.get("Manufacturer", "")))

    frames: list[np.ndarray] = []
    positions: list[np.ndarray] = []
    iops: list[np.ndarray] = []
    spacings: list[np.ndarray] = []
    thickness = None
    for ds in dss:
        arr = _pixels(ds)
        if palette:  # indices -> RGB through the palette, scaled to 8 bits
            try:
                arr = pydicom.pixels.apply_color_lut(arr, ds)
            except Exception as exc:  # noqa: BLE001
                raise InputError(f"cannot apply the DICOM colour palette: {exc}") from None
            if arr.dtype != np.uint8:  # 16-bit LUT entries span 0..65535 (some writers store 8-bit values)
                arr = np.round(arr / 257.0 if arr.max() > 255 else arr).astype(np.uint8)
        nf = int(ds.get("NumberOfFrames", 1) or 1)
        if nf == 1:
            arr = arr[None]
        # (pydicom >= 3 returns YBR_* colour pixel data already converted to RGB)
        sfg = ds.get("SharedFunctionalGroupsSequence")
        shared = sfg[0] if sfg is not None and len(sfg) else None
        per_frames = ds.get("PerFrameFunctionalGroupsSequence")
        for i in range(nf):
            pf = per_frames[i] if per_frames is not None and i < len(per_frames) else None
            ipp = _frame_attr(shared, pf, "PlanePositionSequence", "ImagePositionPatient") or ds.get(
                "ImagePositionPatient")
            iop = _frame_attr(shared, pf, "PlaneOrientationSequence", "ImageOrientationPatient") or ds.get(
                "ImageOrientationPatient")
            ps = _frame_attr(shared, pf, "PixelMeasuresSequence", "PixelSpacing") or ds.get("PixelSpacing")
            thickness = thickness or _frame_attr(shared, pf, "PixelMeasuresSequence", "SpacingBetweenSlices") or \
                _frame_attr(shared, pf, "PixelMeasuresSequence", "SliceThickness") or \
                ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
            if ipp is None or iop is None or ps is None:
                raise InputError("map DICOM lacks ImagePositionPatient / ImageOrientationPatient / PixelSpacing")
            frame = arr[i]
            if not colour:
                slope, intercept = _slope(ds, shared, pf)
                frame = frame.astype(np.float32) * np.float32(slope) + np.float32(intercept)
            frames.append(frame)
            positions.append(np.asarray(ipp, float))
            iops.append(np.asarray(iop, float))
            spacings.append(np.asarray(ps, float))

    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise InputError(f"map slices have different sizes: {sorted(shapes)}")
    iop0 = iops[0]
    if any(np.abs(o - iop0).max() > 1e-3 for o in iops):
        raise InputError("map slices have different orientations (ImageOrientationPatient)")
    normal = np.cross(iop0[:3], iop0[3:])
    order = np.argsort([p @ normal for p in positions], kind="stable")
    ipp_sorted = np.stack([positions[i] for i in order])
    _check_spacing(ipp_sorted, normal, warnings)
    affine = _affine(iop0, ipp_sorted, spacings[0], float(thickness) if thickness else 1.0)
    data = np.stack([frames[i] for i in order])
    data = data.astype(np.uint8) if colour else data.astype(np.float32)
    return data, affine, meta


def _slope(ds, shared, pf) -> tuple[float, float]:
    """(slope, intercept): Real World Value Mapping, else Pixel Value Transformation, else Rescale*."""
    for grp in (pf, shared, ds):
        rw = grp.get("RealWorldValueMappingSequence") if grp is not None else None
        if rw is not None and len(rw) and "RealWorldValueSlope" in rw[0]:
            return float(rw[0].RealWorldValueSlope), float(rw[0].get("RealWorldValueIntercept", 0.0) or 0.0)
    s = _frame_attr(shared, pf, "PixelValueTransformationSequence", "RescaleSlope")
    if s is not None:
        return float(s), float(_frame_attr(shared, pf, "PixelValueTransformationSequence", "RescaleIntercept") or 0)
    return float(ds.get("RescaleSlope", 1.0) or 1.0), float(ds.get("RescaleIntercept", 0.0) or 0.0)


def load_map(path_or_dir, value_range=None, **decode_kwargs) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Load one perfusion map as ``((z, y, x) float32, 4x4 RAS affine, info)``.

    ``value_range=(lo, hi)`` is the value range of the colour bar and is required for colour-coded DICOM
    (PhotometricInterpretation RGB / YBR_*, detected automatically); it is ignored for scalar inputs.
    ``decode_kwargs`` are passed to :func:`ctperf.modeb.colormap_decode.decode_rgb_volume`.
    ``info["kind"]`` is ``"nifti"``, ``"dicom_scalar"`` or ``"dicom_colour"``; colour maps add the colour-bar and
    decoding-residual report.  Pixels that cannot be decoded (background, text, annotations) are NaN.
    """
    p = Path(path_or_dir)
    if p.is_file() and _is_nifti(p):
        vol, aff = load_volume(p)
        return vol, aff, dict(kind="nifti", source=str(p), warnings=[])
    if not p.exists():
        raise InputError(f"map not found: {p}")
    data, aff, meta = read_dicom_series(p)
    info: dict[str, Any] = dict(source=str(p), **meta)
    if data.ndim == 4:
        from ctperf.modeb.colormap_decode import decode_rgb_volume

        if value_range is None:
            raise InputError(f"{p.name} is a colour-coded map; give its colour-bar value range "
                             "(e.g. --tmax-range 0,10)")
        vol, dinfo = decode_rgb_volume(data, value_range, **decode_kwargs)
        info["warnings"] = list(info.get("warnings", [])) + dinfo.pop("warnings", [])
        info.update(kind="dicom_colour", **dinfo)
        return vol, aff, info
    info["kind"] = "dicom_scalar"
    return data, aff, info


def check_same_grid(maps: dict, tol_mm: float = 0.01) -> None:
    """Raise :class:`InputError` unless every ``name -> (vol_zyx, affine_ras)`` entry has the same grid.

    The message names the first mismatching pair, e.g.
    ``maps have different grids: tmax (20x256x256) vs cbv (20x256x250)``.
    """
    items = list(maps.items())
    if len(items) < 2:
        return
    name0, (vol0, aff0) = items[0]
    shape0 = tuple(np.shape(vol0))
    for name, (vol, aff) in items[1:]:
        shape = tuple(np.shape(vol))
        if shape != shape0:
            raise InputError(f"maps have different grids: {name0} ({'x'.join(map(str, shape0))}) vs "
                             f"{name} ({'x'.join(map(str, shape))})")
        if not np.allclose(np.asarray(aff0, float), np.asarray(aff, float), atol=tol_mm):
            dmax = float(np.abs(np.asarray(aff0, float) - np.asarray(aff, float)).max())
            raise InputError(f"maps have different grids: {name0} ({'x'.join(map(str, shape0))}) vs {name} "
                             f"(same size, position/orientation differ by up to {dmax:.3g} mm)")
