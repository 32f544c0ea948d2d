"""Find and load the CT perfusion acquisition in a real-world DICOM folder.

Pipeline
--------
1. **Scan** every file below the folder (any names, any depth). Headers are parsed without pixel data
   (``stop_before_pixels``); files that are not DICOM are skipped and counted. The byte offset of each file's
   PixelData element is remembered so native (uncompressed) pixels can later be read with one ``seek``.
2. **Group** image files by Study + FrameOfReference + orientation + matrix + pixel spacing + slice
   thickness (scanners may give every time point its own SeriesInstanceUID). Inside such a key, multi-phase
   series stand alone; single-phase series with (nearly) the same slice positions are merged.
3. **Choose** the CT perfusion group: many slice positions each repeated over >= 5 time points (localizers
   and single-phase series never qualify), or the group holding ``series=`` (a SeriesInstanceUID or a
   SeriesNumber).
4. **Order** slices by ImagePositionPatient projected on the slice normal (cross product of the
   ImageOrientationPatient vectors) and frames by TemporalPositionIdentifier or acquisition time; build
   ``times_s[t, z]`` from the best timing tags (midnight-safe) and the voxel -> RAS affine (sheared for a
   gantry tilt).
5. **Decode** only the chosen files, straight into one preallocated float32 ``(t, z, y, x)`` array, applying
   every file's own RescaleSlope/Intercept; PixelPaddingValue (and PixelPaddingRangeLimit) become the
   ``outside_fov`` mask, where HU is set to -1024.

All user-input problems raise :class:`ctperf.errors.DicomError` with a one-line message. Nothing returned here
contains patient identifiers (name, ID, birth date).
"""

from __future__ import annotations

import os
import re
import struct
import threading
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.errors import InvalidDicomError

from ctperf.errors import DicomError
from ctperf.study import AcquisitionMeta, CTPStudy

__all__ = ["load_ctp", "scan_folder", "inspect_folder", "FolderScan", "SeriesGroup", "MIN_TIMEPOINTS"]

#: A group qualifies as CT perfusion when each slice position is repeated at least this many times.
MIN_TIMEPOINTS = 5
#: Two slice positions closer than this along the slice normal are the same position (mm).
POSITION_TOL_MM = 0.05
#: Plausible interval between CT perfusion time points (s); outside it the time axis is refused.
MIN_FRAME_INTERVAL_S, MAX_FRAME_INTERVAL_S = 0.3, 10.0
#: Two CTP candidates are equally plausible (``run`` refuses to guess) when the smaller has at least this
#: fraction of the larger's files (and both are original, or both derived).
EQUALLY_PLAUSIBLE_FRACTION = 0.8
#: Slice steps may differ from the end-to-end mean by this fraction of a step; more is refused (gap, jog slabs).
SLICE_STEP_TOL = 0.1
#: HU given to voxels outside the reconstructed field of view (pixel padding).
OUTSIDE_FOV_HU = -1024.0

_NATIVE_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
_IMPLICIT_LE = "1.2.840.10008.1.2"
_MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"
_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"

_HEADER_TAGS = [
    "SpecificCharacterSet", "ImageType", "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID",
    "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality", "FrameOfReferenceUID",
    "ImageOrientationPatient", "ImagePositionPatient", "Rows", "Columns", "PixelSpacing", "SliceThickness",
    "Manufacturer", "ManufacturerModelName", "KVP", "NumberOfFrames", "GantryDetectorTilt",
    "AcquisitionDateTime", "AcquisitionDate", "AcquisitionTime", "ContentDate", "ContentTime", "TriggerTime",
    "TemporalPositionIdentifier", "NumberOfTemporalPositions", "TemporalResolution", "InstanceNumber",
    "AcquisitionNumber", "SamplesPerPixel", "BitsAllocated", "BitsStored", "PixelRepresentation",
    "RescaleSlope", "RescaleIntercept", "PixelPaddingValue", "PixelPaddingRangeLimit", "ConvolutionKernel",
]

#: Timing sources, best first: (name, attribute of _Header).
_TIME_SOURCES = (
    ("AcquisitionDateTime", "t_acq_datetime"),
    ("AcquisitionTime", "t_acq_time"),
    ("ContentTime", "t_content_time"),
    ("TriggerTime", "t_trigger"),
    ("TemporalPositionIdentifier x TemporalResolution", "t_temporal"),
)


# ----------------------------------------------------------------------------------------------------------
# header records
# ----------------------------------------------------------------------------------------------------------
@dataclass
class _Header:
    """What ctperf needs from one image file (no patient identifiers)."""

    path: str
    transfer_syntax: str
    pixel_offset: int
    sop_uid: str = ""
    study_uid: str = ""
    series_uid: str = ""
    series_number: int | None = None
    series_description: str = ""
    modality: str = ""
    for_uid: str = ""
    image_type: tuple[str, ...] = ()
    iop: tuple[float, ...] | None = None
    ipp: tuple[float, float, float] | None = None
    rows: int = 0
    cols: int = 0
    spacing: tuple[float, float] | None = None  # DICOM order: (row spacing, column spacing), mm
    thickness: float | None = None
    manufacturer: str = ""
    model: str = ""
    kvp: float | None = None
    n_frames: int = 1
    tilt: float | None = None
    kernel: str = ""
    instance_number: int | None = None
    acquisition_number: int | None = None
    samples_per_pixel: int = 1
    bits_allocated: int = 16
    bits_stored: int = 16
    signed: bool = False
    slope: float = 1.0
    intercept: float = 0.0
    padding_value: int | None = None
    padding_limit: int | None = None
    # time sources: seconds of day for clock tags, seconds for the relative ones, None when absent
    t_acq_datetime: float | None = None
    t_acq_time: float | None = None
    t_content_time: float | None = None
    t_trigger: float | None = None
    t_temporal: float | None = None
    tpi: int | None = None

    @property
    def is_localizer(self) -> bool:
        return any("LOCALIZER" in s.upper() for s in self.image_type)


def _tm_seconds(value: Any) -> float | None:
    """DICOM TM ('HHMMSS.frac', also 'HH:MM:SS') -> seconds since midnight, None if unparsable."""
    s = str(value or "").strip().replace(":", "")
    if len(s) < 2:
        return None
    try:
        hh = int(s[0:2])
        mm = int(s[2:4]) if len(s) >= 4 else 0
        ss = float(s[4:]) if len(s) > 4 else 0.0
    except ValueError:
        return None
    return hh * 3600.0 + mm * 60.0 + ss


def _dt_seconds(value: Any) -> float | None:
    """DICOM DT ('YYYYMMDDHHMMSS.frac[&ZZXX]') -> seconds since midnight of its day, None if no time part."""
    s = str(value or "").strip()
    for sign in "+-":
        if sign in s[8:]:
            s = s[: 8 + s[8:].index(sign)]
    return _tm_seconds(s[8:]) if len(s) > 8 else None


def _num(value: Any, kind=float):
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        return None


