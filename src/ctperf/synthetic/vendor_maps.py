"""Render scalar maps as vendor-like colour-coded DICOM Secondary Captures (test-data generator).

This is an *independent truth generator* for the Mode B colour decoder: it imports nothing from ctperf outside
``ctperf.synthetic`` and shares no code with :mod:`ctperf.modeb.colormap_decode`.

Each slice of a ``(z, y, x)`` volume becomes one RGB Secondary Capture file that looks like a Siemens
syngo.via colour-coded map (e.g. TMAXD): black background, the map coloured through a ramp, a colour-bar strip
burned into the image near the right edge (low value at the bottom, high at the top), white text annotations
(series name, value labels, orientation letters) and a few grey/white marks.  Geometry
(ImagePositionPatient / ImageOrientationPatient / PixelSpacing) is written from the RAS affine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SECONDARY_CAPTURE_UID = "1.2.840.10008.5.1.4.1.1.7"

# ----------------------------------------------------------------------------------------------- colour ramps


def ramp_colours(name: str = "jet", n: int = 256) -> np.ndarray:
    """An ``(n, 3)`` uint8 colour ramp, low value first.

    ``"jet"``: dark blue - blue - cyan - yellow - red - dark red (MATLAB-like, own formula).
    ``"rainbow"``: fully saturated hue sweep violet - blue - cyan - green - yellow - red.
    ``"warm"``: dark red - red - orange - yellow (a monotone 'hot' ramp without black or white ends).
    """
    t = np.linspace(0.0, 1.0, n)
    if name == "jet":
        rgb = np.stack([np.clip(1.5 - np.abs(4 * t - s), 0, 1) for s in (3.0, 2.0, 1.0)], axis=1)
    elif name == "rainbow":
        hue = (0.78 * (1.0 - t))[:, None]  # 0.78 (violet) -> 0 (red)
        k = np.array([5.0, 3.0, 1.0])
        rgb = 1.0 - np.clip(np.minimum((k + hue * 6) % 6, 4 - (k + hue * 6) % 6), 0, 1)
    elif name == "warm":
        rgb = np.stack([0.45 + 0.55 * np.clip(t * 2, 0, 1), 0.95 * t, np.zeros_like(t)], 1)
    else:
        raise ValueError(f"unknown ramp {name!r}")
    return np.round(rgb * 255).astype(np.uint8)


# -------------------------------------------------------------------------------------------- test volumes


def smooth_brain_map(shape_zyx=(6, 160, 160), lo: float = 0.0, hi: float = 12.0, seed: int = 0,
                     background=np.nan, texture: float = 0.0) -> np.ndarray:
    """A smooth phantom-like scalar map: an ellipsoidal 'brain' with a smooth field and a high-value lesion.

    Values lie in ``[lo, hi]`` inside the brain; outside it ``background`` (NaN by default).  ``texture > 0``
    adds that fraction of the range as fine smooth random structure (vessel / sulcus-like detail, useful for
    image registration tests).
    """
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape_zyx
    z, y, x = np.meshgrid(np.linspace(-1, 1, nz), np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    brain = (x / 0.78) ** 2 + (y / 0.88) ** 2 + (z / 1.6) ** 2 <= 1.0
    field = np.zeros(shape_zyx)
    for _ in range(6):
        cx, cy = rng.uniform(-0.6, 0.6, 2)
        sig = rng.uniform(0.2, 0.5)
        field += rng.uniform(0.3, 1.0) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sig ** 2))
    field = 0.35 * field / field.max()
    cx, cy = rng.uniform(0.15, 0.4), rng.uniform(-0.3, 0.3)
    lesion = np.exp(-(((x - cx) / 0.25) ** 2 + ((y - cy) / 0.32) ** 2) ** 2)
    t = 0.05 + field + 0.9 * lesion
    if texture > 0:
        noise = rng.standard_normal(shape_zyx)
        k = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
        for ax in (1, 2):  # separable Gaussian smoothing in-plane (sigma 2 px)
            noise = np.apply_along_axis(lambda v: np.convolve(v, k / k.sum(), mode="same"), ax, noise)
        t = t + texture * noise / noise.std()
    t = np.clip(t, 0, 1)
    vol = lo + (hi - lo) * t
    return np.where(brain, vol, background).astype(np.float32)


# ------------------------------------------------------------------------------------------------ rendering


def _text(draw: ImageDraw.ImageDraw, xy, s: str, fill=(255, 255, 255)) -> None:
    draw.text(xy, s, fill=fill)


def render_colour_slice(slice_yx: np.ndarray, value_range, ramp: np.ndarray, *, label: str = "TMAXD",
                        bar_width: int = 10, bar_frac: float = 0.6, margin: int = 8,
                        annotations: bool = True, bar_frame: bool = False,
                        ticks_across_bar: bool = False) -> np.ndarray:
    """Render one 2D map to an ``(y, x, 3)`` uint8 RGB image with a vertical colour bar at the right edge.

    Pixels that are NaN are black background.  The bar spans ``bar_frac`` of the image height, its bottom row is
    the first ramp colour (``value_range[0]``) and its top row the last (``value_range[1]``).
    ``bar_frame`` draws a 1 px grey frame around the bar, ``ticks_across_bar`` white 1 px ticks across it.
    """
    lo, hi = float(value_range[0]), float(value_range[1])
    ny, nx = slice_yx.shape
    n = len(ramp)
    tt = np.clip((np.nan_to_num(slice_yx, nan=lo) - lo) / (hi - lo), 0, 1)
    idx = np.round(tt * (n - 1)).astype(int)
    rgb = ramp[idx]
    rgb[~np.isfinite(slice_yx)] = 0

    # colour bar: rows top..bottom-1, high value at the top
    length = int(round(bar_frac * ny))
    top = (ny - length) // 2
    x1 = nx - margin
    x0 = x1 - bar_width
    pos = 1.0 - np.arange(length) / (length - 1)  # 1 at the top row, 0 at the bottom row
    bar = ramp[np.round(pos * (n - 1)).astype(int)]
    rgb[top:top + length, x0:x1] = bar[:, None, :]

    if annotations:
        img = Image.fromarray(rgb)
        d = ImageDraw.Draw(img)
        # value labels and ticks left of the bar
        _text(d, (x0 - 30, top - 4), f"{hi:g}")
        _text(d, (x0 - 30, top + length - 8), f"{lo:g}")
        for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
            yy = top + int(round(frac * (length - 1)))
            d.line([(x0 - 5, yy), (x0 - 2, yy)], fill=(200, 200, 200))
        # series label, orientation letters, a grey distance ruler and a white crosshair over the map
        _text(d, (4, 4), label)
        _text(d, (4, ny - 14), "SIEMENS syngo.via")
        _text(d, (4, ny // 2), "R")
        _text(d, (x0 - 44, ny // 2), "L")
        d.line([(6, ny - 24), (6 + nx // 5, ny - 24)], fill=(128, 128, 128), width=1)
        for k in range(6):
            xx = 6 + k * (nx // 25)
            d.line([(xx, ny - 27), (xx, ny - 24)], fill=(160, 160, 160))
        cx, cy = nx // 2, ny // 2
        d.line([(cx - 3, cy), (cx + 3, cy)], fill=(255, 255, 255))
        d.line([(cx, cy - 3), (cx, cy + 3)], fill=(255, 255, 255))
        rgb = np.asarray(img).copy()
    if bar_frame:
        rgb[top - 1, x0 - 1:x1 + 1] = rgb[top + length, x0 - 1:x1 + 1] = 150
        rgb[top - 1:top + length + 1, x0 - 1] = rgb[top - 1:top + length + 1, x1] = 150
    if ticks_across_bar:
        for frac in (0.2, 0.4, 0.6, 0.8):
            rgb[top + int(round(frac * (length - 1))), x0:x1] = 255
    return rgb


def _dicom_geometry(affine_ras: np.ndarray, k: int):
    """(IPP, IOP, PixelSpacing) of slice ``k`` from a RAS affine mapping voxel (x, y, z)."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine_ras, float)
    col_step, row_step = lps[:3, 0], lps[:3, 1]  # per column index (x) / per row index (y)
    ipp = lps[:3, :3] @ np.array([0.0, 0.0, float(k)]) + lps[:3, 3]
    iop = np.concatenate([col_step / np.linalg.norm(col_step), row_step / np.linalg.norm(row_step)])
    spacing = [float(np.linalg.norm(row_step)), float(np.linalg.norm(col_step))]  # [row spacing, column spacing]
    return ipp, iop, spacing


