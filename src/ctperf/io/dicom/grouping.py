"""Group image headers into candidate acquisitions and choose the CT perfusion (or the one asked for)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctperf.errors import DicomError
from ctperf.io.dicom.scan import _Header, _list_files, _read_all_headers
from ctperf.io.dicom.timing import MAX_FRAME_INTERVAL_S
from ctperf.io.dicom.values import _unwrap_day

#: A group qualifies as CT perfusion when each slice position is repeated at least this many times.
MIN_TIMEPOINTS = 5
#: Two slice positions closer than this along the slice normal are the same position (mm).
POSITION_TOL_MM = 0.05
#: Two CTP candidates are equally plausible (``run`` refuses to guess) when the smaller has at least this
#: fraction of the larger's files (and both are original, or both derived).
EQUALLY_PLAUSIBLE_FRACTION = 0.8


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