# -- fast path: a minimal reader of the top-level elements of little-endian files ---------------------------
_PIXEL_DATA_TAG = 0x7FE00010
_KEYWORD_TAGS = {tag_for_keyword(kw): kw for kw in _HEADER_TAGS}
_US_KEYWORDS = {"Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored", "PixelRepresentation"}
_PADDING_KEYWORDS = {"PixelPaddingValue", "PixelPaddingRangeLimit"}
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_SLOW_SYNTAXES = {"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}  # big endian, deflated: use pydicom
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


class _NeedSlowPath(Exception):
    """The fast reader met something it does not handle; parse the file with pydicom instead."""


class _Buffer:
    """File bytes read lazily in large chunks."""

    def __init__(self, fp):
        self.fp = fp
        self.data = fp.read(65536)

    def ensure(self, end: int) -> None:
        if end > len(self.data):
            more = self.fp.read(max(end - len(self.data), 1 << 20))
            self.data += more
            if end > len(self.data):
                raise EOFError


def _element_header(buf: _Buffer, pos: int, explicit: bool) -> tuple[int, bytes | None, int, int]:
    """(tag, VR or None, value length, header size) of the element starting at ``pos``."""
    buf.ensure(pos + 8)
    d = buf.data
    group, elem = struct.unpack_from("<HH", d, pos)
    tag = (group << 16) | elem
    if group == 0xFFFE:  # item / delimiters never carry a VR
        return tag, None, struct.unpack_from("<I", d, pos + 4)[0], 8
    if not explicit:
        return tag, None, struct.unpack_from("<I", d, pos + 4)[0], 8
    vr = bytes(d[pos + 4 : pos + 6])
    if vr in _LONG_VRS:
        buf.ensure(pos + 12)
        return tag, vr, struct.unpack_from("<I", d, pos + 8)[0], 12
    if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
        raise _NeedSlowPath("implicit element in an explicit-VR file")
    return tag, vr, struct.unpack_from("<H", d, pos + 6)[0], 8


def _skip_undefined(buf: _Buffer, pos: int, explicit: bool) -> int:
    """Skip the items of an undefined-length sequence starting at ``pos``; return the position after it."""
    while True:
        tag, _, length, hdr = _element_header(buf, pos, explicit)
        pos += hdr
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM:
            raise _NeedSlowPath("unexpected element in a sequence")
        if length != _UNDEFINED:
            pos += length
            continue
        while True:  # elements of an undefined-length item
            tag, _, length, hdr = _element_header(buf, pos, explicit)
            pos += hdr
            if tag == _ITEM_END:
                break
            pos = _skip_undefined(buf, pos, explicit) if length == _UNDEFINED else pos + length


def _decode_text(raw: bytes):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    text = text.rstrip("\x00 ").strip()
    return text.split("\\") if "\\" in text else text


def _fast_header_values(fp) -> tuple[str, int, dict]:
    """(transfer syntax, PixelData offset, {keyword: value}) of a Part-10 little-endian file."""
    buf = _Buffer(fp)
    if len(buf.data) < 132 or buf.data[128:132] != b"DICM":
        raise _NeedSlowPath("no preamble")
    pos, ts = 132, None
    while True:  # file meta information (explicit VR little endian)
        buf.ensure(pos + 8)
        if struct.unpack_from("<H", buf.data, pos)[0] != 0x0002:
            break
        tag, vr, length, hdr = _element_header(buf, pos, True)
        buf.ensure(pos + hdr + length)
        if tag == 0x00020010:
            ts = buf.data[pos + hdr : pos + hdr + length].decode("ascii").rstrip("\x00 ")
        pos += hdr + length
    if ts is None or ts in _SLOW_SYNTAXES:
        raise _NeedSlowPath("transfer syntax")
    explicit = ts != _IMPLICIT_LE
    raw: dict[int, tuple[bytes | None, bytes]] = {}
    offset = None
    while True:
        try:
            tag, vr, length, hdr = _element_header(buf, pos, explicit)
        except EOFError:
            break  # no pixel data
        if tag == _PIXEL_DATA_TAG:
            offset = pos
            break
        if length == _UNDEFINED:
            if vr not in (None, b"SQ", b"UN"):
                raise _NeedSlowPath("undefined length")
            pos = _skip_undefined(buf, pos + hdr, explicit)
            continue
        if tag in _KEYWORD_TAGS:
            buf.ensure(pos + hdr + length)
            raw[tag] = (vr, bytes(buf.data[pos + hdr : pos + hdr + length]))
        pos += hdr + length
    values: dict[str, Any] = {}
    pixel_rep = 0
    for tag, (vr, data) in sorted(raw.items()):
        kw = _KEYWORD_TAGS[tag]
        if kw in _US_KEYWORDS or kw in _PADDING_KEYWORDS:
            if len(data) < 2:
                continue
            signed = vr == b"SS" or (vr is None and kw in _PADDING_KEYWORDS and pixel_rep == 1)
            values[kw] = struct.unpack_from("<h" if signed else "<H", data)[0]
            if kw == "PixelRepresentation":
                pixel_rep = values[kw]
        elif vr in (None, b"AE", b"AS", b"CS", b"DA", b"DS", b"DT", b"IS", b"LO", b"LT", b"PN", b"SH", b"ST",
                    b"TM", b"UC", b"UI", b"UT"):
            values[kw] = _decode_text(data)
        else:
            raise _NeedSlowPath(f"VR {vr!r} for {kw}")
    return ts, (offset if offset is not None else -1), values


def _read_header(path: str) -> tuple[str, _Header | None]:
    """Parse one file. Returns (status, header) with status in ok / non_dicom / non_image / multiframe /
    unreadable (damaged, I/O error) / no_permission.

    A minimal reader handles ordinary little-endian Part-10 files (about 20x faster than pydicom);
    anything it does not recognise is parsed with pydicom.
    """
    try:
        with open(path, "rb") as fp:
            try:
                ts, offset, values = _fast_header_values(fp)
                return _header_from(values.get, path, ts, offset)
            except (_NeedSlowPath, EOFError, struct.error, UnicodeDecodeError):
                fp.seek(0)
            try:
                ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
            except InvalidDicomError:
                fp.seek(0)
                head = fp.read(8)
                # a raw dataset without preamble starts with a group 0x0008 (or 0x0002) little-endian tag
                if len(head) < 8 or head[:2] not in (b"\x08\x00", b"\x02\x00") or head[3] != 0:
                    return "non_dicom", None
                fp.seek(0)
                ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=_HEADER_TAGS, force=True)
            offset = fp.tell()
    except PermissionError:
        return "no_permission", None
    except (InvalidDicomError, EOFError):
        return "non_dicom", None
    except OSError:
        return "unreadable", None
    except Exception:  # noqa: BLE001 - any parse failure of a damaged file
        return "unreadable", None
    ts = str(ds.file_meta.get("TransferSyntaxUID", _IMPLICIT_LE)) if hasattr(ds, "file_meta") else _IMPLICIT_LE
    return _header_from(ds.get, path, ts, offset)


def _as_list(v) -> list:
    if v is None:
        return []
    if isinstance(v, (list, tuple, pydicom.multival.MultiValue)):
        return list(v)
    return [v]


