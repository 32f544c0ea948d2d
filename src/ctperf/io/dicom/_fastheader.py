"""A minimal reader of the top-level elements of little-endian Part-10 files (the fast header path).

Anything it does not recognise raises :class:`_NeedSlowPath`; the caller then parses the file with pydicom.
"""

from __future__ import annotations

import struct
from typing import Any

from pydicom.datadict import tag_for_keyword

from ctperf.io.dicom.values import _IMPLICIT_LE

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
