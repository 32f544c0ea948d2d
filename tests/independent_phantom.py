"""Independent CT-perfusion digital phantom (numpy/scipy only; nothing from ctperf).

In the spirit of the QIBA / Kudo 2013 CTP digital phantoms: blocks of brain tissue, each with a known
(CBF, MTT) pair, a known arrival delay and a chosen residue shape, inside a head-like layout (skull ring, brain
ellipse, CSF spots, two arteries near the midline front and a venous sinus at the back midline).

Model (indicator dilution, the textbook CT perfusion convention)::

    tissue(t) = CBF * rho / (6000 * kH) * (AIF (x) R)(t - delay)    [delta HU; CBF in mL/100g/min]

with rho = 1.04 g/mL, kH = (1 - 0.45) / (1 - 0.25) and R one of

* ``"exponential"``: R = exp(-t / MTT)                    (well mixed compartment)
* ``"box"``:         R = 1 for t < MTT, else 0            (plug flow)
* ``"gamma"``:       R = 1 - GammaCDF(t; k, MTT / k)      (gamma-distributed transit times with mean MTT)

All residues have mean transit time MTT (area of R) and peak at t = 0, so the truth CBV = CBF * MTT / 60 and the
truth Tmax = delay.  Convolutions are computed on a 0.1 s grid and sampled at the frame times.

Geometry: arrays are (t, z, y, x); the affine (x, y, z index -> RAS mm) is diag(-1, -1, 5) with an offset, so a
larger x index is the patient's left (world x < 0) and row 0 is anterior (radiological display).  The block
layout is mirrored across the midline (world x = 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, stats

RHO = 1.04
KH = (1.0 - 0.45) / (1.0 - 0.25)
FINE_DT = 0.1

CBF_LEVELS = (10, 20, 30, 40, 50, 60, 70)  # mL/100g/min (rows, anterior -> posterior)
MTT_LEVELS = (3, 4, 6, 8, 10)  # s (columns, midline -> lateral)


@dataclass
class PhantomSpec:
    residue: str = "exponential"  # "exponential", "box" or "gamma"
    gamma_shape: float = 3.0  # shape k of the gamma transit-time distribution
    noise_hu: float = 3.0  # SD per voxel per frame (HU)
    noise_sigma_px: float = 0.0  # optional in-plane Gaussian correlation of the noise (SD kept at noise_hu)
    left_delay_s: float = 0.0  # extra arrival delay of every tissue voxel of the patient's left hemisphere
    dt_s: float = 1.0  # frame interval
    duration_s: float = 60.0
    matrix: int = 200
    n_slices: int = 8
    pixel_mm: float = 1.0
    slice_mm: float = 5.0
    block_mm: float = 10.0
    background: tuple = (40.0, 4.0)  # (CBF, MTT) of the tissue around the blocks
    #: 7 small (4 x 4 mm) cortical veins per side, lateral to the blocks, carrying the venous curve: vessels are then
    #: 1.6% of the brain instead of 0.4% (real slabs hold sinuses, cortical veins and MCA branches).
    cortical_veins: bool = False
    seed: int = 0


@dataclass
class Phantom:
    hu: np.ndarray  # (t, z, y, x) float32 HU
    times_s: np.ndarray  # (t,)
    affine: np.ndarray  # 4x4 RAS
    aif: np.ndarray  # (t,) delta HU
    vof: np.ndarray  # (t,) delta HU
    truth: dict = field(default_factory=dict)  # (z, y, x) maps: cbf, mtt, cbv, tmax, delay, block, side, tissue


def gamma_variate(t: np.ndarray, t0: float, alpha: float, beta: float) -> np.ndarray:
    """(t - t0)^alpha exp(-(t - t0) / beta), scaled to a peak of 1."""
    s = np.clip(t - t0, 0.0, None)
    g = s**alpha * np.exp(-s / beta)
    return g / g.max()


def arterial_input(t: np.ndarray, arrival_s: float = 8.0, peak_hu: float = 400.0, fwhm_s: float = 9.0,
                   recirc_fraction: float = 0.15) -> np.ndarray:
    """Gamma-variate first pass (alpha 3, beta set for the FWHM) plus a dispersed recirculation bump whose area is
    ``recirc_fraction`` of the first pass."""
    alpha = 3.0
    tt = np.arange(0.0, 60.0, 0.01)
    g = gamma_variate(tt, 0.0, alpha, 1.0)
    beta = fwhm_s / (np.ptp(tt[g >= 0.5]))  # FWHM scales linearly with beta
    first = gamma_variate(t, arrival_s, alpha, beta)
    recirc = gamma_variate(t, arrival_s + 3.0 * alpha * beta, alpha, 2.0 * beta)  # 2x wider, one peak-time later
    recirc *= recirc_fraction * first.sum() / recirc.sum()
    return peak_hu * (first + recirc)


def residue(t: np.ndarray, mtt: float, shape: str, gamma_shape: float = 3.0) -> np.ndarray:
    if shape == "exponential":
        return np.exp(-t / mtt)
    if shape == "box":
        return (t < mtt).astype(float)
    if shape == "gamma":
        return stats.gamma.sf(t, gamma_shape, scale=mtt / gamma_shape)
    raise ValueError(shape)


def tissue_curve(aif_fine: np.ndarray, t_fine: np.ndarray, cbf: float, mtt: float, delay: float, shape: str,
                 gamma_shape: float = 3.0) -> np.ndarray:
    """Delta HU on the fine grid ``t_fine`` (spacing FINE_DT)."""
    conv = np.convolve(aif_fine, residue(t_fine, mtt, shape, gamma_shape))[: len(t_fine)] * FINE_DT
    conv = np.interp(t_fine - delay, t_fine, conv, left=0.0)
    return cbf * RHO / (6000.0 * KH) * conv


def make_phantom(spec: PhantomSpec = PhantomSpec()) -> Phantom:
    n, nz, px = spec.matrix, spec.n_slices, spec.pixel_mm
    times = np.arange(0.0, spec.duration_s + 1e-6, spec.dt_s)
    t_fine = np.arange(0.0, spec.duration_s + 20.0, FINE_DT)
    aif_fine = arterial_input(t_fine)
    # venous outflow: the AIF delayed by 6 s and dispersed (unit-area exponential, 3 s): same area, lower peak
    kern = np.exp(-t_fine / 3.0)
    vof_fine = np.convolve(np.interp(t_fine - 6.0, t_fine, aif_fine, left=0.0), kern / kern.sum())[: len(t_fine)]

    c = (n - 1) / 2.0
    affine = np.diag([-px, -px, spec.slice_mm, 1.0])
    affine[:3, 3] = [c * px, c * px, 0.0]  # world (0, 0) at the matrix centre
    yy, xx = np.mgrid[0:n, 0:n]
    wx, wy = (c - xx) * px, (c - yy) * px  # RAS mm: wx < 0 = patient left, wy > 0 = anterior
    r_brain = (wx / 70.0) ** 2 + (wy / 85.0) ** 2
    r_skull = (wx / 75.0) ** 2 + (wy / 90.0) ** 2
    brain2d = r_brain <= 1.0
    base2d = np.where(r_skull <= 1.0, 1000.0, -1000.0)
    base2d[brain2d] = 35.0
    csf2d = np.zeros((n, n), bool)
    for sx in (-1, 1):  # symmetric CSF spots (lateral, between the block grid and the skull)
        for cy in (-55.0, 55.0):
            csf2d |= ((wx - sx * 45.0) ** 2 + (wy - cy) ** 2) <= 4.0**2
    base2d[csf2d] = 5.0

    # block grid: rows = CBF, columns = MTT, starting 5 mm from the midline, mirrored on both sides
    bm = spec.block_mm
    block2d = np.full((n, n), -1, int)
    for i, _ in enumerate(CBF_LEVELS):
        for j, _ in enumerate(MTT_LEVELS):
            y0 = 35.0 - i * bm
            x0 = 5.0 + j * bm
            sel = (np.abs(wx) >= x0) & (np.abs(wx) < x0 + bm) & (wy <= y0) & (wy > y0 - bm)
            block2d[sel & brain2d] = i * len(MTT_LEVELS) + j
    side2d = np.where(wx < 0, 1, -1)  # +1 = patient left (same convention as the engine)
    art2d = np.zeros((n, n), bool)
    for sx in (-1, 1):  # 4 x 4 mm arteries 8 mm either side of the midline, 60 mm anterior
        art2d |= (np.abs(wx - sx * 8.0) < 2.0) & (np.abs(wy - 60.0) < 2.0)
    sinus2d = (np.abs(wx) < 3.0) & (np.abs(wy + 70.0) < 3.0)  # 6 x 6 mm at the back midline
    if spec.cortical_veins:
        for cy in np.arange(-30.0, 31.0, 10.0):
            sinus2d |= (np.abs(np.abs(wx) - 59.0) < 2.0) & (np.abs(wy - cy) < 2.0)

    tissue2d = brain2d & ~csf2d & ~art2d & ~sinus2d
    sample = lambda f: np.interp(times, t_fine, f)  # noqa: E731
    cbf2d = np.zeros((n, n))
    mtt2d = np.zeros((n, n))
    delay2d = np.zeros((n, n))
    delta = np.zeros((len(times), n, n))
    cache: dict = {}
    for b in range(-1, len(CBF_LEVELS) * len(MTT_LEVELS)):
        cbf, mtt = spec.background if b < 0 else (CBF_LEVELS[b // len(MTT_LEVELS)], MTT_LEVELS[b % len(MTT_LEVELS)])
        for s in (-1, 1):
            sel = tissue2d & (block2d == b) & (side2d == s)
            delay = spec.left_delay_s if s == 1 else 0.0
            key = (cbf, mtt, delay)
            if key not in cache:
                cache[key] = sample(tissue_curve(aif_fine, t_fine, cbf, mtt, delay, spec.residue, spec.gamma_shape))
            delta[:, sel] = cache[key][:, None]
            cbf2d[sel], mtt2d[sel], delay2d[sel] = cbf, mtt, delay
    delta[:, art2d] = sample(aif_fine)[:, None]
    delta[:, sinus2d] = sample(vof_fine)[:, None]

    rng = np.random.default_rng(spec.seed)
    noise = rng.standard_normal((len(times), nz, n, n)).astype(np.float32)
    if spec.noise_sigma_px > 0:
        noise = ndimage.gaussian_filter(noise, (0, 0, spec.noise_sigma_px, spec.noise_sigma_px))
        noise /= noise.std()
    hu = (base2d + delta)[:, None].astype(np.float32) + spec.noise_hu * noise

    r_fine = residue(t_fine, 5.0, spec.residue, spec.gamma_shape)
    tmax_r = float(t_fine[np.argmax(r_fine)])  # peak time of the residue shape (0 for all three)
    rep = lambda a: np.repeat(a[None], nz, axis=0)  # noqa: E731
    truth = {
        "cbf": rep(cbf2d), "mtt": rep(mtt2d), "cbv": rep(cbf2d * mtt2d / 60.0),
        "tmax": rep(np.where(tissue2d, delay2d + tmax_r, np.nan)), "delay": rep(delay2d),
        "block": rep(np.where(tissue2d, block2d, -2)), "side": rep(np.where(brain2d, side2d, 0)),
        "tissue": rep(tissue2d), "artery": rep(art2d), "vein": rep(sinus2d), "csf": rep(csf2d),
    }
    return Phantom(hu=hu, times_s=times, affine=affine, aif=sample(aif_fine), vof=sample(vof_fine), truth=truth)


def block_table() -> list[tuple[int, float, float]]:
    """[(block id, CBF, MTT)] of the grid."""
    return [(b, CBF_LEVELS[b // len(MTT_LEVELS)], MTT_LEVELS[b % len(MTT_LEVELS)])
            for b in range(len(CBF_LEVELS) * len(MTT_LEVELS))]