def _header_from(get: Callable[[str], Any], path: str, ts: str, offset: int) -> tuple[str, _Header | None]:
    """Build a :class:`_Header` from a keyword -> value getter (pydicom Dataset.get or the fast reader's dict)."""
    try:
        sop_class = str(get("SOPClassUID") or "")
        # a CT image without matrix or geometry is a damaged (e.g. truncated) file, not another kind of object
        missing = "unreadable" if sop_class == _CT_IMAGE_STORAGE else "non_image"
        if sop_class == _MEDIA_DIRECTORY or get("Rows") is None:
            return missing, None
        h = _Header(path=path, transfer_syntax=ts, pixel_offset=offset)
        h.n_frames = _num(get("NumberOfFrames"), int) or 1
        if h.n_frames > 1:
            return "multiframe", None
        iop, ipp, spacing = (
            _as_list(get(k)) for k in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing")
        )
        if len(iop) != 6 or len(ipp) != 3 or len(spacing) < 2:
            return missing, None
        h.iop = tuple(float(v) for v in iop)
        h.ipp = tuple(float(v) for v in ipp)
        h.spacing = (float(spacing[0]), float(spacing[1]))
        h.sop_uid = str(get("SOPInstanceUID") or "")
        h.study_uid = str(get("StudyInstanceUID") or "")
        h.series_uid = str(get("SeriesInstanceUID") or "")
        h.series_number = _num(get("SeriesNumber"), int)
        h.series_description = str(get("SeriesDescription") or "")
        h.modality = str(get("Modality") or "")
        h.for_uid = str(get("FrameOfReferenceUID") or "")
        h.image_type = tuple(str(v) for v in _as_list(get("ImageType")))
        h.rows, h.cols = int(get("Rows")), int(get("Columns"))
        h.thickness = _num(get("SliceThickness"))
        h.manufacturer = str(get("Manufacturer") or "")
        h.model = str(get("ManufacturerModelName") or "")
        h.kvp = _num(get("KVP"))
        h.tilt = _num(get("GantryDetectorTilt"))
        h.instance_number = _num(get("InstanceNumber"), int)
        h.acquisition_number = _num(get("AcquisitionNumber"), int)
        h.kernel = "\\".join(str(v) for v in _as_list(get("ConvolutionKernel")))
        h.samples_per_pixel = _num(get("SamplesPerPixel"), int) or 1
        h.bits_allocated = _num(get("BitsAllocated"), int) or 16
        h.bits_stored = _num(get("BitsStored"), int) or h.bits_allocated
        h.signed = (_num(get("PixelRepresentation"), int) or 0) == 1
        slope = _num(get("RescaleSlope"))
        h.slope = 1.0 if slope is None or slope == 0 else slope
        h.intercept = _num(get("RescaleIntercept")) or 0.0
        for attr, kw in (("padding_value", "PixelPaddingValue"), ("padding_limit", "PixelPaddingRangeLimit")):
            v = _num(get(kw), int)
            if v is not None and h.signed and v >= 2 ** (h.bits_allocated - 1):
                v -= 2**h.bits_allocated  # read as US in an implicit-VR file
            setattr(h, attr, v)
        h.t_acq_datetime = _dt_seconds(get("AcquisitionDateTime"))
        h.t_acq_time = _tm_seconds(get("AcquisitionTime"))
        h.t_content_time = _tm_seconds(get("ContentTime"))
        trig = _num(get("TriggerTime"))
        h.t_trigger = None if trig is None else trig / 1000.0
        h.tpi = _num(get("TemporalPositionIdentifier"), int)
        res = _num(get("TemporalResolution"))
        if h.tpi is not None and res is not None:
            h.t_temporal = (h.tpi - 1) * res / 1000.0
        return "ok", h
    except Exception:  # noqa: BLE001 - malformed values
        return "unreadable", None


def _list_files(root: Path) -> tuple[list[str], list[tuple[str, OSError]]]:
    """Every file below ``root`` (sorted) and the folders that could not be listed (path, error)."""
    out: list[str] = []
    failed: list[tuple[str, OSError]] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: failed.append((e.filename, e))):
        dirnames.sort()
        out.extend(os.path.join(dirpath, f) for f in sorted(filenames))
    return out, failed


def _read_all_headers(files: list[str]) -> list[tuple[str, _Header | None]]:
    """Parse every file's header (the fast reader makes this ~0.2 ms per file, so no worker pool is needed)."""
    return [_read_header(p) for p in files]


# ----------------------------------------------------------------------------------------------------------
# grouping
# ----------------------------------------------------------------------------------------------------------
@dataclass
class SeriesGroup:
    """Image files that share one geometry; a candidate acquisition (maybe spanning several series)."""

    headers: list[_Header]
    description: str = ""
    modality: str = ""
    series_instance_uids: list[str] = field(default_factory=list)
    series_numbers: list[int] = field(default_factory=list)
    n_slices: int = 0
    n_timepoints: int = 0
    is_localizer: bool = False
    is_ctp: bool = False
    #: Why these files form their own group although they share the geometry of another one (protocol or
    #: cadence differs), or "".
    note: str = ""
    #: Why this group is not the analysed CT perfusion ("" for the chosen one).
    excluded_reason: str = ""
    #: Time span (s) of the group's acquisition clock times and the first one (seconds of the day), or None.
    span_s: float | None = None
    first_time_s: float | None = None
    #: Value of ``--series`` that selects exactly this group (a unique SeriesNumber or UID prefix).
    series_option: str = ""
    short_uid: str = ""

    @property
    def n_files(self) -> int:
        return len(self.headers)

    def row(self) -> dict:
        """Strict-JSON-able description (no patient identifiers)."""
        first = None
        if self.first_time_s is not None:
            s = int(self.first_time_s) % 86400
            first = f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
        return {
            "description": self.description,
            "modality": self.modality,
            "series_numbers": list(self.series_numbers),
            "short_uid": self.short_uid,
            "series_option": self.series_option,
            "n_series": len(self.series_instance_uids),
            "n_files": self.n_files,
            "n_slices": self.n_slices,
            "n_timepoints": self.n_timepoints,
            "span_s": None if self.span_s is None else round(self.span_s, 2),
            "first_acquisition_time": first,
            "is_localizer": self.is_localizer,
            "is_ctp": self.is_ctp,
            "excluded_reason": self.excluded_reason or None,
        }


@dataclass
class FolderScan:
    """Result of :func:`scan_folder`: every image group found and which one is the CT perfusion."""

    root: Path
    groups: list[SeriesGroup]
    ctp_index: int | None
    n_files_total: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    #: Files (paths relative to ``root``) and folders that could not be read, by reason.
    problems: dict[str, list[str]] = field(default_factory=dict)
    #: Indices of groups that are equally plausible CT perfusion acquisitions (empty when the choice is clear).
    ambiguous: list[int] = field(default_factory=list)

    @property
    def ctp(self) -> SeriesGroup | None:
        return None if self.ctp_index is None else self.groups[self.ctp_index]

    def summary(self) -> str:
        """One-line list of the groups, e.g. for error messages."""
        parts = [
            f"#{','.join(map(str, g.series_numbers)) or '?'} '{g.description}' "
            f"({g.n_slices} slices x {g.n_timepoints} times)"
            for g in self.groups[:6]
        ]
        more = f" and {len(self.groups) - 6} more" if len(self.groups) > 6 else ""
        return "; ".join(parts) + more

    def problem_note(self) -> str:
        """'N file(s) could not be read (e.g. name: reason)' or '' when every file was read."""
        n = sum(len(v) for v in self.problems.values())
        if not n:
            return ""
        reason, names = next((k, v) for k, v in self.problems.items() if v)
        return f"{n} file(s)/folder(s) could not be read (e.g. {names[0]}: {_PROBLEM_TEXT[reason]})"


_PROBLEM_TEXT = {"no_permission": "permission denied", "unreadable": "damaged or unreadable DICOM",
                 "folder": "folder cannot be opened"}


def _unit_normal(iop) -> np.ndarray:
    r, c = np.asarray(iop[:3]), np.asarray(iop[3:])
    n = np.cross(r, c)
    return n / (np.linalg.norm(n) or 1.0)


def _position_ids(headers: list[_Header]) -> tuple[np.ndarray, np.ndarray]:
    """Cluster files by slice position along the normal. Returns (cluster id per file, cluster centre mm)."""
    normal = _unit_normal(headers[0].iop)
    proj = np.array([h.ipp for h in headers]) @ normal
    order = np.argsort(proj, kind="stable")
    new = np.concatenate([[0], (np.diff(proj[order]) > POSITION_TOL_MM).astype(int)])
    ids_sorted = np.cumsum(new)
    ids = np.empty(len(headers), dtype=int)
    ids[order] = ids_sorted
    centres = np.bincount(ids, weights=proj) / np.bincount(ids)
    return ids, centres


def _is_original(h: _Header) -> bool:
    return not h.image_type or h.image_type[0].upper() != "DERIVED"


def _group_key(h: _Header):
    """Images that can belong to one acquisition share this key (derived images never join original ones)."""
    return (
        h.study_uid, h.for_uid, h.modality, _is_original(h),
        tuple(np.round(h.iop, 3)), h.rows, h.cols,
        tuple(np.round(h.spacing, 3)), None if h.thickness is None else round(h.thickness, 2),
    )


def _protocol(h: _Header) -> tuple[str, int | None, str]:
    """(description with digits masked, kVp, reconstruction kernel): equal for every time point of one CTP."""
    desc = re.sub(r"\d+", "#", " ".join(h.series_description.lower().split()))
    return desc, None if h.kvp is None else int(round(h.kvp)), h.kernel.strip().upper()


def _protocol_difference(a: tuple, b: tuple) -> str:
    names = ("description", "kVp", "kernel")
    return ", ".join(f"{n} {x!r} vs {y!r}" for n, x, y in zip(names, a, b) if x != y)


def _clock_s(h: _Header) -> float | None:
    """Acquisition clock time of one file (seconds of the day) from the best clock tag present, or None."""
    for v in (h.t_acq_datetime, h.t_acq_time, h.t_content_time):
        if v is not None:
            return v
    return None


def _unwrap_day(v: np.ndarray, ref: float) -> np.ndarray:
    """Seconds of the day -> seconds relative to ``ref``, midnight-safe for spans < 12 h."""
    return np.mod(np.asarray(v, float) - ref + 43200.0, 86400.0) - 43200.0


def _screen_series(members: list[_Header], series: list[tuple[str, list[int]]]
                   ) -> list[tuple[list[int], str]]:
    """Split single-phase series of one geometry into acquisitions: one per protocol, then series acquired
    far outside the cadence of the others (a lone earlier non-contrast scan) split off.

    Returns [(member indices, note)] with note "" for the main acquisition of each protocol.
    """
    prot = {uid: _protocol(members[idx[0]]) for uid, idx in series}
    by_prot: dict[tuple, list[tuple[str, list[int]]]] = defaultdict(list)
    for uid, idx in series:
        by_prot[prot[uid]].append((uid, idx))
    ranked = sorted(by_prot, key=lambda p: (-len(by_prot[p]), -sum(len(i) for _, i in by_prot[p])))
    main = ranked[0]
    out: list[tuple[list[int], str]] = []
    for p in ranked:
        note = "" if p == main else (
            f"same geometry as a {len(by_prot[main])}-series acquisition but another protocol "
            f"({_protocol_difference(p, main)})")
        kept = list(by_prot[p])
        times = {uid: min((t for t in (_clock_s(members[i]) for i in idx) if t is not None), default=None)
                 for uid, idx in kept}
        if len(kept) >= 3 and all(t is not None for t in times.values()):
            ref = times[kept[0][0]]
            rel = {uid: float(_unwrap_day(t, ref)) for uid, t in times.items()}
            kept.sort(key=lambda s: rel[s[0]])
            while len(kept) >= 3:
                gaps = np.diff([rel[u] for u, _ in kept])
                for end, gap, others in ((0, gaps[0], gaps[1:]), (-1, gaps[-1], gaps[:-1])):
                    cadence = float(np.median(others))
                    if gap > max(MAX_FRAME_INTERVAL_S, 3.0 * cadence):
                        _, idx = kept.pop(end)
                        where = "before the first" if end == 0 else "after the last"
                        out.append((idx, f"acquired {gap:.0f} s {where} time point of the series of the same "
                                         f"geometry (their cadence is {cadence:.1f} s)"))
                        break
                else:
                    break
        if kept:
            out.append(([i for _, idx in kept for i in idx], note))
    return out


def _group_headers(headers: list[_Header]) -> list[tuple[list[_Header], str]]:
    """Split image headers into acquisition groups (see module docstring, step 2); returns (headers, note)."""
    by_key: dict[Any, list[_Header]] = defaultdict(list)
    for h in headers:
        by_key[_group_key(h)].append(h)
    groups: list[tuple[list[_Header], str]] = []
    for members in by_key.values():
        ids, _ = _position_ids(members)
        by_series: dict[str, list[int]] = defaultdict(list)
        for i, h in enumerate(members):
            by_series[h.series_uid].append(i)
        series = []
        for uid, idx in by_series.items():
            counts = Counter(ids[idx].tolist())
            series.append((uid, idx, set(counts), max(counts.values())))
        series.sort(key=lambda s: (-len(s[2]), s[0]))
        # (positions, [(uid, member indices)], merge allowed)
        subgroups: list[tuple[set, list[tuple[str, list[int]]], bool]] = []
        for uid, idx, pos, max_count in series:
            single_phase = max_count == 1
            for gpos, gser, mergeable in subgroups:
                if single_phase and mergeable and pos <= gpos and len(pos) >= 0.5 * len(gpos):
                    gser.append((uid, idx))
                    break
            else:
                subgroups.append((set(pos), [(uid, idx)], single_phase))
        for _, gser, mergeable in subgroups:
            parts = _screen_series(members, gser) if mergeable and len(gser) > 1 else \
                [([i for _, idx in gser for i in idx], "")]
            groups.extend(([members[i] for i in idx], note) for idx, note in parts)
    return groups


def _describe(group_headers: list[_Header], note: str = "") -> SeriesGroup:
    ids, _ = _position_ids(group_headers)
    counts = np.bincount(ids)
    g = SeriesGroup(headers=group_headers, note=note)
    first = min(group_headers, key=lambda h: (h.series_number if h.series_number is not None else 1 << 30))
    g.description = first.series_description
    g.modality = first.modality
    seen: dict[str, int | None] = {}
    for h in sorted(group_headers, key=lambda h: (h.series_number if h.series_number is not None else 1 << 30)):
        seen.setdefault(h.series_uid, h.series_number)
    g.series_instance_uids = list(seen)
    g.series_numbers = sorted({n for n in seen.values() if n is not None})
    g.n_slices = int(len(counts))
    g.n_timepoints = int(counts.max())
    g.is_localizer = any(h.is_localizer for h in group_headers)
    clock = [c for c in (_clock_s(h) for h in group_headers) if c is not None]
    if clock:
        rel = _unwrap_day(clock, clock[0])
        g.span_s = float(np.ptp(rel))
        g.first_time_s = float((clock[0] + rel.min()) % 86400.0)
    return g


def _is_ctp_candidate(g: SeriesGroup) -> bool:
    return (not g.is_localizer and g.modality in ("CT", "") and g.n_slices >= 2
            and g.n_timepoints >= MIN_TIMEPOINTS)


