"""Analytic head anatomy of the phantom, in world millimetres (so any matrix / pixel size works).

Head frame (mm), origin at the head centre:
``u`` toward the patient's LEFT, ``v`` toward POSTERIOR, ``w`` toward SUPERIOR.  The midsagittal plane is ``u = 0``.
All shapes (ellipsoids, shells, tubes, sulcal patterns) are evaluated at voxel centres given in this frame;
vessel partial-volume fractions are obtained by supersampling the voxel box.

Labels: 0 air, 1 scalp/soft tissue, 2 skull, 3 CSF, 4 grey matter (cortex), 5 white matter, 6 deep grey,
7 artery, 8 venous sinus.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AIR, SCALP, SKULL, CSF, GM, WM, DEEP, ARTERY, SINUS = range(9)

#: Brain ellipsoid centre (u, v, w) and semi-axes, mm.
BRAIN_CENTRE = np.array([0.0, 4.0, -6.0])
BRAIN_AXES = np.array([62.0, 79.0, 76.0])
#: Shell thicknesses outside the brain surface, mm.
CSF_SHELL_MM = 2.0
SKULL_MM = 7.0
SCALP_MM = 5.0
#: Cortical grey-matter ribbon thickness, mm.
GM_THICK_MM = 2.8

#: Baseline (unenhanced) HU of each class.
BASE_HU = {AIR: -1000.0, SCALP: 40.0, SKULL: 1300.0, CSF: 5.0, GM: 38.0, WM: 30.0, DEEP: 36.0,
           ARTERY: 45.0, SINUS: 45.0}


# ----------------------------------------------------------------------------------------------- helpers
def ellipsoid_r(p: np.ndarray, centre, axes) -> np.ndarray:
    """Normalised ellipsoid radius (1 on the surface) of points ``p`` (..., 3)."""
    q = (p - np.asarray(centre, float)) / np.asarray(axes, float)
    return np.sqrt(np.einsum("...i,...i->...", q, q))


def ellipsoid_signed_distance(p: np.ndarray, centre, axes) -> np.ndarray:
    """First-order signed distance to an ellipsoid surface, mm (negative inside).

    ``(r - 1) / |grad r|``: exact on the surface, a smooth approximation elsewhere.
    """
    a = np.asarray(axes, float)
    d = p - np.asarray(centre, float)
    r = np.sqrt(np.einsum("...i,...i->...", d / a, d / a))
    g = np.sqrt(np.einsum("...i,...i->...", d / a**2, d / a**2))
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.where(g > 1e-12, (r - 1.0) * r / np.maximum(g, 1e-12), -a.min())
    return sd


def smooth_field(p: np.ndarray, seed: int, n_waves: int = 5, wavelength_mm=(35.0, 80.0)) -> np.ndarray:
    """Smooth deterministic pseudo-random field in [-1, 1] (sum of plane waves in world mm)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(p.shape[:-1])
    amps = rng.uniform(0.5, 1.0, n_waves)
    for a in amps:
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        k = 2 * np.pi / rng.uniform(*wavelength_mm)
        out += a * np.sin(k * (p @ direction) + rng.uniform(0, 2 * np.pi))
    return out / amps.sum()


def wave_field(p: np.ndarray, seed: int, n_waves: int = 12, wavelength_mm=(25.0, 35.0)
               ) -> tuple[np.ndarray, np.ndarray]:
    """Zero-mean random field (sum of plane waves, world mm) and its gradient (per mm) at points (n, 3)."""
    rng = np.random.default_rng(seed)
    g = np.zeros(p.shape[0])
    grad = np.zeros(p.shape)
    for _ in range(n_waves):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        k = 2 * np.pi / rng.uniform(*wavelength_mm)
        a = rng.uniform(0.6, 1.0)
        arg = k * (p @ direction) + rng.uniform(0, 2 * np.pi)
        g += a * np.sin(arg)
        grad += (a * k * np.cos(arg))[:, None] * direction[None, :]
    return g, grad


