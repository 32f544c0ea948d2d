"""OSIPI DSC test curves (``osipi_dsc_data.csv``) as a CT study.

14 single-voxel cases (CBV 4: CBF 10-70; CBV 2: CBF 5-35), exponential residue, one gamma-variate AIF, 161
samples every 1.243 s, no delay.  Forward model of the file (checked by a least-squares fit in the tests):
``C_tis = CBF/6000 * tr * sum(C_aif * exp(-t/MTT))`` with ``MTT = 60 CBV/CBF``, no density or haematocrit
factor.  Conversion: the AIF is scaled to ``AIF_PEAK_HU`` delta HU, the tissue curves by the same factor times
``RHO/KH`` (:data:`~third_party._layout.CT_TISSUE_FACTOR`), so ctperf's CT convention reads CBF and CBV as in the
file.  Truth Tmax = 0 (no delay, no dispersion).

The file's sum is a rectangle rule: the sample at lag 0 counts fully, which adds ``tr/2 * C_aif(t)`` to a
continuous convolution, i.e. a residue with an extra area of ``tr/2`` at t = 0 (CBV ``+tr/(2 MTT)``, +3 to +18 %
over the cases).  CT tissue sees a continuous convolution; :func:`load` with ``continuous=True`` therefore also
builds the same cases from the file's AIF (linearly interpolated) and parameters by a continuous convolution.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from . import data_dir
from ._layout import CT_TISSUE_FACTOR, ThirdPartyCase, head_study

FILE = "osipi_dsc_data.csv"
AIF_PEAK_HU = 400.0


def path() -> Path | None:
    d = data_dir()
    return d / FILE if d is not None and (d / FILE).is_file() else None


def available() -> bool:
    return path() is not None


def read_curves(p: Path | None = None) -> list[dict]:
    """Rows of the csv: label, c_tis (T,), c_aif (T,), cbv, cbf, tr (floats / arrays in the file's units)."""
    p = p or path()
    out = []
    with open(p, newline="") as fh:
        for r in csv.DictReader(fh):
            out.append({"label": r["label"], "c_tis": np.array(r["C_tis"].split(), float),
                        "c_aif": np.array(r["C_aif"].split(), float), "cbv": float(r["cbv"]),
                        "cbf": float(r["cbf"]), "tr": float(r["tr"])})
    return out


def continuous_tissue(aif_c: np.ndarray, tr: float, cbf: float, cbv: float, fine_s: float = 0.01) -> np.ndarray:
    """Tissue curve of one case by a continuous convolution, ``CBF/6000 * (C_aif (x) exp(-t/MTT))`` with the AIF
    linearly interpolated between its samples (step ``fine_s``), sampled every ``tr`` like the file."""
    t = np.arange(len(aif_c)) * tr
    tf = np.arange(0.0, t[-1] + fine_s / 2, fine_s)
    kernel = np.exp(-tf / (60.0 * cbv / cbf))
    c = cbf / 6000.0 * fine_s * np.convolve(np.interp(tf, t, aif_c), kernel)[: len(tf)]
    return np.interp(t, tf, c)


def load(*, noise_hu: float = 2.0, seed: int = 0, continuous: bool = False) -> list[ThirdPartyCase]:
    """One study with the 14 cases as regions of one slice (two slices: the same layout twice, fresh noise).

    ``continuous``: tissue curves from the file's AIF and case parameters by a continuous convolution
    (:func:`continuous_tissue`) instead of the file's rectangle-rule sums."""
    rows = read_curves()
    tr = rows[0]["tr"]
    aif_c = rows[0]["c_aif"]
    scale = AIF_PEAK_HU / float(aif_c.max())
    times = np.arange(len(aif_c)) * tr
    aif_hu = aif_c * scale
    tis = ([continuous_tissue(aif_c, tr, r["cbf"], r["cbv"]) for r in rows] if continuous
           else [r["c_tis"] for r in rows])
    curves = [c * scale * CT_TISSUE_FACTOR for c in tis]
    study, region, interior = head_study([curves, curves], aif_hu, times, noise_hu=noise_hu, seed=seed)
    regs = []
    for z in range(2):
        for r in rows:
            regs.append({"label": r["label"], "cbf": r["cbf"], "cbv": r["cbv"], "mtt": 60.0 * r["cbv"] / r["cbf"],
                         "tmax": 0.0, "delay": 0.0, "dispersion": 0.0, "shape": "exponential"})
    notes = [f"AIF scaled to {AIF_PEAK_HU:.0f} dHU (x{scale:.1f} per concentration unit), tissue x{scale:.1f}*rho/kH",
             f"{noise_hu:g} HU Gaussian noise added; 2 slices (same cases, independent noise)"]
    if continuous:
        notes.insert(0, "tissue re-convolved continuously from the file's AIF (linearly interpolated) and case "
                        "parameters; the file's own curves are rectangle-rule sums "
                        "(CBV +3 to +18 %, CBF +3 to +25 % by MTT)")
    name = "osipi_dsc_continuous" if continuous else "osipi_dsc"
    return [ThirdPartyCase(name, study, region, interior, regs, aif_hu, times,
                           np.array(curves + curves), notes)]