def _why_not(g: SeriesGroup, chosen: SeriesGroup | None) -> str:
    """Why a group is not the analysed CT perfusion (for the inspect table, metrics and the log)."""
    if g.note:
        return g.note
    if g.is_localizer:
        return "localizer"
    if g.modality not in ("CT", ""):
        return f"modality {g.modality}"
    if g.n_timepoints == 1:
        return "single time point"
    if g.n_slices < 2:
        return "single slice position"
    if g.n_timepoints < MIN_TIMEPOINTS:
        return f"only {g.n_timepoints} time points (< {MIN_TIMEPOINTS})"
    if chosen is not None and _is_original(chosen.headers[0]) and not _is_original(g.headers[0]):
        return "derived images (an original acquisition is present)"
    return "fewer images than the chosen CT perfusion"


def _assign_series_options(groups: list[SeriesGroup]) -> None:
    """Give every group a ``--series`` value that selects it alone: a SeriesNumber no other group uses, else the
    shortest UID prefix (>= 12 characters) that no other group's UIDs start with."""
    number_owners = Counter(n for g in groups for n in g.series_numbers)
    for g in groups:
        others = [u for o in groups if o is not g for u in o.series_instance_uids]
        uid = g.series_instance_uids[0] if g.series_instance_uids else ""
        n = min(len(uid), 12)
        while n < len(uid) and any(o.startswith(uid[:n]) for o in others):
            n += 1
        g.short_uid = uid[:n]
        unique_numbers = [num for num in g.series_numbers if number_owners[num] == 1]
        g.series_option = str(unique_numbers[0]) if unique_numbers else g.short_uid


def _rel(root: Path, path: str) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def scan_folder(dicom_dir) -> FolderScan:
    """Walk ``dicom_dir`` recursively, parse headers and group images; mark the CT perfusion group.

    Raises DicomError when the folder does not exist, cannot be read, is empty or holds no DICOM image.
    """
    root = Path(dicom_dir).expanduser()
    if not root.exists():
        raise DicomError(f"DICOM folder not found: {root}")
    if root.is_file():
        raise DicomError(f"expected a folder of DICOM files, got a file: {root}")
    files, failed = _list_files(root)
    problems: dict[str, list[str]] = {"no_permission": [], "unreadable": [], "folder": []}
    for path, exc in failed:
        if Path(path) == root:
            why = "permission denied" if isinstance(exc, PermissionError) else (exc.strerror or str(exc))
            raise DicomError(f"cannot read the DICOM folder {root}: {why}")
        problems["folder"].append(_rel(root, path))
    if not files:
        if problems["folder"]:
            raise DicomError(f"no readable files in {root}: {len(problems['folder'])} sub-folder(s) cannot be "
                             f"opened (e.g. {problems['folder'][0]}: permission denied?)")
        raise DicomError(f"the DICOM folder is empty: {root}")
    results = _read_all_headers(files)
    for path, (status, _) in zip(files, results):
        if status in ("no_permission", "unreadable"):
            problems[status].append(_rel(root, path))
    problems = {k: v for k, v in problems.items() if v}
    skipped = Counter(status for status, _ in results if status != "ok")
    headers = [h for status, h in results if status == "ok"]
    skipped_d = {k: int(skipped.get(k, 0))
                 for k in ("non_dicom", "non_image", "multiframe", "unreadable", "no_permission")}
    if not headers:
        if skipped_d["no_permission"]:
            raise DicomError(
                f"cannot read {skipped_d['no_permission']} of {len(files)} files in {root}: permission denied "
                f"(e.g. {problems['no_permission'][0]})")
        if skipped_d["multiframe"]:
            raise DicomError(
                f"{root}: only multi-frame (Enhanced) images found; ctperf reads classic single-frame CT files"
            )
        if skipped_d["non_image"] or skipped_d["unreadable"]:
            raise DicomError(
                f"{root}: no usable DICOM image with position/orientation found "
                f"({skipped_d['non_image']} non-image, {skipped_d['unreadable']} unreadable, "
                f"{skipped_d['non_dicom']} non-DICOM files)"
            )
        raise DicomError(f"no DICOM files found in {root} ({len(files)} non-DICOM files skipped)")
    groups = [_describe(g, note) for g, note in _group_headers(headers)]
    groups.sort(key=lambda g: (g.series_numbers[0] if g.series_numbers else 1 << 30, g.description))
    _assign_series_options(groups)
    cands = sorted((i for i, g in enumerate(groups) if _is_ctp_candidate(g) and not g.note),
                   key=lambda i: (_is_original(groups[i].headers[0]), groups[i].n_timepoints * groups[i].n_slices,
                                  groups[i].n_timepoints), reverse=True)
    ctp_index = cands[0] if cands else None
    ambiguous: list[int] = []
    if len(cands) >= 2:
        best = groups[cands[0]]
        ambiguous = [i for i in cands if _is_original(groups[i].headers[0]) == _is_original(best.headers[0])
                     and groups[i].n_files >= EQUALLY_PLAUSIBLE_FRACTION * best.n_files]
        if len(ambiguous) < 2:
            ambiguous = []
    if ctp_index is not None:
        groups[ctp_index].is_ctp = True
    for g in groups:
        g.excluded_reason = "" if g.is_ctp else _why_not(g, groups[ctp_index] if ctp_index is not None else None)
    return FolderScan(root=root, groups=groups, ctp_index=ctp_index, n_files_total=len(files), skipped=skipped_d,
                      problems=problems, ambiguous=ambiguous)


def _choices(groups: list[SeriesGroup]) -> str:
    return "; ".join(f"--series {g.series_option} ('{g.description}', {g.n_slices} slices x {g.n_timepoints} "
                     f"times{', first at ' + g.row()['first_acquisition_time'] if g.first_time_s is not None else ''})"
                     for g in groups)


def _select(scan: FolderScan, series: str | None) -> SeriesGroup:
    if series is not None:
        s = str(series).strip()
        if not s:
            raise DicomError("--series is empty; give a SeriesNumber, a SeriesInstanceUID or a unique UID prefix")
        hits = [g for g in scan.groups if s in g.series_instance_uids]
        if not hits and s.isdigit():
            hits = [g for g in scan.groups if int(s) in g.series_numbers]
            multi = [g for g in hits if g.n_timepoints > 1]
            if len(multi) > 1:
                raise DicomError(f"--series {s} is ambiguous: SeriesNumber {s} is used by {len(multi)} "
                                 f"acquisitions; use one of: {_choices(multi)}")
            hits = multi or sorted(hits, key=lambda g: -g.n_files)
        if not hits:
            hits = [g for g in scan.groups if any(u.startswith(s) for u in g.series_instance_uids)]
            if len(hits) > 1:
                raise DicomError(f"--series {s} is ambiguous: it starts the UIDs of {len(hits)} series groups; "
                                 f"use one of: {_choices(hits)}")
        if not hits:
            raise DicomError(f"series '{s}' not found in {scan.root}; found: {scan.summary()}")
        return hits[0]
    if scan.ambiguous:
        amb = [scan.groups[i] for i in scan.ambiguous]
        raise DicomError(f"{len(amb)} acquisitions in {scan.root} are equally plausible CT perfusion series; "
                         f"choose one with: {_choices(amb)}")
    if scan.ctp is None:
        singles = [g for g in scan.groups if g.n_timepoints == 1 and not g.is_localizer and g.n_slices >= 2]
        if singles and all(g.n_timepoints == 1 for g in scan.groups):
            raise DicomError(
                f"only single-time-point series found in {scan.root} (no CT perfusion): {scan.summary()}"
            )
        raise DicomError(
            f"no CT perfusion series in {scan.root} "
            f"(need >= 2 slice positions each repeated >= {MIN_TIMEPOINTS} times); "
            f"found: {scan.summary()}"
        )
    return scan.ctp


# ----------------------------------------------------------------------------------------------------------
# plan: ordering, times, geometry (headers only)
# ----------------------------------------------------------------------------------------------------------
@dataclass
class _Plan:
    frames: list[list[_Header]]  # [t][z]
    times_s: np.ndarray  # (t, z)
    affine_ras: np.ndarray
    spacing_xyz: tuple[float, float, float]
    tilt_deg: float
    time_source: str
    warnings: list[str]
    n_duplicates: int


def _check_consistency(scan: FolderScan, group: SeriesGroup) -> None:
    """Raise when the chosen series also has files with a different matrix / orientation / spacing."""
    uids = set(group.series_instance_uids)
    for other in scan.groups:
        if other is group:
            continue
        clash = [h for h in other.headers if h.series_uid in uids]
        if clash:
            a, b = group.headers[0], clash[0]
            if (a.rows, a.cols) != (b.rows, b.cols):
                what = f"image matrices {a.rows}x{a.cols} and {b.rows}x{b.cols}"
            elif not np.allclose(a.iop, b.iop, atol=1e-3):
                what = "image orientations"
            elif not np.allclose(a.spacing, b.spacing, atol=1e-3):
                what = f"pixel spacings {a.spacing} and {b.spacing} mm"
            else:
                what = "slice thicknesses or geometry"
            sn = a.series_number if a.series_number is not None else "?"
            raise DicomError(
                f"inconsistent images in the CT perfusion series #{sn}: it mixes {what} ({Path(b.path).name})"
            )


def _pick_time_source(hs: list[_Header], pos_ids: np.ndarray) -> tuple[str, np.ndarray] | None:
    """First timing source present on every file that varies between frames at the same position.

    Clock times (AcquisitionDateTime, AcquisitionTime, ContentTime) are used as seconds of the day and unwrapped
    modulo 24 h around the first file, which is midnight-safe even when a scanner keeps the study date on
    images acquired after midnight (valid while an acquisition lasts < 12 h). Returns (name, seconds per file).
    """
    multi = np.bincount(pos_ids)[pos_ids] > 1
    for name, attr in _TIME_SOURCES:
        vals = [getattr(h, attr) for h in hs]
        if any(v is None for v in vals):
            continue
        v = np.asarray(vals, dtype=float)
        if attr in ("t_acq_datetime", "t_acq_time", "t_content_time"):
            v = _unwrap_day(v, v[0])
        if not multi.any() or np.ptp(v[multi]) > 0:
            return name, v
    return None


def _frame_order_key(hs: list[_Header], pos_ids: np.ndarray) -> tuple[str, np.ndarray] | None:
    """Frame order without times: TemporalPositionIdentifier, AcquisitionNumber or InstanceNumber, the first one
    present on every file that differs between the files of each slice position. Returns (name, key per file)."""
    for name, attr in (("TemporalPositionIdentifier", "tpi"), ("AcquisitionNumber", "acquisition_number"),
                       ("InstanceNumber", "instance_number")):
        vals = [getattr(h, attr) for h in hs]
        if any(v is None for v in vals):
            continue
        key = np.asarray(vals, dtype=float)
        order = np.lexsort((key, pos_ids))
        same_pos = np.diff(pos_ids[order]) == 0
        if not np.any(same_pos & (np.diff(key[order]) == 0)):
            return name, key
    return None


def _check_time_axis(times: np.ndarray, source: str) -> None:
    """Frame times (t, z) must increase strictly at every slice and step by 0.3-10 s."""
    if len(times) < 2:
        return
    steps = np.diff(times, axis=0)
    if np.any(steps <= 0):
        t, z = np.argwhere(steps <= 0)[0]
        raise DicomError(
            f"frame times from {source} are not strictly increasing after sorting (frames {t} and {t + 1} of "
            f"slice {z} are {steps[t, z]:+.3f} s apart); the series mixes acquisitions or the time tag is wrong")
    lo, hi = float(steps.min()), float(steps.max())
    if lo < MIN_FRAME_INTERVAL_S or hi > MAX_FRAME_INTERVAL_S:
        raise DicomError(
            f"implausible sampling interval from {source}: time points {lo:.2f}-{hi:.2f} s apart (expected "
            f"{MIN_FRAME_INTERVAL_S:g}-{MAX_FRAME_INTERVAL_S:g} s); choose the series with --series or give the "
            "interval with --frame-interval if the time tags are wrong")


def _slice_geometry(f0: list[_Header], warnings: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row direction, column direction, slice step) in LPS of one time point's slices (sorted along the normal).

    Refuses slice positions that one affine cannot describe: gaps, overlaps or unequal steps of more than
    ``SLICE_STEP_TOL`` of a step (e.g. two slabs of a jog/toggle acquisition in one series).
    """
    iop = np.asarray(f0[0].iop)
    row_dir, col_dir = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)
    ipps = np.array([h.ipp for h in f0])
    n_z = len(f0)
    if n_z == 1:
        return row_dir, col_dir, normal * (f0[0].thickness or 1.0)
    steps = np.diff(ipps, axis=0)
    d = steps @ normal
    typical = float(np.median(d))
    step = (ipps[-1] - ipps[0]) / (n_z - 1)
    dev = float(np.linalg.norm(steps - step, axis=1).max())
    if dev > SLICE_STEP_TOL * np.linalg.norm(step):
        breaks = np.flatnonzero(np.abs(d - typical) > SLICE_STEP_TOL * abs(typical))
        edges = [0, *(breaks + 1), n_z]
        slabs = [(float(ipps[a] @ normal), float(ipps[b - 1] @ normal)) for a, b in zip(edges[:-1], edges[1:])
                 if b > a]
        desc = ", ".join(f"{a:.1f} to {b:.1f} mm" for a, b in slabs[:4])
        raise DicomError(
            f"slice positions are not evenly spaced ({d.min():.2f} to {d.max():.2f} mm between neighbours, "
            f"typically {typical:.2f} mm; slabs at {desc}): slices are missing, or this is a multi-slab (jog/toggle) "
            "acquisition stored as one series, which one affine cannot describe; export each slab as its own "
            "series and choose it with --series")
    if dev > 0.01 * np.linalg.norm(step):
        warnings.append(f"slightly uneven slice spacing ({d.min():.2f}-{d.max():.2f} mm, within "
                        f"{100 * SLICE_STEP_TOL:g} % of a step); the affine uses the end-to-end spacing")
    return row_dir, col_dir, step


def _order_frames(hs: list[_Header], pos_ids: np.ndarray, group: SeriesGroup, frame_interval_s: float | None,
                  warnings: list[str]) -> tuple[str, np.ndarray, np.ndarray, bool]:
    """(time source, time per file or None-equivalent, order key per file, times_from_interval)."""
    picked = _pick_time_source(hs, pos_ids)
    if picked is not None:
        source, t_all = picked
        if frame_interval_s is not None:
            warnings.append(f"--frame-interval {frame_interval_s:g} s ignored: frame times read from {source}")
        use_tpi = all(h.tpi is not None for h in hs)
        key = np.array([h.tpi for h in hs], dtype=float) if use_tpi else np.round(t_all, 3)
        if source == "ContentTime":
            warnings.append("frame times come from ContentTime, which is often the reconstruction time rather than "
                            "the acquisition time; check the time axis (AIF/VOF curves)")
        return source, t_all, key, False
    if frame_interval_s is None:
        raise DicomError(
            f"cannot determine frame times of '{group.description}': no AcquisitionDateTime, AcquisitionTime, "
            "ContentTime, TriggerTime or TemporalPositionIdentifier+TemporalResolution that differs between time "
            "points (removed by anonymisation?); give the sampling interval with --frame-interval SECONDS")
    ordered = _frame_order_key(hs, pos_ids)
    if ordered is None:
        raise DicomError(
            "--frame-interval needs a frame order, but no TemporalPositionIdentifier, AcquisitionNumber or "
            "InstanceNumber tells the time points of each slice apart")
    name, key = ordered
    warnings.append(f"no frame times in the files: frames ordered by {name}, {frame_interval_s:g} s apart "
                    "(--frame-interval); per-slice timing offsets are unknown")
    return f"--frame-interval ({frame_interval_s:g} s, order by {name})", np.zeros(len(hs)), key, True


def _make_plan(group: SeriesGroup, min_timepoints: int, frame_interval_s: float | None = None) -> _Plan:
    """Order the group's files into (t, z), derive the frame times and the voxel -> RAS affine (headers only).

    Slices are ordered along the normal, frames by TemporalPositionIdentifier or time (or, with
    ``frame_interval_s`` and no time tags, by acquisition/instance number); exact duplicates are dropped; the
    time axis must increase strictly with a plausible step; the slices must be evenly spaced.
    """
    hs = sorted(group.headers, key=lambda h: h.path)
    pos_ids, centres = _position_ids(hs)
    n_z = len(centres)
    warnings: list[str] = []
    if np.bincount(pos_ids).max() == 1:
        raise DicomError(
            f"series '{group.description}' has a single time point ({n_z} slices); a CT perfusion acquisition "
            "needs repeated time points"
        )
    if frame_interval_s is not None and not MIN_FRAME_INTERVAL_S <= frame_interval_s <= MAX_FRAME_INTERVAL_S:
        raise DicomError(f"--frame-interval {frame_interval_s:g} is outside the plausible "
                         f"{MIN_FRAME_INTERVAL_S:g}-{MAX_FRAME_INTERVAL_S:g} s")
    time_source, t_all, order_key, from_interval = _order_frames(hs, pos_ids, group, frame_interval_s, warnings)

    # sort by (position, order key); drop duplicates (same position and same key)
    idx = np.lexsort((order_key, pos_ids))
    dup = np.zeros(len(hs), dtype=bool)
    same = (np.diff(pos_ids[idx]) == 0) & (np.diff(order_key[idx]) == 0)
    dup[idx[1:][same]] = True
    n_dup = int(dup.sum())
    if n_dup:
        example = Path(hs[int(np.flatnonzero(dup)[0])].path).name
        warnings.append(f"dropped {n_dup} duplicate frame(s) with the same slice position and time (e.g. {example})")
    keep = idx[~dup[idx]]
    counts = np.bincount(pos_ids[keep], minlength=n_z)
    n_t = int(counts.max())
    if n_t < min_timepoints:
        raise DicomError(
            f"series '{group.description}' has only {n_t} time points; at least {min_timepoints} are needed"
        )
    if (counts != n_t).any():
        bad = np.flatnonzero(counts != n_t)
        raise DicomError(
            f"incomplete acquisition: {len(bad)} of {n_z} slice positions have fewer than {n_t} time points "
            f"(e.g. {counts[bad[0]]} at {centres[bad[0]]:.1f} mm); a time point is missing slices"
        )
    table = keep.reshape(n_z, n_t).T  # [t, z] indices into hs (positions ascending along the normal)
    frames = [[hs[i] for i in row] for row in table]
    if from_interval:
        times = np.repeat((np.arange(n_t) * float(frame_interval_s))[:, None], n_z, axis=1)
    else:
        times = t_all[table]
        times = times - times[0, 0]
    _check_time_axis(times, time_source)

    # geometry from the first time point (LPS), then LPS -> RAS
    f0 = frames[0]
    row_dir, col_dir, step = _slice_geometry(f0, warnings)
    normal = np.cross(row_dir, col_dir)
    dy, dx = f0[0].spacing
    lps = np.eye(4)
    lps[:3, 0] = row_dir * dx
    lps[:3, 1] = col_dir * dy
    lps[:3, 2] = step
    lps[:3, 3] = f0[0].ipp
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    dz = abs(float(step @ normal))
    geom_tilt = float(np.degrees(np.arccos(min(1.0, dz / np.linalg.norm(step)))))
    header_tilt = f0[0].tilt
    tilt = header_tilt if header_tilt else (geom_tilt if geom_tilt > 0.01 else 0.0)
    if geom_tilt > 0.01:
        warnings.append(
            f"gantry tilt {tilt:g} deg: the affine is sheared (non-orthogonal) so voxel world positions are exact; "
            "tools that assume orthogonal voxels may resample"
        )
    return _Plan(frames, times, affine, (float(dx), float(dy), dz), float(tilt), time_source, warnings, n_dup)


def _excluded_rows(scan: FolderScan, group: SeriesGroup) -> list[dict]:
    """PHI-free list of the groups not analysed and why (for metrics provenance and the log)."""
    return [{"series_numbers": g.series_numbers, "description": g.description, "n_files": g.n_files,
             "reason": g.excluded_reason or "not selected"} for g in scan.groups if g is not group]


def _meta(scan: FolderScan, group: SeriesGroup, plan: _Plan) -> AcquisitionMeta:
    h0 = plan.frames[0][0]
    used = [h for row in plan.frames for h in row]
    uids = list(dict.fromkeys(h.series_uid for h in used))
    numbers = list(dict.fromkeys(h.series_number for h in used if h.series_number is not None))
    warnings = list(plan.warnings)
    # series of the same geometry split off by protocol or cadence are worth a warning; the rest is routine
    for g in scan.groups:
        if g is not group and g.note:
            warnings.append(f"excluded series #{','.join(map(str, g.series_numbers)) or '?'} "
                            f"'{g.description}': {g.note}")
    note = scan.problem_note()
    if note:
        warnings.append(f"{note}; they were skipped")
    return AcquisitionMeta(
        manufacturer=h0.manufacturer,
        model=h0.model,
        kvp=h0.kvp,
        series_description=h0.series_description,
        series_instance_uids=uids,
        series_numbers=numbers,
        study_instance_uid=h0.study_uid,
        spacing_xyz_mm=plan.spacing_xyz,
        gantry_tilt_deg=plan.tilt_deg,
        transfer_syntaxes=sorted({h.transfer_syntax for h in used}),
        n_files_used=len(used),
        n_files_skipped_non_dicom=scan.skipped.get("non_dicom", 0),
        n_duplicate_frames_dropped=plan.n_duplicates,
        warnings=warnings,
        extra={
            "time_source": plan.time_source,
            "slice_thickness_mm": h0.thickness,
            "n_files_total": scan.n_files_total,
            "skipped": dict(scan.skipped),
            "unreadable_files": {k: v[:20] for k, v in scan.problems.items()},
            "n_groups": len(scan.groups),
            "excluded_series": _excluded_rows(scan, group),
        },
    )


def _prepare(dicom_dir, series: str | None, frame_interval_s: float | None = None):
    scan = scan_folder(dicom_dir)
    group = _select(scan, series)
    try:
        _check_consistency(scan, group)
        plan = _make_plan(group, min_timepoints=2 if series is not None else MIN_TIMEPOINTS,
                          frame_interval_s=frame_interval_s)
    except DicomError as exc:
        note = scan.problem_note()
        if note:  # the real cause is often a file that could not be read
            raise DicomError(f"{exc}; {note}") from None
        raise
    return scan, group, plan


# ----------------------------------------------------------------------------------------------------------
# pixel decoding
# ----------------------------------------------------------------------------------------------------------
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
                 bin_factor: int = 1) -> np.ndarray | None:
    """Fill ``hu`` (t, z, y, x) in place; return the (z, y, x) padding mask or None.

    With ``bin_factor`` > 1 every decoded slice is block-averaged in-plane (``ctperf.preprocess.bin_inplane``)
    before it is stored, so the full-resolution 4D array never exists; a block touching padding is outside.
    """
    n_t, n_z = len(plan.frames), len(plan.frames[0])
    has_padding = any(h.padding_value is not None for row in plan.frames for h in row)
    outside = np.zeros(hu.shape[1:], dtype=bool) if has_padding else None
    lock = threading.Lock()
    if bin_factor > 1:
        from ctperf.preprocess import bin_inplane
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
    n_workers = min(4, (os.cpu_count() or 1) + 1)
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


# ----------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------
def load_ctp(dicom_dir, series: str | None = None, progress: Callable[[int, int], None] | None = None, *,
             frame_interval_s: float | None = None, bin_to_pixel_mm: float | None = None,
             bin_above_bytes: int = 0) -> CTPStudy:
    """Find the CT perfusion acquisition in ``dicom_dir`` and load it.

    Parameters
    ----------
    dicom_dir : path
        Folder searched recursively (any file names; non-DICOM files are skipped and counted).
    series : str, optional
        Force a SeriesInstanceUID, a SeriesNumber (digits) or a unique prefix of a SeriesInstanceUID. The
        whole acquisition group containing that series is loaded (e.g. all one-series-per-time-point series).
        Error if not found or ambiguous. Without it, a folder with two equally plausible CT perfusion
        acquisitions is refused (the message lists the ``series`` value of each).
    progress : callable(n_done, n_total), optional
        Called while decoding pixels (from the calling thread).
    frame_interval_s : float, optional
        Sampling interval (s, 0.3-10) for studies whose time tags were removed: frames are then ordered by
        TemporalPositionIdentifier, AcquisitionNumber or InstanceNumber. Ignored (with a warning) when the
        files carry usable times.
    bin_to_pixel_mm, bin_above_bytes : optional
        When the native float32 4D array would exceed ``bin_above_bytes``, every slice is block-averaged
        in-plane while it is decoded, by the integer factor closest to ``bin_to_pixel_mm`` / native pixel
        (the affine is that of the block centres). Keeps whole-brain studies within laptop memory.

    Raises
    ------
    DicomError
        Missing/unreadable folder, no or ambiguous CT perfusion, incomplete or inconsistent acquisition,
        implausible time axis (not strictly increasing, steps outside 0.3-10 s), missing times without
        ``frame_interval_s``, unevenly spaced slices (gaps, multi-slab series), undecodable pixels.

    Returns
    -------
    CTPStudy
        ``hu`` float32 (t, z, y, x) in HU (-1024 outside the field of view), ``times_s`` (t, z) seconds from
        the first frame's first slice, ``affine_ras`` voxel (x, y, z) -> RAS mm, PHI-free ``meta`` and
        ``outside_fov`` (z, y, x) bool or None when the files carry no pixel padding.
    """
    scan, group, plan = _prepare(dicom_dir, series, frame_interval_s)
    h0 = plan.frames[0][0]
    n_t, n_z = len(plan.frames), len(plan.frames[0])
    factor, affine = 1, plan.affine_ras
    if bin_to_pixel_mm and 4 * n_t * n_z * h0.rows * h0.cols > bin_above_bytes:
        factor = max(1, int(round(bin_to_pixel_mm / float(np.mean(plan.spacing_xyz[:2])))))
    meta = _meta(scan, group, plan)
    if factor > 1:
        from ctperf.preprocess import binned_affine

        affine = binned_affine(plan.affine_ras, factor)
        meta.extra["binned_on_load"] = factor
        meta.warnings.append(f"large study ({h0.cols}x{h0.rows}x{n_z}x{n_t}): slices block-averaged {factor}x{factor} "
                             "in-plane while reading to save memory")
    shape = (n_t, n_z, h0.rows // factor, h0.cols // factor)
    try:
        hu = np.empty(shape, dtype=np.float32)
    except MemoryError:
        raise DicomError(f"not enough memory for a {shape[3]}x{shape[2]}x{n_z}x{n_t} float32 array") from None
    outside = _decode_into(plan, hu, progress, bin_factor=factor)
    return CTPStudy(hu=hu, times_s=plan.times_s.astype(float), affine_ras=affine, meta=meta, outside_fov=outside)


def inspect_folder(dicom_dir, series: str | None = None, *, frame_interval_s: float | None = None) -> dict:
    """Describe the folder and its CT perfusion acquisition from headers only (no pixel decoding).

    Returns a strict-JSON-able dict: ``shape_xyzt`` [x, y, z, t], ``frame_times_s`` (first slice, from 0),
    ``affine_ras`` (4x4 list), ``spacing_xyz_mm``, ``gantry_tilt_deg``, ``series_instance_uids``,
    ``series_numbers``, ``series_description``, ``manufacturer``, ``model``, ``kvp``, ``transfer_syntaxes``,
    ``time_source``, ``warnings``, ``n_files_total``, ``skipped`` (counts by reason) and ``series``: one row per
    image group found (description, modality, n_files, n_slices, n_timepoints, is_ctp, ...).
    No patient identifiers are included. Raises DicomError when no usable CT perfusion is found.
    """
    scan, group, plan = _prepare(dicom_dir, series, frame_interval_s)
    meta = _meta(scan, group, plan)
    rows = []
    for g in scan.groups:
        r = g.row()
        r["is_ctp"] = g is group
        if g is group:
            r["excluded_reason"] = None
        elif r["is_ctp"] is False and scan.groups.index(g) == scan.ctp_index:
            r["excluded_reason"] = "not the series chosen with --series"
        rows.append(r)
    n_t, n_z = len(plan.frames), len(plan.frames[0])
    h0 = plan.frames[0][0]

    def clean(x):
        return None if x is None or not np.isfinite(x) else float(x)

    return {
        "shape_xyzt": [h0.cols, h0.rows, n_z, n_t],
        "frame_times_s": [round(float(v), 6) for v in (plan.times_s[:, 0] - plan.times_s[0, 0])],
        "affine_ras": [[float(v) for v in row] for row in plan.affine_ras],
        "spacing_xyz_mm": [float(v) for v in plan.spacing_xyz],
        "gantry_tilt_deg": float(plan.tilt_deg),
        "series_instance_uids": meta.series_instance_uids,
        "series_numbers": meta.series_numbers,
        "series_description": meta.series_description,
        "manufacturer": meta.manufacturer,
        "model": meta.model,
        "kvp": clean(meta.kvp),
        "transfer_syntaxes": meta.transfer_syntaxes,
        "time_source": plan.time_source,
        "n_duplicate_frames_dropped": plan.n_duplicates,
        "warnings": meta.warnings,
        "n_files_total": scan.n_files_total,
        "skipped": dict(scan.skipped),
        "unreadable_files": meta.extra["unreadable_files"],
        "series": rows,
    }