def write_colour_series(vol_zyx: np.ndarray, affine_ras: np.ndarray, out_dir, value_range, *,
                        ramp="jet", label: str = "TMAXD", series_number: int = 9, annotations: bool = True,
                        photometric: str = "RGB", shuffle_files: bool = True, seed: int = 0) -> list[Path]:
    """Write a (z, y, x) map as one RGB Secondary Capture per slice into ``out_dir``; return the file paths.

    ``ramp`` is a ramp name for :func:`ramp_colours` or an ``(n, 3)`` uint8 array.  File names are shuffled
    relative to slice order (and InstanceNumber is reversed) so readers must sort by position.
    ``photometric="YBR_FULL"`` stores the pixels converted to YCbCr (full range) instead of RGB.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ramp_arr = ramp_colours(ramp) if isinstance(ramp, str) else np.asarray(ramp, np.uint8)
    vol = np.asarray(vol_zyx, dtype=float)
    nz, ny, nx = vol.shape
    study_uid, series_uid, for_uid = generate_uid(), generate_uid(), generate_uid()
    order = np.random.default_rng(seed).permutation(nz) if shuffle_files else np.arange(nz)
    paths = []
    for k in range(nz):
        rgb = render_colour_slice(vol[k], value_range, ramp_arr, label=label, annotations=annotations)
        ipp, iop, spacing = _dicom_geometry(affine_ras, k)
        fm = FileMetaDataset()
        fm.MediaStorageSOPClassUID = SECONDARY_CAPTURE_UID
        sop_uid = generate_uid()
        fm.MediaStorageSOPInstanceUID = sop_uid
        fm.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = fm
        ds.SOPClassUID = SECONDARY_CAPTURE_UID
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, for_uid
        ds.Modality = "CT"
        ds.Manufacturer = "SIEMENS"
        ds.SeriesDescription = label
        ds.ImageType = ["DERIVED", "SECONDARY", "PERFUSION", label]
        ds.PatientName, ds.PatientID = "PHANTOM^MODEB", "PHANTOM"
        ds.SeriesNumber = series_number
        ds.InstanceNumber = nz - k
        ds.ImagePositionPatient = [f"{v:.4f}" for v in ipp]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in iop]
        ds.PixelSpacing = [f"{v:.5f}" for v in spacing]
        ds.SliceThickness = f"{float(np.linalg.norm(affine_ras[:3, 2])):.4f}"
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        if photometric == "RGB":
            ds.PhotometricInterpretation = "RGB"
            data = rgb
        elif photometric == "YBR_FULL":
            ds.PhotometricInterpretation = "YBR_FULL"
            f = rgb.astype(float)
            yy = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
            cb = 128 - 0.168736 * f[..., 0] - 0.331264 * f[..., 1] + 0.5 * f[..., 2]
            cr = 128 + 0.5 * f[..., 0] - 0.418688 * f[..., 1] - 0.081312 * f[..., 2]
            data = np.clip(np.round(np.stack([yy, cb, cr], -1)), 0, 255).astype(np.uint8)
        else:
            raise ValueError(photometric)
        ds.PixelData = np.ascontiguousarray(data).tobytes()
        path = out / f"IM_{order[k]:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths

