"""The digital CT perfusion phantom: specification, generation of the 4D HU series and its ground truth.

Independent of the ctperf engine on purpose (it imports nothing from the rest of ctperf), so that tests that
compare the engine with this phantom are not circular.

Geometry
--------
A standard axial scan (DICOM ImageOrientationPatient = [1,0,0,0,1,0]): the x index increases toward the patient's
LEFT, y toward POSTERIOR, z (slice) toward SUPERIOR, hence ``affine_ras = [[-px,0,0,ox],[0,-py,0,oy],[0,0,sz,oz]]``.
The head frame (u left, v posterior, w superior; see :mod:`.anatomy`) is rotated in-plane by ``rotation_deg``
(positive turns the nose toward +x, i.e. toward the patient's left side of the image) and shifted by
``head_offset_mm`` relative to the scanner frame whose origin is the image centre; slice k lies at head height
``w = z_bottom_mm + k * slice_mm``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from . import anatomy as A
from . import physics as P
from .noise import CorrelatedNoise, apply_rigid, motion_parameters
from .truth import PhantomTruth, compute_truth_masks, compute_truth_metrics

#: Fine time step of the curve tables, s.
FINE_DT_S = 0.05
#: MTT values are snapped to this grid (s) so every voxel uses an exact table row: CBV = CBF * MTT / 60 exactly.
MTT_STEP_S = 0.01

#: Perfused classes (scalp perfusion is simulated but not part of the truth maps).
PERFUSED = (A.GM, A.WM, A.DEEP, A.SCALP)
#: Normal tissue parameters: CBF mL/100g/min, MTT s (CBV = CBF * MTT / 60 mL/100g).
NORMAL_PARAMS = {
    A.GM: (64.0, 4.2),
    A.WM: (22.0, 5.0),
    A.DEEP: (50.0, 4.3),
    A.SCALP: (8.0, 8.0),
}


@dataclass
class PhantomSpec:
    """Parameters of the phantom (all have defaults).  Units: mm, s, HU, mL/100g(/min)."""

    #: In-plane matrix size (square).
    matrix: int = 160
    n_slices: int = 8
    pixel_mm: float = 1.4
    slice_mm: float = 5.0
    #: Head height (mm, relative to the head centre) of the first slice; slices go up from there.
    z_bottom_mm: float = -20.0
    #: Frame start times (s, increasing); None -> every 1.5 s for 40 frames.  Shifted so the first is 0.
    frame_times_s: list[float] | None = None
    #: Acquisition time spread across slices within a frame: slice z at frame_time + z/(n-1)*stagger (s).
    slice_stagger_s: float = 0.0
    #: Noise std per voxel per frame (HU) at this voxel size, and its in-plane correlation FWHM (mm).
    noise_hu: float = 8.0
    noise_fwhm_mm: float = 1.0
    #: Hemisphere of the MCA-territory lesion: "left" (patient left, larger x index), "right" or None.
    lesion: str | None = "left"
    #: Scale of the lesion size (1 ~ 20 mL core / 80 mL Tmax>6 s in the default 40 mm slab).
    lesion_size: float = 1.0
    #: Extra bolus-arrival delay of ALL tissue relative to the AIF (s).
    tissue_delay_s: float = 0.0
    #: Lesion bolus delays (s): (core centre, penumbra outer edge, benign oligemia ring).
    lesion_delay_s: tuple[float, float, float] = (8.5, 4.3, 2.0)
    #: Time constant (s) of the exponential dispersion kernel applied to all tissue inflow.
    dispersion_s: float = 1.0
    #: Arterial input: peak (delta HU), FWHM (s), arrival time (s), gamma-variate exponent.
    aif_peak_hu: float = 350.0
    aif_fwhm_s: float = 9.0
    aif_arrival_s: float = 7.0
    aif_alpha: float = 3.0
    #: Recirculation peak as a fraction of the first-pass peak.
    recirculation: float = 0.2
    #: Venous outflow: pure delay after the AIF (s; >= 10 s gives prolonged venous transit) and dispersion (s).
    venous_delay_s: float = 5.0
    venous_dispersion_s: float = 2.5
    #: Max rigid motion per frame: translation (mm) and rotation motion_mm/50 (rad).
    motion_mm: float = 0.0
    #: In-plane head yaw (deg) and head position offset from the image centre (x, y mm, scanner frame).
    rotation_deg: float = 0.0
    head_offset_mm: tuple[float, float] = (0.0, 0.0)
    #: Seed of noise and motion; anatomy_seed sets the smooth variations of the anatomy and perfusion.
    seed: int = 0
    anatomy_seed: int = 0
    #: Relative amplitude of the smooth spatial variation of CBF and MTT in normal tissue.
    variation: float = 0.10
    #: Through-slice partial volume of the tissue classes (GM/WM/CSF/deep grey/bone mixed inside thick slices).
    #: Off by default: classes are then assigned at voxel centres and only vessels are partial-volumed.
    tissue_partial_volume: bool = False
    #: Residue (transit-time) shape of all tissue: "exponential" (default), "gamma" (shape ``gamma_k``), "box"
    #: or "lognormal" (log-SD ``lognormal_sigma``); see :func:`.physics.residue_function`.  Truth Tmax = delay +
    #: peak of the dispersed residue (box: its plateau start, :func:`.physics.residue_truth`).  Non-exponential
    #: shapes need ``tissue_partial_volume=False``.
    residue: str = "exponential"
    gamma_k: float = 3.0
    lognormal_sigma: float = 0.5
    patient_name: str = "PHANTOM^DEMO"

    def resolved_frame_times(self) -> np.ndarray:
        ft = np.arange(40) * 1.5 if self.frame_times_s is None else np.asarray(self.frame_times_s, float)
        if ft.ndim != 1 or len(ft) < 2 or np.any(np.diff(ft) <= 0):
            raise ValueError("frame_times_s must be a strictly increasing list of at least 2 times")
        return ft - ft[0]

    def lesion_sign(self) -> int:
        if self.lesion is None or str(self.lesion).lower() in ("none", ""):
            return 0
        side = str(self.lesion).lower()
        if side not in ("left", "right"):
            raise ValueError(f"lesion must be 'left', 'right' or None, got {self.lesion!r}")
        return +1 if side == "left" else -1


@dataclass(repr=False)
class Phantom:
    """A generated phantom: 4D HU series, acquisition times, geometry and ground truth."""

    #: float32 (t, z, y, x) HU.
    hu: np.ndarray
    #: float64 (t, z): acquisition time of each frame and slice, s; times_s[0, 0] == 0.
    times_s: np.ndarray
    #: 4x4 voxel (x, y, z) -> RAS+ mm.
    affine_ras: np.ndarray
    truth: PhantomTruth
    truth_metrics: dict[str, Any]
    spec: PhantomSpec
    #: (t, 6) rigid motion per frame: translation x, y, z (mm, scanner axes) and rotations (rad).
    motion: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))

    def __repr__(self) -> str:  # short: the arrays are large
        m = self.truth_metrics
        return (f"Phantom(hu={self.hu.shape} {self.hu.dtype}, lesion={m.get('lesion_side')!r}, "
                f"core_ml={m.get('core_ml'):.1f}, hypoperfusion_ml={m.get('hypoperfusion_ml'):.1f}, "
                f"seed={self.spec.seed})")

    @property
    def voxel_volume_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine_ras[:3, :3])) / 1000.0)

    @property
    def spacing_xyz_mm(self) -> tuple[float, float, float]:
        return (self.spec.pixel_mm, self.spec.pixel_mm, self.spec.slice_mm)


# ----------------------------------------------------------------------------------------------- geometry
def affine_for(spec: PhantomSpec) -> np.ndarray:
    """RAS affine: image centre at R = 0, A = -15 mm; slice k at S = 40 + z_bottom + k * slice_mm."""
    n = spec.matrix
    px = py = float(spec.pixel_mm)
    c = (n - 1) / 2.0
    aff = np.eye(4)
    aff[0, 0], aff[1, 1], aff[2, 2] = -px, -py, float(spec.slice_mm)
    aff[0, 3] = c * px
    aff[1, 3] = -15.0 + c * py
    aff[2, 3] = 40.0 + float(spec.z_bottom_mm)
    return aff


def _scanner_slice_coords(spec: PhantomSpec, k: int) -> np.ndarray:
    """Voxel centres of slice k in the scanner frame (mm): (y, x, 3) with x toward patient left, y posterior."""
    n = spec.matrix
    c = (n - 1) / 2.0
    ax = (np.arange(n) - c) * spec.pixel_mm
    xs, ys = np.meshgrid(ax, ax, indexing="xy")  # (y, x)
    zs = np.full_like(xs, spec.z_bottom_mm + k * spec.slice_mm)
    return np.stack([xs, ys, zs], axis=-1)


def make_to_head(spec: PhantomSpec):
    """Function mapping scanner-frame points (..., 3) to head-frame points (u, v, w)."""
    rot_inv = A.rotz(spec.rotation_deg).T
    off = np.array([spec.head_offset_mm[0], spec.head_offset_mm[1], 0.0])

    def to_head(p: np.ndarray) -> np.ndarray:
        return (p - off) @ rot_inv.T

    return to_head


def make_from_head(spec: PhantomSpec):
    """Inverse of :func:`make_to_head`: head-frame points (..., 3) to the scanner frame."""
    rot = A.rotz(spec.rotation_deg)
    off = np.array([spec.head_offset_mm[0], spec.head_offset_mm[1], 0.0])

    def from_head(p: np.ndarray) -> np.ndarray:
        return p @ rot.T + off

    return from_head


def _lesion_profiles(d: np.ndarray, delays: tuple[float, float, float]):
    """CBF fraction, CBV fraction and bolus delay (s) vs the normalised lesion distance ``d`` (piecewise linear)."""
    dc, dp, do = (float(x) for x in delays)
    f_cbf = np.interp(d, [0.0, 0.55, 0.62, 0.95, 1.2, 1.45], [0.10, 0.14, 0.56, 0.72, 0.90, 1.0])
    f_cbv = np.interp(d, [0.0, 0.55, 0.62, 0.8, 0.95, 1.2, 1.45], [0.35, 0.5, 0.98, 1.12, 1.08, 1.02, 1.0])
    delay = np.interp(d, [0.0, 0.55, 0.95, 1.2, 1.45], [dc, 0.9 * dc, dp, do, 0.0])
    return f_cbf, f_cbv, delay


# ----------------------------------------------------------------------------------------------- generation
def make_phantom(spec: PhantomSpec | None = None) -> Phantom:
    """Generate the phantom described by ``spec`` (frame by frame, float32 output): the anatomy and each voxel's
    perfusion parameters, the arterial and venous input curves, one tissue kernel per distinct MTT, the truth
    maps, then every frame (tissue, vessels, motion, noise)."""
    spec = spec or PhantomSpec()
    nz, n = int(spec.n_slices), int(spec.matrix)
    if nz < 1 or n < 8:
        raise ValueError("need n_slices >= 1 and matrix >= 8")
    lesion_side = spec.lesion_sign()
    ft = spec.resolved_frame_times()
    zfrac = np.arange(nz) / (nz - 1) if nz > 1 else np.zeros(1)
    times = ft[:, None] + zfrac[None, :] * float(spec.slice_stagger_s)
    times -= times[0, 0]
    anat = _anatomy(spec, lesion_side)
    t_fine, ca, cv = _input_curves(spec, times, anat.delay)
    kernels = _kernel_tables(spec, anat, ca)
    mix = _mix_tissue(spec, anat.frac, anat.cls_cbf, anat.cls_mtt, kernels.cls_idx, kernels.cls_row, kernels.t_peak,
                      kernels.r_max, anat.labels.shape)
    truth = _build_truth(spec, anat.labels, anat.f_art, anat.f_ven, anat.f_core, mix, anat.delay, anat.side,
                         anat.lesion_d, t_fine, ca, cv)
    hu, motion = _frames(spec, times, anat, kernels, t_fine, ca, cv)
    affine = affine_for(spec)
    metrics = compute_truth_metrics(truth, spec, affine, lesion_side)
    return Phantom(hu=hu, times_s=times, affine_ras=affine, truth=truth, truth_metrics=metrics, spec=spec,
                   motion=motion)


@dataclass
class _Anatomy:
    """Per-voxel anatomy and perfusion parameters (z, y, x) at the frame-0 position: the majority class before
    vessels, the baseline HU, the arterial / venous / arterial-core volume fractions, for each perfused class its
    volume fraction, CBF and snapped MTT, the bolus delay (s), the hemisphere (+1 / -1, 0 outside) and the
    lesion distance (inf outside brain tissue)."""

    labels: np.ndarray
    base: np.ndarray
    f_art: np.ndarray
    f_ven: np.ndarray
    f_core: np.ndarray
    frac: dict[int, np.ndarray]
    cls_cbf: dict[int, np.ndarray]
    cls_mtt: dict[int, np.ndarray]
    delay: np.ndarray
    side: np.ndarray
    lesion_d: np.ndarray


def _anatomy(spec: PhantomSpec, lesion_side: int) -> _Anatomy:
    """The anatomy and per-voxel parameters, slice by slice (bounded memory); with ``tissue_partial_volume`` each
    voxel's classes are counted over sub-slices ~1 mm apart."""
    nz, n = int(spec.n_slices), int(spec.matrix)
    shape = (nz, n, n)
    to_head = make_to_head(spec)
    from_head = make_from_head(spec)
    voxel_mm = (spec.pixel_mm, spec.pixel_mm, spec.slice_mm)
    labels0 = np.empty(shape, np.int8)      # (majority) classes before vessels
    base = np.empty(shape, np.float32)
    f_art = np.empty(shape, np.float32)
    f_ven = np.empty(shape, np.float32)
    f_core = np.empty(shape, np.float32)
    # per perfused class: volume fraction in the voxel, CBF and (snapped) MTT of that class at the voxel
    frac = {c: np.zeros(shape, np.float32) for c in PERFUSED}
    cls_cbf = {c: np.zeros(shape, np.float32) for c in PERFUSED}
    cls_mtt = {c: np.zeros(shape, np.float32) for c in PERFUSED}
    delay = np.zeros(shape, np.float32)
    side = np.zeros(shape, np.int8)
    lesion_d = np.full(shape, np.inf, np.float32)
    tubes = A.vessel_tree(lesion_side)
    if spec.tissue_partial_volume:
        n_sub = int(np.clip(round(spec.slice_mm / 1.0), 3, 9))
        z_offsets = ((np.arange(n_sub) + 0.5) / n_sub - 0.5) * spec.slice_mm
    else:
        z_offsets = np.zeros(1)
    for k in range(nz):
        pscan = _scanner_slice_coords(spec, k)
        p = to_head(pscan)
        counts = np.zeros((9,) + p.shape[:-1], np.float32)
        b = np.zeros(p.shape[:-1], np.float32)
        for oz in z_offsets:
            p_sub = to_head(pscan + np.array([0.0, 0.0, oz])) if oz else p
            lab_s, skull_hu = A.classify(p_sub, spec.anatomy_seed)
            b_s = np.zeros(lab_s.shape, np.float32)
            for cls, hu in A.BASE_HU.items():
                b_s[lab_s == cls] = hu
            b_s[lab_s == A.SKULL] = skull_hu[lab_s == A.SKULL]
            b += b_s
            for cls in range(7):
                counts[cls] += lab_s == cls
        counts /= len(z_offsets)
        b /= len(z_offsets)
        lab = np.argmax(counts, axis=0).astype(np.int8)
        labels0[k] = lab
        fa, fv, fc = A.vessel_fractions(pscan, to_head, from_head, voxel_mm, tubes)
        f_art[k], f_ven[k], f_core[k] = fa, fv, fc
        # faint smooth texture in soft tissue
        soft = np.isin(lab, (A.SCALP, A.CSF, A.GM, A.WM, A.DEEP))
        b[soft] += (1.0 * A.smooth_field(p[soft], spec.anatomy_seed + 3)).astype(np.float32)
        fvess = fa + fv
        base[k] = (1.0 - fvess) * b + fvess * A.BASE_HU[A.ARTERY]
        # perfusion parameters of every perfused class at this voxel (smooth fields at the voxel centre)
        var_f = 1.0 + spec.variation * A.smooth_field(p, spec.anatomy_seed + 11)
        var_m = 1.0 + 0.8 * spec.variation * A.smooth_field(p, spec.anatomy_seed + 13)
        d = A.lesion_distance(p, lesion_side, spec.lesion_size, spec.anatomy_seed)
        les = d < 1.45
        fcbf = np.ones(lab.shape)
        fcbv = np.ones(lab.shape)
        ldel = np.zeros(lab.shape)
        if les.any():
            a_, b_, c_ = _lesion_profiles(d[les], spec.lesion_delay_s)
            fcbf[les], fcbv[les] = a_, b_
            ldel[les] = c_ * (1.0 + 0.06 * A.smooth_field(p[les], spec.anatomy_seed + 17))
        has_brain = np.zeros(lab.shape, bool)
        for cls in PERFUSED:
            present = counts[cls] > 0
            frac[cls][k] = counts[cls]
            f0, m0 = NORMAL_PARAMS[cls]
            c_val = f0 * var_f
            m_val = m0 * var_m
            if cls != A.SCALP:
                c_val = c_val * fcbf
                m_val = m_val * fcbv / fcbf
                has_brain |= present
            cls_cbf[cls][k] = np.where(present, c_val, 0.0)
            cls_mtt[cls][k] = np.where(present, np.round(m_val / MTT_STEP_S) * MTT_STEP_S, 0.0)
        delay[k] = float(spec.tissue_delay_s) + np.where(has_brain, ldel, 0.0)
        brainish = np.isin(lab, (A.GM, A.WM, A.DEEP))
        lesion_d[k] = np.where(brainish, d, np.inf)
        intracranial = np.isin(lab, (A.CSF, A.GM, A.WM, A.DEEP))
        side[k] = np.where(intracranial, np.sign(p[..., 0]), 0).astype(np.int8)
    return _Anatomy(labels=labels0, base=base, f_art=f_art, f_ven=f_ven, f_core=f_core, frac=frac, cls_cbf=cls_cbf,
                    cls_mtt=cls_mtt, delay=delay, side=side, lesion_d=lesion_d)


