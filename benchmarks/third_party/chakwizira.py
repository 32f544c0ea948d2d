"""Chakwizira et al. DSC-MRI digital reference object (``chakwizira-dsc-dro/``) as CT studies.

Signal -> concentration (the folder's NOTES.md): ``C = -ln(S/S0) / (kappa TE)`` with TE = 0.029 s, S0 = mean of
the first 15 frames, ``kappa_a`` for the AIF and ``kappa_s`` per residue shape (``kappa_*.mat``); TR = 1.243 s.
With this S0 the area ratios match the nominal CBV (GM 3.98 / 4, WM 2.00 / 2 at CBF 40 / 20); with S0 = 100 they
read ~+13 % (the Rician baseline of the AIF, 100.6, lowers the AIF area), as NOTES.md reports.
Its truth carries no density or haematocrit factor (``C_t = F/6000 * dt * sum(C_a R)``), so tissue curves are
scaled by ``RHO/KH`` like the OSIPI curves and the AIF peak is set to ``AIF_PEAK_HU``.

Studies:

* ``chakwizira_<shape>`` (shape exponential / gamma5 / box, from ``varying_cbf/``; the DRO's "sigmoid" is a
  gamma transit-time distribution with shape 5, its "boxcar" one with shape 100): 7 GM regions (CBV 4, CBF
  10-70) and 7 WM regions (CBV 2, CBF 5-35), voxel curves with the DRO's own SNR-20 noise;
* ``chakwizira_delay_dispersion`` (``delay_dispersion/``): one slice per delay/dispersion setting, 7 regions
  (CBF 10-70, CBV 4, exponential).  Delay 1/3/6 s (low/medium/high) and dispersion by an exponential transport
  kernel of mean 1.5/3/4.5 s (generator code, see NOTES.md).  Truth Tmax = delay + argmax of the dispersed
  exponential residue (:func:`ctperf.synthetic.physics.residue_truth`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ctperf.synthetic import physics as P

from . import data_dir
from ._layout import CT_TISSUE_FACTOR, ThirdPartyCase, head_study

FOLDER = "chakwizira-dsc-dro/example_simulated_data"
TE_S = 0.029
TR_S = 1.243
KAPPA_A = 7.0281
KAPPA_S = {1: 130.8347, 5: 106.8595, 100: 96.5102}
AIF_PEAK_HU = 400.0
SHAPES = {"exponential": ("exponential_residue_function", 1), "gamma5": ("sigmoid_residue_function", 5),
          "box": ("boxcar_residue_function", 100)}
DELAY_S = {"low": 1.0, "medium": 3.0, "high": 6.0}
DISPERSION_S = {"low": 1.5, "medium": 3.0, "high": 4.5}
N_BASE = 15


def root() -> Path | None:
    d = data_dir()
    return d / FOLDER if d is not None and (d / FOLDER).is_dir() else None


def available() -> bool:
    return root() is not None


def _signal(p: Path) -> np.ndarray:
    import logging

    import nibabel as nib

    logger = logging.getLogger("nibabel.global")
    level = logger.level
    logger.setLevel(logging.ERROR)  # the DRO headers have pixdim 0 (harmless warning)
    try:
        return np.asarray(nib.load(str(p)).get_fdata(), float)
    finally:
        logger.setLevel(level)


def concentration(signal: np.ndarray, kappa: float) -> np.ndarray:
    """``C = -ln(S/S0)/(kappa TE)`` along the last axis, S0 = mean of the first 15 frames."""
    s0 = signal[..., :N_BASE].mean(axis=-1, keepdims=True)
    return -np.log(np.clip(signal, 1e-6, None) / s0) / (kappa * TE_S)


def aif_concentration() -> np.ndarray:
    """(161,) arterial concentration."""
    return concentration(_signal(root() / "varying_cbf/exponential_residue_function/aif.nii").reshape(-1), KAPPA_A)


def generator_aif_concentration(times_s: np.ndarray) -> np.ndarray:
    """The DRO generator's noise-free AIF, ``(t - 20)^3 exp(-(t - 20) / 1.5)`` for t > 20 s (NOTES.md), in the
    units of :func:`aif_concentration` (least-squares amplitude of the formula against the file: 1.006).  The file's
    AIF is this curve plus the single voxel's SNR-20 noise (5.4 % of the peak)."""
    x = np.clip(np.asarray(times_s, float) - 20.0, 0.0, None)
    return np.where(x > 0, x**3 * np.exp(-x / 1.5), 0.0)


def with_generator_aif(case: ThirdPartyCase) -> ThirdPartyCase:
    """``case`` with its known AIF replaced by the generator's noise-free one (same scale to HU): separates the
    effect of the DRO's noisy AIF from the deconvolution's (known-AIF path only)."""
    import dataclasses

    clean = generator_aif_concentration(case.aif_times_s) * _scale(aif_concentration())
    return dataclasses.replace(case, name=case.name + "_generator_aif", aif_hu=clean,
                               notes=case.notes + ["known AIF = the generator's noise-free AIF (NOTES.md formula)"])


