"""Erlangen one-slice digital brain perfusion phantom (``erlangen_phantom.mat``) as a CT study.

The file holds 50 noise-free CT frames at 1 s (256 x 256 HU, baseline included), the AIF, truth CBF/CBV/MTT/TTP
maps and tissue labels (1 GM, 2 WM, 3 GM reduced, 4 GM severely reduced, 5 WM reduced, 6 WM severely reduced,
7 artery, 9 CSF).  Its truth uses density 1 and no haematocrit factor, so absolute values differ from ctperf's
convention by a constant: compare ratios and correlations.

Conversion (the layout the engine needs, nothing else changed):

* pixel size 1.0 mm assumed (not in the file; the brain is then 127 x 171 mm), 5 mm slices;
* outside the labelled head (label 0, 0 HU in the file) set to air (-1000 HU) and a 6 mm skull ring
  (1100 HU) drawn around the brain, so the brain mask can be found;
* the phantom has no vein: a 4 mm disk at the posterior midline carries a VOF = the AIF delayed by 5 s and
  exponentially dispersed (2.5 s), same area (replacing the tissue it covers, excluded from the truth);
* the slice is repeated ``n_slices`` times with independent Gaussian noise of ``noise_hu`` HU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ctperf.core.types import CTPStudy

from . import data_dir
from ._layout import ThirdPartyCase, venous_outflow

FILE = "erlangen_phantom.mat"
LABELS = {1: "gm", 2: "wm", 3: "gm_reduced", 4: "gm_severely_reduced", 5: "wm_reduced", 6: "wm_severely_reduced"}
PIXEL_MM = 1.0


def path() -> Path | None:
    d = data_dir()
    return d / FILE if d is not None and (d / FILE).is_file() else None


def available() -> bool:
    return path() is not None


def read() -> dict[str, np.ndarray]:
    from scipy.io import loadmat

    m = loadmat(str(path()))
    return {k: np.asarray(v) for k, v in m.items() if not k.startswith("__")}


def load(*, n_slices: int = 3, noise_hu: float = 2.0, seed: int = 0) -> list[ThirdPartyCase]:
    from scipy import ndimage

    m = read()
    lab = m["brain"].astype(int)
    ctp = m["ctp"].astype(np.float32)  # (t, y, x) HU
    nt, ny, nx = ctp.shape
    times = np.arange(nt, dtype=float)  # 1 s frames
    head = lab > 0
    skull = ndimage.binary_dilation(head, iterations=int(round(6 / PIXEL_MM))) & ~head
    ctp[:, ~head] = -1000.0
    ctp[:, skull] = 1100.0
    aif_hu = m["aif"].reshape(-1).astype(float)
    aif_hu = aif_hu - aif_hu[:5].mean()
    ys, xs = np.nonzero(head)
    cx = 0.5 * (xs.min() + xs.max())
    yv = ys.max() - 12
    yy, xx = np.mgrid[0:ny, 0:nx]
    vein = ((yy - yv) ** 2 + (xx - cx) ** 2) <= (2.0 / PIXEL_MM) ** 2 + 1e-9
    vein = ndimage.binary_dilation(vein, iterations=1) & head
    vof = venous_outflow(aif_hu, times)
    ctp[:, vein] = 40.0 + vof[:, None].astype(np.float32)
    rng = np.random.default_rng(seed)
    hu = np.repeat(ctp[:, None], n_slices, axis=1)
    if noise_hu > 0:
        hu = hu + rng.normal(0.0, noise_hu, hu.shape).astype(np.float32)
    affine = np.diag([-PIXEL_MM, -PIXEL_MM, 5.0, 1.0])
    affine[:3, 3] = [(nx - 1) / 2 * PIXEL_MM, (ny - 1) / 2 * PIXEL_MM, 0.0]
    study = CTPStudy(hu=hu.astype(np.float32), times_s=np.repeat(times[:, None], n_slices, 1), affine_ras=affine)
    region = np.full((n_slices, ny, nx), -1, int)
    tis = np.isin(lab, list(LABELS)) & ~ndimage.binary_dilation(vein, iterations=2)
    for i, code in enumerate(LABELS):
        region[:, (lab == code) & tis] = i
    regs = []
    means = []
    for code, name in LABELS.items():
        sel = (lab == code) & tis
        regs.append({"label": name, "cbf": float(m["cbf"][sel].mean()), "cbv": float(m["cbv"][sel].mean()),
                     "mtt": float(m["mtt"][sel].mean()), "tmax": None, "shape": "phantom"})
        means.append((ctp[:, sel] - ctp[:4, sel].mean(axis=0)).mean(axis=1))
    case = ThirdPartyCase("erlangen", study, region, region >= 0, regs, aif_hu, times, np.array(means),
                          [f"pixel {PIXEL_MM} mm assumed; skull ring and a synthetic vein (VOF) added; "
                           f"{n_slices} slices with {noise_hu:g} HU noise",
                           "truth has density 1 and no haematocrit factor: absolute scale differs, compare ratios"])
    case.truth_maps = {k: np.repeat(np.where(tis, m[k], np.nan)[None], n_slices, 0) for k in ("cbf", "cbv", "mtt")}
    return [case]
