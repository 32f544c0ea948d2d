"""Small phantom studies and cohort tables for the cohort tests and the batch benchmark (seconds, not minutes)."""

from __future__ import annotations

import json
from pathlib import Path

#: 64x64 matrix on 3 mm pixels, 4 slices: about 1 s per study through Mode A without figures.
SMALL = dict(matrix=64, n_slices=4, pixel_mm=3.0, noise_hu=3.0)
#: Config for batch tests: no QA figures or PDF (the write stage dominates small studies otherwise).
FAST_CONFIG = {"output": {"write_qa_png": False, "write_pdf": False}}


def write_small_study(folder: Path, seed: int = 0, lesion: str | None = "left", **spec) -> Path:
    """Write one small phantom CTP study as DICOM into ``folder`` and return it."""
    from ctperf.synthetic import PhantomSpec, make_phantom
    from ctperf.synthetic.dicom_writer import DicomLayout, write_ctp_dicom

    ph = make_phantom(PhantomSpec(**{**SMALL, **spec}, lesion=lesion, seed=seed))
    write_ctp_dicom(ph.hu, ph.times_s, ph.affine_ras, folder, layout=DicomLayout(vendor="siemens"), seed=seed)
    return folder


def write_corrupt_study(folder: Path) -> Path:
    """A folder with files that look like DICOM by name but are not readable as CT perfusion."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        (folder / f"IM{i:04d}.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage" * 20)
    return folder


def write_fast_config(path: Path) -> Path:
    path.write_text(json.dumps(FAST_CONFIG))
    return path
