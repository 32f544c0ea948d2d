"""Block phantom families: residue shape, per-region dispersion, bolus delay and noise with a known truth.

A head-like slab (air, skull ring, brain ellipse, two CSF spots) holds a grid of tissue blocks, one per
(CBF, MTT) pair, mirrored on both hemispheres, in a white-matter-like background.  Two arteries near the front of
the midline carry the arterial input undelayed and undispersed; a posterior sinus carries the venous outflow
(the AIF delayed and dispersed, same area), so automatic AIF/VOF selection has what it needs.

Per family the phantom varies

* the residue shape of all tissue (:data:`~ctperf.synthetic.physics.RESIDUE_SHAPES`: exponential, gamma with
  shape k, box, lognormal), each with mean transit time MTT;
* the vascular dispersion per region: slice ``z`` uses ``dispersion_s[z % len(dispersion_s)]`` (exponential
  transport kernel applied to the AIF before the tissue convolution);
* the bolus delay per hemisphere (``delay_left_s`` / ``delay_right_s``, patient left = larger x index);
* the image noise (SD per voxel per frame, white or in-plane correlated).

Tissue model (as in :mod:`.physics`): ``C(t) = CBF * RHO/(6000 KH) * (Ca (x) h_tau (x) R_MTT)(t - delay)``.
Truth: CBF (nominal flow), CBV = CBF MTT / 60, MTT, and ``Tmax = delay + t_peak`` with ``t_peak`` from
:func:`~ctperf.synthetic.physics.residue_truth` (argmax of ``h (x) R``; for the box, its plateau start).
``truth.cbf_apparent = CBF * max(h (x) R)`` is what an ideal model-free deconvolution reads.

Like the rest of :mod:`ctperf.synthetic`, this module imports nothing from the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import anatomy as A
from . import physics as P
from .noise import CorrelatedNoise
from .phantom import FINE_DT_S, Phantom
from .truth import PhantomTruth, compute_truth_masks, compute_truth_metrics

#: Baseline HU of the layout.
_HU = {"air": -1000.0, "skull": 1100.0, "wm": 30.0, "gm": 38.0, "csf": 6.0, "vessel": 40.0}


@dataclass
class BlockPhantomSpec:
    """Parameters of a block phantom (units: mm, s, HU, mL/100g(/min))."""

    #: Residue shape: "exponential", "gamma", "box" or "lognormal".
    residue: str = "exponential"
    #: Shape k of the gamma transit-time distribution (residue "gamma"; k = 1 is the exponential).
    gamma_k: float = 3.0
    #: Log-SD of the lognormal transit-time distribution (residue "lognormal").
    lognormal_sigma: float = 0.5
    #: Block rows (anterior -> posterior) and columns (midline -> lateral).
    cbf_levels: tuple[float, ...] = (20.0, 40.0, 60.0)
    mtt_levels: tuple[float, ...] = (3.0, 5.0, 8.0)
    #: Background (white-matter-like) tissue (CBF, MTT).
    background: tuple[float, float] = (22.0, 5.0)
    #: Vascular dispersion (s, exponential kernel time constant) of slice z: dispersion_s[z % len].
    dispersion_s: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0)
    #: Bolus delay of all tissue of the patient's left / right hemisphere relative to the AIF (s).
    delay_left_s: float = 0.0
    delay_right_s: float = 0.0
    #: Noise SD per voxel per frame (HU) and its in-plane correlation FWHM (mm; 0 = white noise).
    noise_hu: float = 8.0
    noise_fwhm_mm: float = 0.0
    matrix: int = 128
    n_slices: int = 4
    pixel_mm: float = 1.6
    slice_mm: float = 5.0
    block_mm: float = 16.0
    #: Frame times (s); None -> every 1.5 s for 40 frames.
    frame_times_s: list[float] | None = None
    aif_peak_hu: float = 350.0
    aif_fwhm_s: float = 9.0
    aif_arrival_s: float = 7.0
    recirculation: float = 0.2
    venous_delay_s: float = 5.0
    venous_dispersion_s: float = 2.5
    seed: int = 0

    def resolved_frame_times(self) -> np.ndarray:
        ft = np.arange(40) * 1.5 if self.frame_times_s is None else np.asarray(self.frame_times_s, float)
        if ft.ndim != 1 or len(ft) < 2 or np.any(np.diff(ft) <= 0):
            raise ValueError("frame_times_s must be a strictly increasing list of at least 2 times")
        return ft - ft[0]

    def shape_kw(self) -> dict[str, float]:
        return {"gamma_k": self.gamma_k} if self.residue == "gamma" else (
            {"lognormal_sigma": self.lognormal_sigma} if self.residue == "lognormal" else {})


def _layout(spec: BlockPhantomSpec):
    """2D label/grid layout: (labels (y, x) int8 with anatomy codes, block id (y, x) (-1 background, -2 none),
    side (y, x) +1 patient left / -1 right, affine)."""
    n, px = int(spec.matrix), float(spec.pixel_mm)
    c = (n - 1) / 2.0
    affine = np.diag([-px, -px, float(spec.slice_mm), 1.0])
    affine[:3, 3] = [c * px, c * px, 0.0]
    yy, xx = np.mgrid[0:n, 0:n]
    wx, wy = (c - xx) * px, (c - yy) * px  # RAS mm: wx < 0 patient left, wy > 0 anterior
    r_brain = (wx / 70.0) ** 2 + (wy / 85.0) ** 2
    r_skull = (wx / 76.0) ** 2 + (wy / 91.0) ** 2
    labels = np.full((n, n), A.AIR, np.int8)
    labels[r_skull <= 1.0] = A.SKULL
    brain = r_brain <= 1.0
    labels[brain] = A.WM
    for sx in (-1, 1):
        for cy in (-55.0, 55.0):
            labels[brain & (((wx - sx * 45.0) ** 2 + (wy - cy) ** 2) <= 5.0 ** 2)] = A.CSF
    block = np.full((n, n), -2, int)
    block[labels == A.WM] = -1
    bm = float(spec.block_mm)
    n_m = len(spec.mtt_levels)
    y_top = 0.5 * len(spec.cbf_levels) * bm
    for i in range(len(spec.cbf_levels)):
        for j in range(n_m):
            y0, x0 = y_top - i * bm, 6.0 + j * bm
            sel = (np.abs(wx) >= x0) & (np.abs(wx) < x0 + bm) & (wy <= y0) & (wy > y0 - bm) & (labels == A.WM)
            block[sel] = i * n_m + j
            labels[sel] = A.GM
    art = np.zeros((n, n), bool)
    for sx in (-1, 1):
        art |= ((wx - sx * 9.0) ** 2 + (wy - 58.0) ** 2) <= 3.5 ** 2
    sinus = (wx ** 2 + (wy + 72.0) ** 2) <= 4.0 ** 2
    labels[art] = A.ARTERY
    labels[sinus] = A.SINUS
    block[art | sinus] = -2
    side = np.where(brain, np.where(wx < 0, 1, -1), 0).astype(np.int8)
    return labels, block, side, affine


def make_block_phantom(spec: BlockPhantomSpec | None = None) -> Phantom:
    """Generate a block phantom; returns a :class:`~ctperf.synthetic.phantom.Phantom`.

    Besides the usual truth maps, ``truth.block`` holds the block id per voxel ((z, y, x) int, -1 background
    tissue, -2 not tissue), ``truth.dispersion`` the dispersion time constant (s) and ``truth.residue_peak_s``
    the peak time of the dispersed residue (Tmax minus delay).
    """
    spec = spec or BlockPhantomSpec()
    if spec.residue not in P.RESIDUE_SHAPES:
        raise ValueError(f"residue must be one of {P.RESIDUE_SHAPES}, got {spec.residue!r}")
    nz, n = int(spec.n_slices), int(spec.matrix)
    labels2d, block2d, side2d, affine = _layout(spec)
    ft = spec.resolved_frame_times()
    nt = len(ft)
    times = np.repeat(ft[:, None], nz, axis=1)
    dt = FINE_DT_S
    delays = (float(spec.delay_left_s), float(spec.delay_right_s))
    t_end = ft[-1] + 2.0 + max(spec.aif_arrival_s + 8.0 * spec.aif_fwhm_s + 40.0, 0.0)
    t_fine = np.arange(0.0, t_end + dt, dt)
    ca = P.arterial_curve(t_fine, spec.aif_peak_hu, spec.aif_fwhm_s, spec.aif_arrival_s, spec.recirculation)
    cv = P.venous_curve(ca, dt, spec.venous_delay_s, spec.venous_dispersion_s)

    n_m = len(spec.mtt_levels)
    params = {-1: tuple(spec.background)}
    params.update({b: (float(spec.cbf_levels[b // n_m]), float(spec.mtt_levels[b % n_m]))
                   for b in range(len(spec.cbf_levels) * n_m)})
    mtts = np.array(sorted({m for _, m in params.values()}))
    tissue2d = block2d >= -1
    shape = (nz, n, n)
    delta = np.zeros((nt,) + shape, np.float32)
    cbf = np.zeros(shape, np.float32)
    mtt = np.zeros(shape, np.float32)
    tmax = np.zeros(shape, np.float32)
    delay = np.zeros(shape, np.float32)
    disp = np.zeros(shape, np.float32)
    tpk = np.zeros(shape, np.float32)
    cbf_app = np.zeros(shape, np.float32)
    for z in range(nz):
        tau = float(spec.dispersion_s[z % len(spec.dispersion_s)])
        table = P.tissue_kernel_table_shape(ca, dt, mtts, tau, spec.residue, **spec.shape_kw())
        t_peak, r_max = P.residue_truth(mtts, tau, spec.residue, **spec.shape_kw())
        for b, (f, m) in params.items():
            row = int(np.searchsorted(mtts, m))
            for s, d in ((1, delays[0]), (-1, delays[1])):
                sel = tissue2d & (block2d == b) & (side2d == s)
                if not sel.any():
                    continue
                curve = f * P.FLOW_SCALE * np.interp(times[:, z] - d, t_fine, table[row], left=0.0)
                delta[:, z, sel] = curve[:, None].astype(np.float32)
                cbf[z][sel], mtt[z][sel], delay[z][sel], disp[z][sel] = f, m, d, tau
                tpk[z][sel] = t_peak[row]
                tmax[z][sel] = d + t_peak[row]
                cbf_app[z][sel] = f * r_max[row]
        art, sin = labels2d == A.ARTERY, labels2d == A.SINUS
        delta[:, z, art] = np.interp(times[:, z], t_fine, ca)[:, None]
        delta[:, z, sin] = np.interp(times[:, z], t_fine, cv)[:, None]

    base2d = np.zeros((n, n), np.float32)
    for lab, key in ((A.AIR, "air"), (A.SKULL, "skull"), (A.WM, "wm"), (A.GM, "gm"), (A.CSF, "csf"),
                     (A.ARTERY, "vessel"), (A.SINUS, "vessel")):
        base2d[labels2d == lab] = _HU[key]
    noise = CorrelatedNoise(spec.noise_hu, spec.noise_fwhm_mm, spec.pixel_mm,
                            np.random.default_rng(np.random.SeedSequence(int(spec.seed))))
    hu = np.empty((nt,) + shape, np.float32)
    for f in range(nt):
        hu[f] = base2d[None] + delta[f] + noise.frame(shape)

    rep = lambda a: np.repeat(a[None], nz, axis=0)  # noqa: E731
    labels = rep(labels2d)
    tissue = rep(tissue2d)
    sinus = rep(labels2d == A.SINUS)
    vox = np.argwhere(rep(labels2d == A.ARTERY))
    truth = PhantomTruth(
        cbf=cbf, cbv=(cbf.astype(np.float64) * mtt / 60.0).astype(np.float32), mtt=mtt, tmax=tmax,
        delay_s=np.where(sinus, spec.venous_delay_s, delay).astype(np.float32), labels=labels,
        brain=rep(side2d != 0), tissue=tissue, csf=labels == A.CSF, vessels=rep(labels2d >= A.ARTERY),
        core=np.zeros(shape, bool), penumbra=np.zeros(shape, bool), hypoperfusion=np.zeros(shape, bool),
        lesion_any=np.zeros(shape, bool), sinus=sinus, cortex=(labels == A.GM) & tissue, side=rep(side2d),
        aif_true=(t_fine.copy(), ca.copy()), vof_true=(t_fine.copy(), cv.copy()),
        aif_voxels_zyx=vox.astype(np.int64), vof_voxels_zyx=np.argwhere(sinus).astype(np.int64),
        cbf_apparent=cbf_app, block=np.where(tissue, rep(block2d), -2), dispersion=disp, residue_peak_s=tpk,
    )
    truth.tmax = np.where(sinus, spec.venous_delay_s, truth.tmax).astype(np.float32)
    compute_truth_masks(truth, 0)
    metrics = compute_truth_metrics(truth, spec, affine, 0)
    return Phantom(hu=hu, times_s=times, affine_ras=affine, truth=truth, truth_metrics=metrics, spec=spec)


def block_table(spec: BlockPhantomSpec) -> list[tuple[int, float, float]]:
    """[(block id, CBF, MTT)] of the block grid of ``spec``."""
    n_m = len(spec.mtt_levels)
    return [(b, float(spec.cbf_levels[b // n_m]), float(spec.mtt_levels[b % n_m]))
            for b in range(len(spec.cbf_levels) * n_m)]