def _input_curves(spec: PhantomSpec, times: np.ndarray, delay: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fine time grid (s) and the arterial and venous curves (delta HU) on it.  The grid always covers the
    whole first pass, recirculation and venous outflow (so the curves and their normalisation do not depend on the
    acquisition length), and the acquisition itself."""
    dt = FINE_DT_S
    t_curves = (spec.aif_arrival_s + 8.0 * spec.aif_fwhm_s + max(spec.venous_delay_s, 0.0)
                + 10.0 * max(spec.venous_dispersion_s, spec.dispersion_s, 4.0) + 20.0)
    t_end = max(float(times.max()) + max(0.0, -float(delay.min())) + 2.0, t_curves)
    t_fine = np.arange(0.0, t_end + dt, dt)
    ca = P.arterial_curve(t_fine, spec.aif_peak_hu, spec.aif_fwhm_s, spec.aif_arrival_s, spec.recirculation,
                          alpha=spec.aif_alpha)
    cv = P.venous_curve(ca, dt, spec.venous_delay_s, spec.venous_dispersion_s)
    return t_fine, ca, cv


@dataclass
class _Kernels:
    """One tissue kernel per distinct (snapped) MTT over all classes (``table`` (n_mtt, T) on the fine grid), the
    true residue peak time and height of each, and per perfused class its voxels (flat indices) and their rows."""

    table: np.ndarray
    t_peak: np.ndarray
    r_max: np.ndarray
    cls_idx: dict[int, np.ndarray]
    cls_row: dict[int, np.ndarray]


def _kernel_tables(spec: PhantomSpec, anat: _Anatomy, ca: np.ndarray) -> _Kernels:
    """The tissue kernels of every distinct MTT of the anatomy (:func:`.physics.tissue_kernel_table_shape`)."""
    cls_idx = {c: np.flatnonzero(anat.frac[c].reshape(-1) > 0) for c in PERFUSED}
    cls_q = {c: np.round(anat.cls_mtt[c].reshape(-1)[cls_idx[c]] / MTT_STEP_S).astype(np.int64) for c in PERFUSED}
    uniq = np.unique(np.concatenate([cls_q[c] for c in PERFUSED]))
    mtt_vals = uniq * MTT_STEP_S
    shape_kw = _shape_kw(spec)
    table = P.tissue_kernel_table_shape(ca, FINE_DT_S, mtt_vals, spec.dispersion_s, spec.residue, **shape_kw)
    t_peak, r_max = P.residue_truth(mtt_vals, spec.dispersion_s, spec.residue, **shape_kw)
    cls_row = {c: np.searchsorted(uniq, cls_q[c]) for c in PERFUSED}
    return _Kernels(table=table, t_peak=t_peak, r_max=r_max, cls_idx=cls_idx, cls_row=cls_row)


def _frames(spec: PhantomSpec, times: np.ndarray, anat: _Anatomy, kernels: _Kernels, t_fine: np.ndarray,
            ca: np.ndarray, cv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every frame (t, z, y, x) float32 HU: baseline + each class's tissue curve (its kernel read at the slice's
    acquisition time minus the voxel's delay) + arterial and venous partial volume, then rigid motion and noise;
    and the motion parameters."""
    nz, n = int(spec.n_slices), int(spec.matrix)
    shape = (nz, n, n)
    nt = len(times)
    dt = FINE_DT_S
    table_flat = kernels.table.reshape(-1)
    ncol = kernels.table.shape[1]
    # per (class, voxel) constants for the frame loop
    tissue_w = (1.0 - anat.f_art - anat.f_ven).reshape(-1)
    loop = []
    for c in PERFUSED:
        idx = kernels.cls_idx[c]
        if len(idx) == 0:
            continue
        amp = (anat.frac[c].reshape(-1)[idx].astype(np.float64) * anat.cls_cbf[c].reshape(-1)[idx] * P.FLOW_SCALE
               * tissue_w[idx])
        loop.append((idx, idx // (n * n), amp, kernels.cls_row[c].astype(np.int64) * ncol,
                     anat.delay.reshape(-1)[idx].astype(np.float64)))
    ves_idx = np.flatnonzero((anat.f_art + anat.f_ven).reshape(-1) > 0)
    z_ves = ves_idx // (n * n)
    fa_ves = anat.f_art.reshape(-1)[ves_idx].astype(np.float64)
    fv_ves = anat.f_ven.reshape(-1)[ves_idx].astype(np.float64)
    del tissue_w

    ss = np.random.SeedSequence(int(spec.seed))
    noise_ss, motion_ss = ss.spawn(2)
    noise = CorrelatedNoise(spec.noise_hu, spec.noise_fwhm_mm, spec.pixel_mm, np.random.default_rng(noise_ss))
    motion = motion_parameters(nt, spec.motion_mm, np.random.default_rng(motion_ss))
    centre_idx = np.array([(n - 1) / 2.0 + spec.head_offset_mm[0] / spec.pixel_mm,
                           (n - 1) / 2.0 + spec.head_offset_mm[1] / spec.pixel_mm, (nz - 1) / 2.0])
    voxel_mm = (spec.pixel_mm, spec.pixel_mm, spec.slice_mm)
    hu = np.empty((nt,) + shape, dtype=np.float32)
    for f in range(nt):
        frame = anat.base.copy()
        flat = frame.reshape(-1)
        for idx, zi, amp, row0, dl in loop:
            s = np.clip((times[f][zi] - dl) / dt, 0.0, ncol - 1.000001)
            i0 = s.astype(np.int64)
            w = s - i0
            i0 += row0
            val = table_flat[i0] * (1.0 - w) + table_flat[i0 + 1] * w
            flat[idx] += (amp * val).astype(np.float32)
        if len(ves_idx):
            tz = times[f]
            ca_z = np.interp(tz, t_fine, ca)
            cv_z = np.interp(tz, t_fine, cv)
            flat[ves_idx] += (fa_ves * ca_z[z_ves] + fv_ves * cv_z[z_ves]).astype(np.float32)
        if spec.motion_mm > 0:
            frame = apply_rigid(frame, motion[f], voxel_mm, centre_idx)
        frame += noise.frame(shape)
        hu[f] = frame
    return hu, motion


def _shape_kw(spec: PhantomSpec) -> dict[str, float]:
    """Shape parameters of ``spec.residue`` for :func:`.physics.residue_function`."""
    if spec.residue not in P.RESIDUE_SHAPES:
        raise ValueError(f"residue must be one of {P.RESIDUE_SHAPES}, got {spec.residue!r}")
    if spec.residue != "exponential" and spec.tissue_partial_volume:
        raise ValueError("tissue_partial_volume=True supports only the exponential residue")
    return {"gamma": {"gamma_k": spec.gamma_k}, "lognormal": {"lognormal_sigma": spec.lognormal_sigma}}.get(
        spec.residue, {})


def _mix_tissue(spec, frac, cls_cbf, cls_mtt, cls_idx, cls_row, t_peak, r_max, shape) -> dict[str, np.ndarray]:
    """Voxel truth of the brain tissue classes (GM, WM, deep grey), mixed by volume fraction.

    CBF and CBV add over the classes (CSF contributes nothing); MTT = 60 * CBV / CBF.  The voxel's effective
    residue is the CBF-weighted mixture of the class residues (they share the voxel's delay); its peak time is
    taken from the table for single-class voxels and found by bisection on the closed-form derivative of the
    mixture otherwise (exponential dispersion and residue).  Returns float64 (z, y, x) arrays.
    """
    brain_cls = (A.GM, A.WM, A.DEEP)
    cbf = np.zeros(shape)
    cbv = np.zeros(shape)
    n_cls = np.zeros(shape, np.int8)
    tpk = np.zeros(shape)
    rmx = np.zeros(shape)
    for c in brain_cls:
        fc = frac[c].astype(np.float64)
        cb = fc * cls_cbf[c]
        cbf += cb
        cbv += cb * cls_mtt[c].astype(np.float64) / 60.0
        n_cls += fc > 0
        idx = cls_idx[c]
        tp = np.zeros(shape).reshape(-1)
        tp[idx] = t_peak[cls_row[c]]
        rm = np.zeros(shape).reshape(-1)
        rm[idx] = r_max[cls_row[c]]
        single = (fc >= 1.0)
        tpk = np.where(single, tp.reshape(shape), tpk)
        rmx = np.where(single, rm.reshape(shape), rmx)
    with np.errstate(invalid="ignore", divide="ignore"):
        mtt = np.where(cbf > 0, 60.0 * cbv / np.where(cbf > 0, cbf, 1.0), 0.0)
    mixed = (n_cls >= 1) & ~np.any([frac[c] >= 1.0 for c in brain_cls], axis=0) & (cbf > 0)
    if mixed.any():
        tau = float(spec.dispersion_s)
        w = [frac[c][mixed].astype(np.float64) * cls_cbf[c][mixed] / cbf[mixed] for c in brain_cls]
        m = [np.where(cls_mtt[c][mixed] > 0, cls_mtt[c][mixed], 1.0).astype(np.float64) for c in brain_cls]
        tp_c = []
        for c in brain_cls:
            tp = np.zeros(shape).reshape(-1)
            tp[cls_idx[c]] = t_peak[cls_row[c]]
            tp_c.append(tp.reshape(shape)[mixed])
        present = [wc > 0 for wc in w]
        lo = np.min([np.where(pr, t, np.inf) for pr, t in zip(present, tp_c)], axis=0)
        hi = np.max([np.where(pr, t, -np.inf) for pr, t in zip(present, tp_c)], axis=0)
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            deriv = sum(wc * P.effective_residue_derivative(mid, mc, tau) for wc, mc in zip(w, m))
            lo = np.where(deriv > 0, mid, lo)
            hi = np.where(deriv > 0, hi, mid)
        t_mix = 0.5 * (lo + hi)
        tpk[mixed] = t_mix
        rmx[mixed] = sum(wc * P.effective_residue(t_mix, mc, tau) for wc, mc in zip(w, m))
    return {"cbf": cbf, "cbv": cbv, "mtt": mtt, "t_peak": tpk, "r_max": rmx}


def _build_truth(spec, labels0, f_art, f_ven, f_core, mix, delay, side, lesion_d, t_fine, ca, cv) -> PhantomTruth:
    """Assemble :class:`PhantomTruth` from the per-voxel parameters (all (z, y, x), frame-0 position)."""
    shape = labels0.shape
    fvess = f_art + f_ven
    intracranial = np.isin(labels0, (A.CSF, A.GM, A.WM, A.DEEP))
    labels = labels0.copy()
    labels[(f_ven >= 0.5)] = A.SINUS
    labels[(f_art >= 0.5)] = A.ARTERY
    vessels = (fvess > 0.02) & intracranial
    tissue = np.isin(labels0, (A.GM, A.WM, A.DEEP)) & ~vessels & (mix["cbf"] > 0)

    zero = 0.0
    cbf_t = np.where(tissue, mix["cbf"], zero).astype(np.float32)
    mtt_t = np.where(tissue, mix["mtt"], zero).astype(np.float32)
    cbv_t = (cbf_t.astype(np.float64) * mtt_t.astype(np.float64) / 60.0).astype(np.float32)
    sinus_lab = labels == A.SINUS
    delay_t = np.where(tissue, delay, zero)
    delay_t = np.where(sinus_lab, spec.venous_delay_s, delay_t).astype(np.float32)
    tmax_t = np.where(tissue, delay + mix["t_peak"], zero)
    tmax_t = np.where(sinus_lab, spec.venous_delay_s, tmax_t).astype(np.float32)
    cbf_app = np.where(tissue, mix["cbf"] * mix["r_max"], zero).astype(np.float32)

    aif_vox = np.argwhere(f_art >= 0.75)
    if len(aif_vox) == 0 and f_art.max() > 0:
        order = np.argsort(f_art.reshape(-1))[::-1][:20]
        order = order[f_art.reshape(-1)[order] > 0]
        aif_vox = np.column_stack(np.unravel_index(order, shape))
    vof_vox = np.argwhere(f_core >= 0.75)
    if len(vof_vox) == 0 and f_core.max() > 0:
        order = np.argsort(f_core.reshape(-1))[::-1][:20]
        order = order[f_core.reshape(-1)[order] > 0]
        vof_vox = np.column_stack(np.unravel_index(order, shape))

    lesion_any = tissue & np.isfinite(lesion_d) & (lesion_d < 1.45)
    truth = PhantomTruth(
        cbf=cbf_t, cbv=cbv_t, mtt=mtt_t, tmax=tmax_t, delay_s=delay_t, labels=labels.astype(np.int8),
        brain=intracranial, tissue=tissue, csf=labels == A.CSF, vessels=vessels,
        core=np.zeros(shape, bool), penumbra=np.zeros(shape, bool), hypoperfusion=np.zeros(shape, bool),
        lesion_any=lesion_any, sinus=(f_core >= 0.5) & sinus_lab, cortex=(labels == A.GM) & tissue,
        side=np.where(intracranial, side, 0).astype(np.int8),
        aif_true=(t_fine.copy(), ca.copy()), vof_true=(t_fine.copy(), cv.copy()),
        aif_voxels_zyx=aif_vox.astype(np.int64).reshape(-1, 3), vof_voxels_zyx=vof_vox.astype(np.int64).reshape(-1, 3),
        artery_fraction=f_art, venous_fraction=f_ven, cbf_apparent=cbf_app,
        dispersion=np.where(tissue, float(spec.dispersion_s), zero).astype(np.float32),
        residue_peak_s=np.where(tissue, mix["t_peak"], zero).astype(np.float32),
    )
    compute_truth_masks(truth, spec.lesion_sign())
    return truth


def spec_to_dict(spec: PhantomSpec) -> dict[str, Any]:
    """JSON-friendly dict of a spec."""
    d = asdict(spec)
    for k, v in list(d.items()):
        if isinstance(v, tuple):
            d[k] = list(v)
    return d