def rotz(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def capsule_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of points ``p`` (..., 3) to the segment a-b, mm."""
    ab = b - a
    t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    d = p - a - t[..., None] * ab
    return np.sqrt(np.einsum("...i,...i->...", d, d))


# ----------------------------------------------------------------------------------------------- vessels
@dataclass
class Tube:
    """A straight vessel segment with spherical caps (a capsule), head-frame mm."""

    a: np.ndarray
    b: np.ndarray
    radius: float
    kind: int  # ARTERY or SINUS
    name: str = ""
    sinus_core: bool = False  # part of the superior sagittal sinus / torcula (the "sinus" truth mask)


def _poly(points, radius, kind, name, sinus_core=False) -> list[Tube]:
    pts = [np.asarray(p, float) for p in points]
    rad = np.broadcast_to(np.asarray(radius, float), (len(pts) - 1,))
    return [Tube(pts[i], pts[i + 1], float(rad[i]), kind, name, sinus_core) for i in range(len(pts) - 1)]


def vessel_tree(lesion_side: int) -> list[Tube]:
    """Arteries (ICA, MCA M1/M2, ACA, PCA) and venous sinuses (SSS, torcula, transverse), head frame.

    ``lesion_side`` (+1 patient-left, -1 right, 0 none): the MCA on that side is occluded at mid-M1, so its distal
    M1 and M2 branches carry no contrast and are left out.
    """
    tubes: list[Tube] = []
    for s in (+1, -1):
        occluded = s == lesion_side
        ica_top = (s * 14.0, -8.0, -16.0)
        tubes += _poly([(s * 14.0, -9.0, -60.0), ica_top], 2.3, ARTERY, "ICA")
        m1_mid = (s * 24.0, -6.0, -14.5)
        genu = (s * 34.0, -4.0, -13.0)
        tubes += _poly([ica_top, m1_mid], 1.6, ARTERY, "M1")
        if not occluded:
            tubes += _poly([m1_mid, genu], 1.5, ARTERY, "M1")
            # M2 trunks ascending over the insula, then turning onto the lateral convexity (M3/M4).
            tubes += _poly([genu, (s * 36.0, -12.0, -10.0), (s * 37.0, -15.0, 22.0), (s * 52.0, -18.0, 40.0)],
                           [1.3, 1.3, 0.9], ARTERY, "M2")
            tubes += _poly([genu, (s * 36.5, 2.0, -10.0), (s * 38.0, 6.0, 24.0), (s * 55.0, 10.0, 36.0)],
                           [1.3, 1.3, 0.9], ARTERY, "M2")
            tubes += _poly([genu, (s * 37.0, 10.0, -10.0), (s * 41.0, 22.0, 14.0), (s * 57.0, 30.0, 20.0)],
                           [1.2, 1.2, 0.9], ARTERY, "M2")
        # ACA: A1 medially, then A2/pericallosal (paired, 1.6 mm off the midline) around the corpus callosum.
        tubes += _poly([ica_top, (s * 2.0, -20.0, -12.0)], 1.2, ARTERY, "A1")
        tubes += _poly([(s * 2.0, -20.0, -12.0), (s * 1.6, -40.0, 6.0), (s * 1.6, -36.0, 26.0),
                        (s * 1.6, -10.0, 36.0), (s * 1.6, 25.0, 33.0)], 1.1, ARTERY, "A2")
        # PCA around the midbrain toward the occipital lobe.
        tubes += _poly([(0.0, 14.0, -30.0), (s * 12.0, 18.0, -20.0), (s * 24.0, 38.0, -12.0),
                        (s * 18.0, 64.0, -6.0)], 1.2, ARTERY, "PCA")
    tubes += _poly([(0.0, 12.0, -70.0), (0.0, 14.0, -30.0)], 1.8, ARTERY, "basilar")

    # Superior sagittal sinus: just inside the inner table along the midline, from the frontal region over the
    # vertex to the torcula (posterior, low).  Parameterised by the angle eta from the vertex in the (v, w) plane.
    inner_b = BRAIN_AXES[1] + CSF_SHELL_MM
    inner_c = BRAIN_AXES[2] + CSF_SHELL_MM
    etas = np.radians(np.linspace(-70.0, 100.0, 35))
    pts, radii = [], []
    for eta in etas:
        rad = 3.0 + 2.0 * (eta - etas[0]) / (etas[-1] - etas[0])  # widens toward the torcula
        vv = BRAIN_CENTRE[1] + (inner_b - rad - 0.5) * np.sin(eta)
        ww = BRAIN_CENTRE[2] + (inner_c - rad - 0.5) * np.cos(eta)
        pts.append((0.0, vv, ww))
        radii.append(rad)
    tubes += _poly(pts, radii[:-1], SINUS, "SSS", sinus_core=True)
    torcula = np.asarray(pts[-1])
    tubes += _poly([torcula, torcula + (0, 0, -0.01)], 6.5, SINUS, "torcula", sinus_core=True)
    for s in (+1, -1):  # transverse sinuses along the inner table of the occipital bone
        tubes += _poly([torcula, (s * 25.0, torcula[1] - 4.0, torcula[2] - 1.0),
                        (s * 45.0, torcula[1] - 22.0, torcula[2] - 3.0)], 3.5, SINUS, "transverse")
    return tubes


def vessel_fractions(centres_scan: np.ndarray, to_head, from_head, voxel_mm, tubes: list[Tube]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Partial-volume fractions of arterial blood, venous-sinus blood and the "sinus core" per voxel of a slice.

    ``centres_scan``: (ny, nx, 3) voxel centres of one slice on a regular grid in the scanner frame (mm);
    ``to_head`` / ``from_head``: functions mapping points (..., 3) scanner -> head frame and back;
    ``voxel_mm``: (dx, dy, dz) voxel size.  Each voxel box is supersampled (<= ~0.35 mm in-plane, 0.5 mm
    through-plane, at most 8 x 8 x 12 points) only inside the bounding box of each tube.
    """
    ny, nx = centres_scan.shape[:2]
    f_art = np.zeros((ny, nx), dtype=np.float32)
    f_ven = np.zeros((ny, nx), dtype=np.float32)
    f_core = np.zeros((ny, nx), dtype=np.float32)
    dx, dy, dz = (float(v) for v in voxel_mm)
    half_diag = 0.5 * np.sqrt(dx * dx + dy * dy + dz * dz)
    xs = centres_scan[0, :, 0]
    ys = centres_scan[:, 0, 1]
    zc = float(centres_scan[0, 0, 2])
    nx_s = int(np.clip(np.ceil(dx / 0.35), 2, 8))
    ny_s = int(np.clip(np.ceil(dy / 0.35), 2, 8))
    nz_s = int(np.clip(np.ceil(dz / 0.5), 2, 12))
    ox = ((np.arange(nx_s) + 0.5) / nx_s - 0.5) * dx
    oy = ((np.arange(ny_s) + 0.5) / ny_s - 0.5) * dy
    oz = ((np.arange(nz_s) + 0.5) / nz_s - 0.5) * dz
    offs = np.stack(np.meshgrid(ox, oy, oz, indexing="ij"), -1).reshape(-1, 3)
    # Per tube: the block of voxels whose centre can be within reach, then supersample those.
    ent_idx, ent_flags = [], []  # flat voxel index and (3, n_samples) inside-flags per (tube, voxel) entry
    for tb in tubes:
        reach = tb.radius + half_diag
        lo = np.minimum(tb.a, tb.b) - reach
        hi = np.maximum(tb.a, tb.b) + reach
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        cs = from_head(corners)
        if cs[:, 2].min() > zc or cs[:, 2].max() < zc:
            continue
        i0, i1 = np.searchsorted(xs, cs[:, 0].min()), np.searchsorted(xs, cs[:, 0].max(), side="right")
        j0, j1 = np.searchsorted(ys, cs[:, 1].min()), np.searchsorted(ys, cs[:, 1].max(), side="right")
        if i1 <= i0 or j1 <= j0:
            continue
        block = centres_scan[j0:j1, i0:i1]
        near = capsule_distance(to_head(block), tb.a, tb.b) < reach
        if not near.any():
            continue
        jj, ii = np.nonzero(near)
        jj += j0
        ii += i0
        code = 0 if tb.kind == ARTERY else (2 if tb.sinus_core else 1)
        pts = to_head(centres_scan[jj, ii][:, None, :] + offs[None, :, :])
        flags = np.zeros((len(jj), 3, len(offs)), dtype=bool)
        flags[:, code] = capsule_distance(pts, tb.a, tb.b) < tb.radius
        ent_idx.append(jj * nx + ii)
        ent_flags.append(flags)
    if not ent_idx:
        return f_art, f_ven, f_core
    idx = np.concatenate(ent_idx)
    flags = np.concatenate(ent_flags)
    order = np.argsort(idx, kind="stable")
    idx, flags = idx[order], flags[order]
    uniq, starts = np.unique(idx, return_index=True)
    merged = np.logical_or.reduceat(flags, starts, axis=0)  # (n_voxels, 3, n_samples)
    art = merged[:, 0]
    ven = (merged[:, 1] | merged[:, 2]) & ~art
    core = merged[:, 2] & ~art
    f_art.reshape(-1)[uniq] = art.mean(axis=1)
    f_ven.reshape(-1)[uniq] = ven.mean(axis=1)
    f_core.reshape(-1)[uniq] = core.mean(axis=1)
    return f_art, f_ven, f_core


# ----------------------------------------------------------------------------------------------- tissue classes
def _in_ellipsoid(p, centre, axes, rot_deg: float = 0.0) -> np.ndarray:
    d = p - np.asarray(centre, float)
    if rot_deg:
        d = d @ rotz(rot_deg)  # rotate the point into the ellipsoid's own frame
    q = d / np.asarray(axes, float)
    return np.einsum("...i,...i->...", q, q) <= 1.0


def classify(p: np.ndarray, anatomy_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tissue labels (without vessels) and baseline-HU texture at head-frame points ``p`` (..., 3).

    Returns ``labels`` (int8, classes 0-6) and ``skull_hu`` (float32, the bone HU where label == SKULL: dense
    outer/inner tables, softer diploe).
    """
    u, v, w = p[..., 0], p[..., 1], p[..., 2]
    sd = ellipsoid_signed_distance(p, BRAIN_CENTRE, BRAIN_AXES)  # mm, negative inside the brain
    # Slightly irregular head outline (a few mm) so the scalp is not a perfect ellipse.
    bump = 1.2 * smooth_field(p, anatomy_seed + 101, n_waves=3, wavelength_mm=(60.0, 120.0))
    labels = np.full(u.shape, AIR, dtype=np.int8)
    t_csf = CSF_SHELL_MM
    t_skull = t_csf + SKULL_MM
    t_scalp = t_skull + SCALP_MM + bump
    labels[sd <= t_scalp] = SCALP
    skull = (sd <= t_skull) & (sd > t_csf)
    labels[skull] = SKULL
    depth_in_skull = np.clip((sd - t_csf) / SKULL_MM, 0.0, 1.0)
    skull_hu = np.where(np.abs(depth_in_skull - 0.5) < 0.25, 750.0, 1450.0).astype(np.float32)
    labels[(sd <= t_csf) & (sd > 0)] = CSF

    brain = sd <= 0
    depth = -sd
    # ---- cortical folding: sulci are radial CSF clefts under the zero-level curves of a smooth random field
    # evaluated on the brain surface (meandering, branching pattern), lined by the GM ribbon.
    cortex = np.zeros(u.shape, dtype=bool)
    sulcal_csf = brain & (depth < 0.4)
    near = brain & (depth < 22.0)
    if near.any():
        pn = p[near]
        rel = pn - BRAIN_CENTRE
        rn = np.maximum(ellipsoid_r(pn, BRAIN_CENTRE, BRAIN_AXES), 0.2)
        p_surf = BRAIN_CENTRE + rel / rn[:, None]
        # bend the clefts with depth (sulci are not perfectly radial)
        dn0 = depth[near][:, None]
        bend = np.stack([smooth_field(pn, anatomy_seed + 41 + i, n_waves=3, wavelength_mm=(30.0, 60.0))
                         for i in range(3)], axis=-1)
        p_surf = p_surf + 0.45 * dn0 * bend
        g, grad = wave_field(p_surf, anatomy_seed + 29, n_waves=24, wavelength_mm=(15.0, 24.0))
        nrm = rel / np.maximum(np.linalg.norm(rel, axis=1, keepdims=True), 1e-6)
        grad_t = grad - np.einsum("ij,ij->i", grad, nrm)[:, None] * nrm
        dist_sulc = np.abs(g) / np.maximum(np.linalg.norm(grad_t, axis=1), 1e-6) * rn  # mm to the cleft plane
        sulc_depth = 8.0 + 8.0 * (0.5 + 0.5 * smooth_field(p_surf, anatomy_seed + 31, n_waves=4,
                                                             wavelength_mm=(30.0, 60.0)))
        dn = depth[near]
        half_w = 0.5 + 0.6 * np.clip(1.0 - dn / 6.0, 0.0, 1.0)  # clefts widen toward the surface
        in_s = (dist_sulc < half_w) & (dn < sulc_depth)
        gm_s = (dist_sulc < half_w + GM_THICK_MM) & (dn < sulc_depth + GM_THICK_MM)
        cortex[near] = (dn < GM_THICK_MM + 0.4) | gm_s
        sulcal_csf[near] |= in_s

    # ---- interhemispheric fissure (absent where the corpus callosum bridges the hemispheres).
    cc_top = 20.0 + 6.0 * np.clip(1.0 - (v / 38.0) ** 2, 0.0, 1.0)
    fissure_zone = (w > cc_top) | (v < -40.0) | (v > 40.0)
    fissure = brain & fissure_zone & (np.abs(u) < 1.0)
    medial_gm = brain & fissure_zone & (np.abs(u) < 1.0 + GM_THICK_MM)

    # ---- insula (curved GM band lateral to the lentiform nucleus), Sylvian cistern and fissure.
    au = np.abs(u)
    syl_zone = (w > -24.0) & (w < 12.0)
    q = np.sqrt(((au - 8.0) / 27.0) ** 2 + ((v + 2.0) / 36.0) ** 2)
    arc = syl_zone & (au > 26.0) & (np.abs(v + 2.0) < 24.0)
    insula = brain & arc & (q >= 1.0) & (q < 1.11)
    cistern = brain & arc & (q >= 1.11) & (q < 1.16)
    syl_plane = v - (-6.0 + 0.45 * (au - 36.0))
    lateral = (q >= 1.11) & (v > -34.0) & (v < 26.0)
    sylvian = brain & syl_zone & lateral & (np.abs(syl_plane) < 1.1)
    syl_gm = brain & syl_zone & lateral & (np.abs(syl_plane) < 1.1 + GM_THICK_MM)
    sylvian |= cistern
    syl_gm |= brain & arc & (q >= 1.16) & (q < 1.16 + GM_THICK_MM / 27.0)  # opercular cortex facing the insula

    labels[brain] = WM
    labels[cortex | medial_gm | syl_gm | insula] = GM
    labels[sulcal_csf | fissure | sylvian] = CSF

    # ---- deep grey nuclei and ventricles (per hemisphere, mirror-symmetric).
    deep = np.zeros(u.shape, dtype=bool)
    vent = np.zeros(u.shape, dtype=bool)
    for s in (+1.0, -1.0):
        deep |= _in_ellipsoid(p, (s * 13.5, -14.0, 6.0), (5.5, 9.0, 9.0), s * 15.0)  # caudate head
        deep |= _in_ellipsoid(p, (s * 23.0, -2.0, -5.0), (6.0, 14.0, 9.0), s * -8.0)  # lentiform
        deep |= _in_ellipsoid(p, (s * 9.5, 10.0, -3.0), (7.5, 11.0, 8.0), s * 10.0)  # thalamus
        vent |= _in_ellipsoid(p, (s * 7.0, -8.0, 10.0), (4.0, 20.0, 7.5), s * 22.0)  # frontal horn + body
        vent |= _in_ellipsoid(p, (s * 14.0, 22.0, 7.0), (4.5, 12.0, 6.0), s * -30.0)  # atrium / occipital horn
    vent |= _in_ellipsoid(p, (0.0, 2.0, -8.0), (1.8, 12.0, 7.0))  # third ventricle
    deep &= brain
    vent &= brain
    labels[deep] = DEEP
    labels[vent] = CSF
    return labels, skull_hu


def lesion_distance(p: np.ndarray, lesion_side: int, lesion_size: float, anatomy_seed: int
                           ) -> np.ndarray:
    """Normalised distance ``d`` to the centre of the MCA-territory lesion (0 centre, 1 ~ penumbra edge).

    Infinite outside the lesion hemisphere or when there is no lesion.  Boundaries are made irregular by a smooth
    field (+-12 %).
    """
    if lesion_side == 0:
        return np.full(p.shape[:-1], np.inf)
    centre = np.array([lesion_side * 38.0, -2.0, 4.0])
    axes = np.array([24.0, 42.0, 34.0]) * float(lesion_size)
    d = ellipsoid_r(p, centre, axes)
    d = d * (1.0 + 0.12 * smooth_field(p, anatomy_seed + 7, n_waves=4, wavelength_mm=(25.0, 50.0)))
    return np.where(lesion_side * p[..., 0] > 1.0, d, np.inf)
