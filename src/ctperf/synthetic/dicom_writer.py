"""Write a 4D HU array to classic CT Image Storage DICOM files the way real CT perfusion scanners do.

The writer exists to test DICOM ingestion against the messy folders met in practice: one or many series per
acquisition, vendor-specific pixel encodings (unsigned + intercept, signed + padding, per-file rescale),
compressed transfer syntaxes, gantry tilt, different timing tags, midnight crossings, odd file names and
extra non-perfusion series.

It depends only on numpy and pydicom (plus python-gdcm for JPEG Lossless encoding); it never imports the
ctperf engine, so phantoms built on it stay independent of the code they test.

Geometry conventions
--------------------
``hu_tzyx`` is ``(t, z, y, x)``: ``x`` = DICOM column index, ``y`` = row index, ``z`` = slice index.
``affine_ras`` maps voxel ``(x, y, z)`` to RAS+ millimetres (nibabel convention). DICOM patient coordinates
are LPS+, so the writer flips the first two world axes. Column 0 of the affine gives ImageOrientationPatient's
row direction (the direction of increasing column index) and ``PixelSpacing[1]``; column 1 gives the column
direction and ``PixelSpacing[0]`` (DICOM stores PixelSpacing as *row spacing, column spacing*).

With ``gantry_tilt_deg`` the image planes are rotated about the voxel x axis while the slice origins still
advance along the table (affine column 2), as on a tilted gantry; the true voxel -> RAS mapping of the written
files is then :func:`tilted_affine_ras` (a sheared, non-orthogonal matrix).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

__all__ = [
    "CT_IMAGE_STORAGE",
    "TRANSFER_SYNTAXES",
    "VENDORS",
    "TIME_TAG_STYLES",
    "FILE_NAMINGS",
    "PRECONTRAST_STYLES",
    "DicomLayout",
    "tilted_affine_ras",
    "fov_mask",
    "write_ctp_dicom",
]

#: SOP Class UID of (classic, single-frame) CT Image Storage.
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: Layout name -> Transfer Syntax UID.
TRANSFER_SYNTAXES = {
    "implicit_le": ImplicitVRLittleEndian,
    "explicit_le": ExplicitVRLittleEndian,
    "jpeg_lossless": JPEGLosslessSV1,  # 1.2.840.10008.1.2.4.70
    "jpeg2000_lossless": JPEG2000Lossless,  # 1.2.840.10008.1.2.4.90
    "rle": RLELossless,  # 1.2.840.10008.1.2.5
    "jpegls_lossless": JPEGLSLossless,  # 1.2.840.10008.1.2.4.80
}
VENDORS = ("siemens", "ge", "toshiba", "philips")
PRECONTRAST_STYLES = ("none", "gap", "no_gap", "gap_same_protocol")
TIME_TAG_STYLES = ("acquisition_datetime", "acquisition_time", "content_time", "trigger_time", "temporal_position")
FILE_NAMINGS = ("plain", "uid", "noext_shuffled")

_STUDY_DATE = "20241231"  # New Year's Eve: the default start time also crosses a year boundary.
_UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's UID root, for test data only.


@dataclass
class DicomLayout:
    """How the files are laid out on disk and encoded (see the module docstring).

    vendor:
        ``"siemens"``: one series, unsigned 12-bit pixels, RescaleIntercept -1024.
        ``"ge"``: signed int16, RescaleIntercept 0, PixelPaddingValue -2000 outside a circular field of view,
        TemporalPositionIdentifier + NumberOfTemporalPositions.
        ``"toshiba"``: signed int16 with per-file RescaleSlope (1 or 0.5) and RescaleIntercept (0, -1024 or
        10.5), padding as a range (PixelPaddingValue -32768 .. PixelPaddingRangeLimit -31000).
        ``"philips"``: unsigned, RescaleIntercept -1000 (HU below -1000 are clipped), no padding.
    series_per_timepoint: every time point gets its own SeriesInstanceUID (and SeriesNumber).
    nested_folders: files go to random sub-folders 1-3 levels deep.
    file_naming: ``"plain"`` (IM0001.dcm, numbered in a shuffled order), ``"uid"`` (<SOPInstanceUID>.dcm),
        ``"noext_shuffled"`` (random hex names, no extension).
    extra_series: also write a 2-image localizer, a single-phase non-contrast head series (same frame of
        reference, different slice thickness) and a README.txt.
    transfer_syntax: one of :data:`TRANSFER_SYNTAXES`.
    gantry_tilt_deg: gantry tilt in degrees (GantryDetectorTilt); planes rotate about the voxel x axis.
    time_tags: which tags carry the timing: ``"acquisition_datetime"`` (AcquisitionDateTime),
        ``"acquisition_time"`` (AcquisitionDate + AcquisitionTime; the date is the study date for every file,
        as some scanners do, so a midnight crossing shows as a backwards jump), ``"content_time"``
        (ContentDate + ContentTime, date rolls over), ``"trigger_time"`` (TriggerTime in ms from the first
        frame) or ``"temporal_position"`` (TemporalPositionIdentifier x TemporalResolution only: uniform
        sampling, no per-slice stagger).
    start_time: HHMMSS of time 0 (default 23:59:50 so a one-minute scan crosses midnight).
    precontrast_series: a single-phase non-contrast series with *exactly* the CTP geometry (same positions,
        matrix, thickness, frame of reference), as scanners that write one series per time point put beside
        it: ``"gap"`` (120 kVp, another kernel and description, 60 s before frame 0), ``"no_gap"`` (same
        but one sampling interval before frame 0) or ``"gap_same_protocol"`` (the CTP's own description, kVp
        and kernel, 60 s before frame 0); ``"none"`` (default) writes nothing.
    n_slabs, slab_gap_mm, slab_series: a multi-slab (jog / toggle) acquisition: the slices are split into
        ``n_slabs`` consecutive slabs, slab k moved by ``k * slab_gap_mm`` along the slice normal (a gap, or an
        overlap when negative); with ``slab_series`` every slab is its own series (SeriesNumber 4 + k, or
        100 * (k + 1) + t with ``series_per_timepoint``). The time of every slice comes from ``times_s_tz``.
    patient_name, patient_id: fake identifiers (used to check that readers never leak them).
    """

    vendor: str = "siemens"
    series_per_timepoint: bool = False
    nested_folders: bool = False
    file_naming: str = "plain"
    extra_series: bool = False
    transfer_syntax: str = "explicit_le"
    gantry_tilt_deg: float = 0.0
    time_tags: str = "acquisition_datetime"
    start_time: str = "235950"
    patient_name: str = "PHANTOM^DEMO"
    patient_id: str = "PHANTOM001"
    precontrast_series: str = "none"
    n_slabs: int = 1
    slab_gap_mm: float = 0.0
    slab_series: bool = False

    def validate(self) -> None:
        """Raise ValueError on an unknown option."""
        if self.vendor not in VENDORS:
            raise ValueError(f"unknown vendor {self.vendor!r}; choose one of {VENDORS}")
        if self.file_naming not in FILE_NAMINGS:
            raise ValueError(f"unknown file_naming {self.file_naming!r}; choose one of {FILE_NAMINGS}")
        if self.transfer_syntax not in TRANSFER_SYNTAXES:
            raise ValueError(
                f"unknown transfer_syntax {self.transfer_syntax!r}; choose one of {tuple(TRANSFER_SYNTAXES)}"
            )
        if self.time_tags not in TIME_TAG_STYLES:
            raise ValueError(f"unknown time_tags {self.time_tags!r}; choose one of {TIME_TAG_STYLES}")
        if self.precontrast_series not in PRECONTRAST_STYLES:
            raise ValueError(f"unknown precontrast_series {self.precontrast_series!r}; choose one of "
                             f"{PRECONTRAST_STYLES}")
        if self.n_slabs < 1:
            raise ValueError("n_slabs must be >= 1")
        if len(self.start_time) < 6 or not self.start_time[:6].isdigit():
            raise ValueError(f"start_time must be HHMMSS, got {self.start_time!r}")


# ----------------------------------------------------------------------------------------------------------
# geometry helpers
# ----------------------------------------------------------------------------------------------------------
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def tilted_affine_ras(affine_ras: np.ndarray, gantry_tilt_deg: float) -> np.ndarray:
    """Voxel (x, y, z) -> RAS mm affine of data written with ``gantry_tilt_deg``.

    The column axis (affine column 1) is rotated by ``-gantry_tilt_deg`` about the row axis (column 0
    direction, oriented towards patient left, right-hand rule) -- the sign that makes GantryDetectorTilt
    agree with the tilt dcm2niix estimates from the slice vector. Column 2 (the table step between slices)
    and the origin are unchanged, so the result is sheared when the tilt is non-zero.
    """
    a = np.asarray(affine_ras, dtype=float).copy()
    if gantry_tilt_deg == 0:
        return a
    axis = a[:3, 0] / np.linalg.norm(a[:3, 0])
    if axis[0] > 0:  # rotate about the patient's left-pointing (LPS +x) direction whatever the row order
        axis = -axis
    th = -np.deg2rad(gantry_tilt_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(th) * k + (1 - np.cos(th)) * (k @ k)  # Rodrigues
    a[:3, 1] = rot @ a[:3, 1]
    return a


def fov_mask(ny: int, nx: int) -> np.ndarray:
    """Boolean (y, x) mask, True OUTSIDE the largest centred circle (the reconstructed field of view)."""
    yy, xx = np.mgrid[0:ny, 0:nx]
    cy, cx = (ny - 1) / 2.0, (nx - 1) / 2.0
    r = min(ny, nx) / 2.0
    return (yy - cy) ** 2 + (xx - cx) ** 2 > r**2


def _ds(v: float) -> str:
    """A number formatted as a valid DICOM DS string (<= 16 characters)."""
    return format_number_as_ds(float(v))


def _study_key(hu: np.ndarray, times: np.ndarray, affine_ras, layout: DicomLayout, seed: int, kvp: float) -> str:
    """SHA-256 of everything the written study depends on: the images, their times and geometry, the layout, the
    seed and the kVp.

    The UIDs are drawn from it, so two phantoms that differ in anything (noise, lesion, matrix, vendor ...) are two
    studies with their own StudyInstanceUID (and ctperf's ``study_id``), while the same inputs give the same UIDs.
    Images, times and geometry are rounded (0.1 HU, 1 us, 1 nm) so that last-bit floating-point differences
    between platforms do not change them.
    """
    h = hashlib.sha256(repr((dataclasses.asdict(layout), int(seed), float(kvp), hu.shape)).encode())
    h.update(np.round(np.asarray(times, dtype=np.float64), 6).tobytes())
    h.update(np.round(np.asarray(affine_ras, dtype=np.float64), 6).tobytes())
    for frame in hu:  # one frame at a time: no copy of the whole 4D array
        h.update(np.round(np.asarray(frame, dtype=np.float64), 1).tobytes())
    return h.hexdigest()


def _uid_factory(key: str):
    """new_uid(kind): deterministic UIDs drawn from ``key`` (:func:`_study_key`), numbered in the order asked for."""
    counter = [0]

    def new_uid(kind: str) -> str:
        counter[0] += 1
        return generate_uid(prefix=_UID_ROOT, entropy_srcs=[f"ctperf-writer:{key}:{kind}:{counter[0]}"])

    return new_uid


# ----------------------------------------------------------------------------------------------------------
# vendor pixel encodings
# ----------------------------------------------------------------------------------------------------------
@dataclass
class _Encoding:
    signed: bool
    bits_stored: int
    slope: float
    intercept: float
    padding_value: int | None = None
    padding_limit: int | None = None


def _encoding(vendor: str, hu_max: float, rng: np.random.Generator) -> _Encoding:
    """Per-file stored-value encoding of one image for a vendor."""
    if vendor == "siemens":
        bits = 12 if hu_max + 1024 <= 4095 else 16
        return _Encoding(False, bits, 1.0, -1024.0)
    if vendor == "ge":
        return _Encoding(True, 16, 1.0, 0.0, padding_value=-2000)
    if vendor == "toshiba":
        slope = float(rng.choice([1.0, 0.5]))
        intercept = float(rng.choice([0.0, -1024.0, 10.5]))
        if slope == 1.0 and intercept == 10.5:
            intercept = 10.0
        return _Encoding(True, 16, slope, intercept, padding_value=-32768, padding_limit=-31000)
    if vendor == "philips":
        return _Encoding(False, 16, 1.0, -1000.0)
    raise ValueError(vendor)


def _encode_pixels(hu_yx: np.ndarray, enc: _Encoding, outside: np.ndarray | None, rng) -> np.ndarray:
    """HU -> stored integer pixels (uint16 or int16) for one image."""
    stored = np.rint((np.asarray(hu_yx, dtype=np.float64) - enc.intercept) / enc.slope)
    if enc.signed:
        lo, hi = -(2 ** (enc.bits_stored - 1)), 2 ** (enc.bits_stored - 1) - 1
    else:
        lo, hi = 0, 2**enc.bits_stored - 1
    if enc.padding_value is not None:
        plo = min(enc.padding_value, enc.padding_limit if enc.padding_limit is not None else enc.padding_value)
        phi = max(enc.padding_value, enc.padding_limit if enc.padding_limit is not None else enc.padding_value)
        lo = max(lo, phi + 1)  # real pixels never fall in the padding range
    stored = np.clip(stored, lo, hi)
    if outside is not None and enc.padding_value is not None:
        if enc.padding_limit is None:
            stored[outside] = enc.padding_value
        else:
            stored[outside] = rng.integers(plo, phi + 1, size=int(outside.sum()))
    return stored.astype(np.int16 if enc.signed else np.uint16)


# ----------------------------------------------------------------------------------------------------------
# dataset construction
# ----------------------------------------------------------------------------------------------------------
_MANUFACTURER = {
    "siemens": ("SIEMENS", "SOMATOM Definition Flash"),
    "ge": ("GE MEDICAL SYSTEMS", "Revolution CT"),
    "toshiba": ("TOSHIBA", "Aquilion ONE"),
    "philips": ("Philips", "iCT 256"),
}


def _base_dataset(layout: DicomLayout, study: dict, sop_uid: str, series_uid: str, series_number: int,
                  description: str, image_type: list[str], kvp: float) -> Dataset:
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = TRANSFER_SYNTAXES[layout.transfer_syntax]
    meta.ImplementationClassUID = _UID_ROOT + "1"
    meta.ImplementationVersionName = "CTPERF_SYNTH"
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = image_type
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = _STUDY_DATE
    ds.SeriesDate = _STUDY_DATE
    ds.StudyTime = layout.start_time
    ds.SeriesTime = layout.start_time
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    manufacturer, model = _MANUFACTURER[layout.vendor]
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = model
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Synthetic stroke protocol"
    ds.SeriesDescription = description
    ds.PatientName = layout.patient_name
    ds.PatientID = layout.patient_id
    ds.PatientBirthDate = "19500101"
    ds.PatientSex = "O"
    ds.KVP = _ds(kvp)
    ds.StudyInstanceUID = study["study_uid"]
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.FrameOfReferenceUID = study["for_uid"]
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    return ds


def _set_geometry(ds: Dataset, row_dir, col_dir, ipp, dy: float, dx: float, thickness: float, ny: int, nx: int):
    ds.ImageOrientationPatient = [_ds(v) for v in (*row_dir, *col_dir)]
    ds.ImagePositionPatient = [_ds(v) for v in ipp]
    ds.PixelSpacing = [_ds(dy), _ds(dx)]
    ds.SliceThickness = _ds(thickness)
    ds.SliceLocation = _ds(float(np.dot(ipp, np.cross(row_dir, col_dir))))
    ds.Rows = ny
    ds.Columns = nx


def _set_pixels(ds: Dataset, stored: np.ndarray, enc: _Encoding):
    ds.BitsStored = enc.bits_stored
    ds.HighBit = enc.bits_stored - 1
    ds.PixelRepresentation = 1 if enc.signed else 0
    ds.RescaleIntercept = _ds(enc.intercept)
    ds.RescaleSlope = _ds(enc.slope)
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "80"
    if enc.padding_value is not None:
        vr = "SS" if enc.signed else "US"
        ds.add_new(0x00280120, vr, int(enc.padding_value))  # PixelPaddingValue
        if enc.padding_limit is not None:
            ds.add_new(0x00280121, vr, int(enc.padding_limit))  # PixelPaddingRangeLimit
    ds.PixelData = np.ascontiguousarray(stored).astype("<" + stored.dtype.str[1:], copy=False).tobytes()


def _fragment_jpeg_lossless(ds: Dataset, tmpdir: str) -> bytes:
    """Encode ``ds``'s native pixels as JPEG Lossless SV1 with GDCM and return the encapsulated PixelData."""
    import gdcm  # python-gdcm; pydicom has no JPEG Lossless encoder

    src = os.path.join(tmpdir, "native.dcm")
    dst = os.path.join(tmpdir, "jpeg.dcm")
    tmp = ds.copy()
    tmp.file_meta = ds.file_meta.copy()
    tmp.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    tmp.save_as(src, enforce_file_format=True)
    reader = gdcm.ImageReader()
    reader.SetFileName(src)
    if not reader.Read():
        raise RuntimeError("GDCM could not read the native image")
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    change.SetInput(reader.GetImage())
    if not change.Change():
        raise RuntimeError("GDCM could not encode JPEG Lossless")
    writer = gdcm.ImageWriter()
    writer.SetFileName(dst)
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    if not writer.Write():
        raise RuntimeError("GDCM could not write the JPEG Lossless image")
    return pydicom.dcmread(dst).PixelData


def _save(ds: Dataset, stored: np.ndarray, layout: DicomLayout, path: Path, tmpdir: str) -> None:
    """Encode the pixels in the layout's transfer syntax and write the file."""
    ts = layout.transfer_syntax
    if ts in ("implicit_le", "explicit_le"):
        pass
    elif ts == "jpeg_lossless":
        ds.PixelData = _fragment_jpeg_lossless(ds, tmpdir)
        ds["PixelData"].VR = "OB"
    else:
        ds.compress(TRANSFER_SYNTAXES[ts], stored, generate_instance_uid=False)
    ds.file_meta.TransferSyntaxUID = TRANSFER_SYNTAXES[ts]
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


# ----------------------------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------------------------
def _set_time(ds: Dataset, style: str, t0: _dt.datetime, t_s: float, t_index: int, n_t: int,
              resolution_ms: float, first_s: float) -> None:
    when = t0 + _dt.timedelta(seconds=float(t_s))
    if style == "acquisition_datetime":
        ds.AcquisitionDateTime = when.strftime("%Y%m%d%H%M%S.%f")
    elif style == "acquisition_time":
        ds.AcquisitionDate = _STUDY_DATE  # deliberately not rolled over at midnight
        ds.AcquisitionTime = when.strftime("%H%M%S.%f")
    elif style == "content_time":
        ds.ContentDate = when.strftime("%Y%m%d")
        ds.ContentTime = when.strftime("%H%M%S.%f")
    elif style == "trigger_time":
        ds.TriggerTime = _ds(round((t_s - first_s) * 1000.0, 3))
    elif style == "temporal_position":
        ds.TemporalPositionIdentifier = t_index + 1
        ds.NumberOfTemporalPositions = n_t
        ds.TemporalResolution = _ds(round(resolution_ms, 3))


# ----------------------------------------------------------------------------------------------------------
# file naming
# ----------------------------------------------------------------------------------------------------------
def _make_namer(layout: DicomLayout, out_dir: Path, rng: np.random.Generator, n_total: int):
    """Return name(sop_uid) -> Path following the layout's naming and folder options."""
    order = rng.permutation(n_total) + 1  # "plain" numbers are shuffled w.r.t. slice/time order
    folders = [Path(".")]
    if layout.nested_folders:
        folders = []
        for _ in range(4):
            depth = int(rng.integers(1, 4))
            folders.append(Path(*[f"{rng.integers(0, 16**4):04x}" for _ in range(depth)]))
    count = [0]

    def name(sop_uid: str) -> Path:
        i = count[0]
        count[0] += 1
        sub = folders[int(rng.integers(0, len(folders)))]
        if layout.file_naming == "plain":
            fname = f"IM{order[i] if i < n_total else i + 1:04d}.dcm"
        elif layout.file_naming == "uid":
            fname = f"{sop_uid}.dcm"
        else:
            fname = f"{rng.integers(0, 2**63):016x}"
        return out_dir / sub / fname

    return name


# ----------------------------------------------------------------------------------------------------------
# public entry point
# ----------------------------------------------------------------------------------------------------------
def write_ctp_dicom(hu_tzyx, times_s_tz, affine_ras, out_dir, layout: DicomLayout | None = None,
                    seed: int = 0, kvp: float = 80.0) -> list[Path]:
    """Write a CT perfusion acquisition as single-frame CT Image Storage files.

    Parameters
    ----------
    hu_tzyx : array (t, z, y, x)
        Hounsfield units (rounded to the vendor's stored integer precision when written).
    times_s_tz : array (t, z) or (t,)
        Acquisition time of every frame/slice in seconds (any origin; written relative to
        ``layout.start_time`` on 2024-12-31). A 1D array means all slices of a frame share its time.
    affine_ras : 4x4 array
        Voxel (x, y, z) -> RAS mm. With a gantry tilt the written geometry is
        :func:`tilted_affine_ras` of it.
    out_dir : path
        Created if missing.
    layout : DicomLayout
    seed : int
        Seeds file names, folder structure, InstanceNumber shuffling and per-file vendor rescales.  The UIDs
        depend on the seed and on every other input (images, times, geometry, layout, kVp): the same inputs give
        the same UIDs, different phantoms different studies.
    kvp : float
        Tube voltage written to KVP (kV).

    Returns
    -------
    list of Path
        The perfusion image files in (t, z) order, i.e. ``paths[t * n_z + z]``; extra series and the
        README are written but not returned.
    """
    layout = layout or DicomLayout()
    layout.validate()
    hu = np.asarray(hu_tzyx)
    if hu.ndim != 4:
        raise ValueError(f"hu_tzyx must be 4D (t, z, y, x), got shape {hu.shape}")
    n_t, n_z, n_y, n_x = hu.shape
    times = np.asarray(times_s_tz, dtype=float)
    if times.ndim == 1:
        times = np.repeat(times[:, None], n_z, axis=1)
    if layout.transfer_syntax == "jpeg2000_lossless" and min(n_y, n_x) < 32:
        raise ValueError("jpeg2000_lossless needs images of at least 32 x 32 pixels (6 wavelet resolutions)")
    if times.shape != (n_t, n_z):
        raise ValueError(f"times_s_tz must have shape (t, z) = {(n_t, n_z)}, got {times.shape}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    new_uid = _uid_factory(_study_key(hu, times, affine_ras, layout, seed, kvp))

    # geometry in LPS
    aff = tilted_affine_ras(affine_ras, layout.gantry_tilt_deg)
    lps = _RAS_TO_LPS @ aff
    dx, dy = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    row_dir, col_dir = lps[:3, 0] / dx, lps[:3, 1] / dy
    normal = np.cross(row_dir, col_dir)
    thickness = abs(float(np.dot(lps[:3, 2], normal)))
    slab_of = (np.arange(n_z) * layout.n_slabs) // n_z  # consecutive slabs of (nearly) equal size
    step_dir = lps[:3, 2] / np.linalg.norm(lps[:3, 2])
    ipps = [lps[:3, 3] + k * lps[:3, 2] + slab_of[k] * layout.slab_gap_mm * step_dir for k in range(n_z)]

    study = {"study_uid": new_uid("study"), "for_uid": new_uid("for")}
    t0 = _dt.datetime.strptime(_STUDY_DATE + layout.start_time[:6], "%Y%m%d%H%M%S")
    resolution_ms = 1000.0 * (times[-1, 0] - times[0, 0]) / max(n_t - 1, 1)
    outside = fov_mask(n_y, n_x) if layout.vendor in ("ge", "toshiba") else None
    hu_max = float(np.max(hu))

    # InstanceNumber deliberately does not follow slice order: siemens counts slices top-down,
    # ge uses a random permutation, the others number in acquisition order.
    if layout.vendor == "siemens":
        inst = np.array([[t * n_z + (n_z - 1 - z) + 1 for z in range(n_z)] for t in range(n_t)])
    elif layout.vendor == "ge":
        inst = (rng.permutation(n_t * n_z) + 1).reshape(n_t, n_z)
    else:
        inst = np.arange(1, n_t * n_z + 1).reshape(n_t, n_z)

    n_extra = 2 + max(n_z // 2, 2) if layout.extra_series else 0
    n_extra += n_z if layout.precontrast_series != "none" else 0
    namer = _make_namer(layout, out_dir, rng, n_t * n_z + n_extra)
    n_series_slabs = layout.n_slabs if layout.slab_series else 1
    ctp_series_uids = [new_uid("series") for _ in range(n_series_slabs)]
    paths: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="ctperf_dcmw_") as tmpdir:
        for t in range(n_t):
            if layout.series_per_timepoint:
                tp_uids = [new_uid("series") for _ in range(n_series_slabs)]
            for z in range(n_z):
                k = int(slab_of[z]) if layout.slab_series else 0
                if layout.series_per_timepoint:
                    series_uid, series_number = tp_uids[k], 100 * (k + 1) + t
                else:
                    series_uid, series_number = ctp_series_uids[k], 4 + k
                sop = new_uid("sop")
                ds = _base_dataset(layout, study, sop, series_uid, series_number, "CTP 4D Perfusion",
                                   ["ORIGINAL", "PRIMARY", "AXIAL"], kvp)
                ds.AcquisitionNumber = t + 1
                ds.InstanceNumber = int(inst[t, z])
                _set_geometry(ds, row_dir, col_dir, ipps[z], dy, dx, thickness, n_y, n_x)
                ds.SpacingBetweenSlices = _ds(thickness)
                ds.GantryDetectorTilt = _ds(layout.gantry_tilt_deg)
                ds.ConvolutionKernel = "H20f"
                _set_time(ds, layout.time_tags, t0, times[t, z], t, n_t, resolution_ms, times[0, 0])
                if layout.vendor == "ge" and "TemporalPositionIdentifier" not in ds:
                    ds.TemporalPositionIdentifier = t + 1
                    ds.NumberOfTemporalPositions = n_t
                enc = _encoding(layout.vendor, hu_max, rng)
                stored = _encode_pixels(hu[t, z], enc, outside, rng)
                _set_pixels(ds, stored, enc)
                path = namer(sop)
                _save(ds, stored, layout, path, tmpdir)
                paths.append(path)
        if layout.precontrast_series != "none":
            cadence = float(times[1, 0] - times[0, 0]) if n_t > 1 else 1.0
            same = layout.precontrast_series == "gap_same_protocol"
            before = cadence if layout.precontrast_series == "no_gap" else 60.0
            pc_uid = new_uid("series")
            for z in range(n_z):
                sop = new_uid("sop")
                ds = _base_dataset(layout, study, sop, pc_uid, 3, "CTP 4D Perfusion" if same else "Head non-contrast",
                                   ["ORIGINAL", "PRIMARY", "AXIAL"], kvp if same else 120.0)
                ds.InstanceNumber = z + 1
                _set_geometry(ds, row_dir, col_dir, ipps[z], dy, dx, thickness, n_y, n_x)
                ds.GantryDetectorTilt = _ds(layout.gantry_tilt_deg)
                ds.ConvolutionKernel = "H20f" if same else "H31s"
                _set_time(ds, layout.time_tags, t0, times[0, z] - before, 0, 1, resolution_ms, times[0, 0])
                enc = _encoding(layout.vendor, hu_max, rng)
                stored = _encode_pixels(hu[0, z] - 5.0, enc, outside, rng)
                _set_pixels(ds, stored, enc)
                _save(ds, stored, layout, namer(sop), tmpdir)
        if layout.extra_series:
            _write_extras(layout, study, new_uid, namer, tmpdir, lps, dx, dy, row_dir, col_dir, normal,
                          thickness, n_y, n_x, n_z, t0, kvp, rng)
            (out_dir / "README.txt").write_text("Synthetic CT perfusion export written by ctperf.\n")
    return paths


def _write_extras(layout, study, new_uid, namer, tmpdir, lps, dx, dy, row_dir, col_dir, normal, thickness,
                  n_y, n_x, n_z, t0, kvp, rng) -> None:
    """A 2-image localizer and a single-phase non-contrast series (same frame of reference)."""
    # localizer: one coronal-like and one sagittal-like image, 64 x 48 matrix
    loc_uid = new_uid("series")
    centre = lps[:3, 3] + 0.5 * (n_x - 1) * lps[:3, 0] + 0.5 * (n_y - 1) * lps[:3, 1]
    for i, (r, c) in enumerate([(row_dir, -normal), (col_dir, -normal)]):
        sop = new_uid("sop")
        ds = _base_dataset(layout, study, sop, loc_uid, 1, "Topogram 0.6 T20f",
                           ["ORIGINAL", "PRIMARY", "LOCALIZER"], 120.0)
        ds.InstanceNumber = i + 1
        ipp = centre - 32 * 2.0 * r - 24 * 2.0 * c
        _set_geometry(ds, r, c, ipp, 2.0, 2.0, 0.6, 48, 64)
        signed = layout.vendor in ("ge", "toshiba")
        enc = _Encoding(signed, 16, 1.0, 0.0 if signed else -1024.0)
        img = rng.normal(0, 300, size=(48, 64))
        stored = _encode_pixels(img, enc, None, rng)
        _set_pixels(ds, stored, enc)
        _set_time(ds, "acquisition_datetime", t0, -300.0, 0, 1, 0.0, 0.0)
        _save(ds, stored, layout, namer(sop), tmpdir)
    # non-contrast head: thicker slices covering a larger range, same matrix and orientation
    nc_uid = new_uid("series")
    nc_thick = 2.0 * thickness + 1.0
    n_nc = max(n_z // 2, 2)
    for k in range(n_nc):
        sop = new_uid("sop")
        ds = _base_dataset(layout, study, sop, nc_uid, 2, "Head non-contrast 5mm",
                           ["ORIGINAL", "PRIMARY", "AXIAL"], 120.0)
        ds.InstanceNumber = k + 1
        ipp = lps[:3, 3] + (k - 1) * nc_thick * normal + 0.37 * normal
        _set_geometry(ds, row_dir, col_dir, ipp, dy, dx, nc_thick, n_y, n_x)
        enc = _encoding(layout.vendor, 1000.0, rng)
        img = rng.normal(30, 10, size=(n_y, n_x))
        stored = _encode_pixels(img, enc, fov_mask(n_y, n_x) if enc.padding_value is not None else None, rng)
        _set_pixels(ds, stored, enc)
        _set_time(ds, "acquisition_datetime", t0, -120.0 + k, 0, 1, 0.0, 0.0)
        _save(ds, stored, layout, namer(sop), tmpdir)
