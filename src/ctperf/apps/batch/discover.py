"""Find the studies below a cohort folder: each folder that holds DICOM files and no study sub-folders."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ctperf.errors import InputError

#: File name endings taken as DICOM without opening the file.
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


@dataclass(frozen=True)
class Study:
    """One study of a batch.

    Attributes
    ----------
    path : Path
        Absolute folder holding the study's DICOM files (the loader searches it recursively).
    study_id : str
        ``path`` relative to the input root, with ``/`` separators; the root's own name when the root itself is
        the only study.  Used as the output sub-folder and as the row key of the summaries.
    """

    path: Path
    study_id: str


def looks_like_dicom(path: str | Path) -> bool:
    """True for a file named ``*.dcm``/``*.ima``, or whose first bytes are a DICOM preamble or a raw data set."""
    name = os.fspath(path).lower()
    if name.endswith(DICOM_SUFFIXES):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    # a raw data set without preamble starts with a group 0x0008 (or 0x0002) little-endian tag
    return len(head) >= 8 and head[:2] in (b"\x08\x00", b"\x02\x00") and head[3] == 0


def find_studies(input_root: str | Path, *, exclude: str | Path | None = None, depth: int | None = None
                 ) -> list[Study]:
    """List the studies below ``input_root`` in a stable (sorted) order.

    Parameters
    ----------
    input_root : path
        Cohort folder.
    exclude : path, optional
        A folder never searched (the batch output folder when it lies inside the input folder).
    depth : int, optional
        When given, every folder exactly ``depth`` levels below the root that holds DICOM anywhere inside is one
        study (for layouts with one sub-folder per series, e.g. ``patient/series/*.dcm`` with ``depth=1``).
        Default: a study is a folder that holds DICOM files itself and has no sub-folder with DICOM files.

    Raises
    ------
    InputError
        The root is missing or holds no DICOM file.
    """
    root = Path(input_root).resolve()
    if not root.is_dir():
        raise InputError(f"input folder not found: {input_root}")
    skip = Path(exclude).resolve() if exclude is not None else None
    holds: set[Path] = set()  # folders holding DICOM files directly
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (skip is None or here / d != skip))
        if any(looks_like_dicom(here / f) for f in filenames if not f.startswith(".")):
            holds.add(here)
    if not holds:
        raise InputError(f"no DICOM files found below {input_root}")
    if depth is not None:
        if depth < 0:
            raise InputError("--depth must be 0 or more")
        folders = {p.relative_to(root).parts[:depth] for p in holds if len(p.relative_to(root).parts) >= depth}
        chosen = sorted(root.joinpath(*parts) for parts in folders)
        if not chosen:
            raise InputError(f"no DICOM folder lies {depth} levels below {input_root}")
    else:
        with_dicom_below = {parent for p in holds for parent in p.parents}
        chosen = sorted(p for p in holds if p not in with_dicom_below)
    return [Study(p, p.relative_to(root).as_posix() if p != root else root.name) for p in chosen]