def _scale(aif_c: np.ndarray) -> float:
    return AIF_PEAK_HU / float(aif_c.max())


def _voxels(c: np.ndarray, half: int, n_max: int) -> np.ndarray:
    """(n, T) voxel curves of one half of axis 0 (0 = GM, 1 = WM)."""
    nx = c.shape[0] // 2
    v = c[half * nx : (half + 1) * nx].reshape(-1, c.shape[-1])
    return v[:n_max]


def load_shape(shape: str, *, n_max: int = 400) -> ThirdPartyCase:
    """Varying-CBF study of one residue shape (14 regions: 7 GM, 7 WM)."""
    sub, lam = SHAPES[shape]
    aif_c = aif_concentration()
    k = _scale(aif_c)
    times = np.arange(len(aif_c)) * TR_S
    regs, curves, means = [], [], []
    files = sorted((root() / "varying_cbf" / sub).glob("*.nii"))
    files = [f for f in files if f.name != "aif.nii"]
    for f in sorted(files, key=lambda f: [int(x) for x in re.findall(r"_(\d+)_(\d+)\.nii$", f.name)[0]]):
        g, w = (float(x) for x in re.findall(r"_(\d+)_(\d+)\.nii$", f.name)[0])
        c = concentration(_signal(f)[:, :, 0], KAPPA_S[lam]) * k * CT_TISSUE_FACTOR
        for half, cbf, cbv, tissue in ((0, g, 4.0, "gm"), (1, w, 2.0, "wm")):
            v = _voxels(c, half, n_max)
            curves.append(v)
            means.append(v.mean(axis=0))
            regs.append({"label": f"{tissue}_cbf{cbf:g}", "cbf": cbf, "cbv": cbv, "mtt": 60.0 * cbv / cbf,
                         "tmax": 0.0, "delay": 0.0, "dispersion": 0.0, "shape": shape, "tissue": tissue})
    study, region, interior = head_study([curves], aif_c * k, times)
    notes = [f"C = -ln(S/S0)/(kappa TE), kappa_s = {KAPPA_S[lam]}, kappa_a = {KAPPA_A}; AIF -> {AIF_PEAK_HU:.0f} dHU",
             "DRO noise (SNR 20) kept; S0 = baseline mean (area ratios then match the nominal CBV)"]
    return ThirdPartyCase(f"chakwizira_{shape}", study, region, interior, regs, aif_c * k, times,
                          np.array(means), notes)


_DD = re.compile(r"St_disp_(\d)_exponential_lvl_(\w+?)_delay_(\d)_lvl_(\w+?)_resfunc.*_cbf_(\d+)\.nii$")


def load_delay_dispersion(settings: list[tuple[float, float]] | None = None) -> ThirdPartyCase:
    """Delay/dispersion study: one slice per (delay s, dispersion s) setting (all 10 by default), 7 CBF regions."""
    aif_c = aif_concentration()
    k = _scale(aif_c)
    times = np.arange(len(aif_c)) * TR_S
    groups: dict[tuple[float, float], list] = {}
    for f in sorted((root() / "delay_dispersion").glob("*.nii")):
        m = _DD.match(f.name)
        if not m:
            continue
        disp = DISPERSION_S[m.group(2)] if m.group(1) == "1" else 0.0
        delay = DELAY_S[m.group(4)] if m.group(3) == "1" else 0.0
        if settings is not None and (delay, disp) not in settings:
            continue
        groups.setdefault((delay, disp), []).append((float(m.group(5)), f))
    slices, regs, means = [], [], []
    for (delay, disp), items in sorted(groups.items()):
        cur = []
        for cbf, f in sorted(items):
            c = concentration(_signal(f)[:, :, 0], KAPPA_S[1]) * k * CT_TISSUE_FACTOR
            v = c.reshape(-1, c.shape[-1])
            cur.append(v)
            means.append(v.mean(axis=0))
            mtt = 60.0 * 4.0 / cbf
            t_peak, _ = P.residue_truth([mtt], disp, "exponential")
            regs.append({"label": f"delay{delay:g}_disp{disp:g}_cbf{cbf:g}", "cbf": cbf, "cbv": 4.0, "mtt": mtt,
                         "tmax": delay + float(t_peak[0]), "delay": delay, "dispersion": disp,
                         "shape": "exponential"})
        slices.append(cur)
    study, region, interior = head_study(slices, aif_c * k, times)
    notes = ["delay low/medium/high = 1/3/6 s, dispersion kernel mean 1.5/3/4.5 s (generator code, NOTES.md)",
             "truth Tmax = delay + argmax(exponential kernel (x) exp(-t/MTT))"]
    return ThirdPartyCase("chakwizira_delay_dispersion", study, region, interior, regs, aif_c * k, times,
                          np.array(means), notes)


def load(*, shapes=tuple(SHAPES)) -> list[ThirdPartyCase]:
    return [load_shape(s) for s in shapes] + [load_delay_dispersion()]
