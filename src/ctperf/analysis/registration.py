"""Rigid (6 degrees of freedom) registration of a follow-up volume to a baseline volume with SimpleITK.

Volumes are numpy (z, y, x) arrays with a 4x4 voxel (x, y, z) -> RAS+ mm affine, as everywhere in ctperf.
SimpleITK works in LPS+; the conversion happens here and nowhere else.

References
----------
Mattes D et al. PET-CT image registration in the chest using free-form deformations. IEEE Trans Med Imaging
2003;22:120-128. doi:10.1109/TMI.2003.809072 (the mutual-information metric used here)
Lowekamp BC et al. The design of SimpleITK. Front Neuroinform 2013;7:45. doi:10.3389/fninf.2013.00045
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_RAS_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _sitk():
    try:
        import SimpleITK as sitk
    except ImportError:
        from ctperf.errors import InputError

        raise InputError("registration needs SimpleITK (pip install 'ctperf[cohort]')") from None
    return sitk


def to_sitk(vol_zyx: np.ndarray, affine_ras: np.ndarray):
    """A SimpleITK image (float32) with the geometry of ``affine_ras`` (direction cosines, spacing, origin)."""
    sitk = _sitk()
    lps = _RAS_LPS @ np.asarray(affine_ras, float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(vol_zyx, np.float32)))
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    img.SetOrigin([float(v) for v in lps[:3, 3]])
    return img


@dataclass(frozen=True)
class RigidTransform:
    """Maps a baseline RAS point to the follow-up RAS point that shows the same anatomy."""

    #: 4x4 homogeneous matrix, RAS mm.
    matrix_ras: np.ndarray
    #: Rotation angle (degrees) and displacement of the baseline volume's centre (mm).
    rotation_deg: float
    translation_mm: float
    #: Final Mattes mutual-information metric (lower is better; SimpleITK sign convention).
    metric: float
    #: The SimpleITK transform, for resampling.
    sitk_transform: object


def register_rigid(fixed_zyx: np.ndarray, fixed_affine: np.ndarray, moving_zyx: np.ndarray,
                   moving_affine: np.ndarray, *, seed: int = 0, iterations: int = 200) -> RigidTransform:
    """Rigidly register ``moving`` (follow-up) to ``fixed`` (baseline) by Mattes mutual information.

    Parameters
    ----------
    fixed_zyx, moving_zyx : ndarray, shape (z, y, x)
        Anatomical images (e.g. the pre-contrast baseline HU image of each study); NaN is treated as -1000 HU.
    fixed_affine, moving_affine : ndarray, shape (4, 4)
        Voxel (x, y, z) -> RAS mm.
    seed : int, keyword-only
        Seed of the metric's random sampling (results are reproducible).  SimpleITK reads a sampling seed of 0 as
        "seed from the wall clock" (the same pair then registered 3.4-3.7 deg apart from call to call), so
        ``seed + 1`` is passed to it.
    iterations : int, keyword-only
        Optimiser iterations per resolution level.

    Returns
    -------
    RigidTransform
        Initialised at the geometric centres, optimised over two resolution levels (shrink 2 then 1).
    """
    sitk = _sitk()
    fixed = to_sitk(np.nan_to_num(fixed_zyx, nan=-1000.0), fixed_affine)
    moving = to_sitk(np.nan_to_num(moving_zyx, nan=-1000.0), moving_affine)
    init = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                             sitk.CenteredTransformInitializerFilter.GEOMETRY)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.5, int(seed) + 1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-4, numberOfIterations=iterations,
                                                 relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(init, inPlace=False)
    tx = reg.Execute(fixed, moving)
    euler = sitk.Euler3DTransform(sitk.CompositeTransform(tx).GetNthTransform(0)) \
        if tx.GetName() == "CompositeTransform" else sitk.Euler3DTransform(tx)
    rot = np.array(euler.GetMatrix(), float).reshape(3, 3)
    centre, trans = np.array(euler.GetCenter(), float), np.array(euler.GetTranslation(), float)
    m_lps = np.eye(4)
    m_lps[:3, :3] = rot
    m_lps[:3, 3] = centre + trans - rot @ centre
    angle = float(np.degrees(np.arccos(np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0))))
    m_ras = _RAS_LPS @ m_lps @ _RAS_LPS
    centre_ras = np.asarray(fixed_affine, float) @ np.r_[(np.array(fixed_zyx.shape[::-1]) - 1) / 2.0, 1.0]
    shift = float(np.linalg.norm((m_ras @ centre_ras - centre_ras)[:3]))  # displacement of the baseline centre
    return RigidTransform(m_ras, angle, shift, float(reg.GetMetricValue()), euler)


def resample_to_fixed(moving_zyx: np.ndarray, moving_affine: np.ndarray, fixed_shape_zyx: tuple[int, int, int],
                      fixed_affine: np.ndarray, transform: RigidTransform, *, nearest: bool = False,
                      fill: float = np.nan) -> np.ndarray:
    """Resample a follow-up volume onto the baseline grid through the rigid transform.

    ``nearest=True`` for masks and labels, else linear; voxels outside the follow-up field of view get ``fill``.
    Linear interpolation ignores the moving volume's NaN (unknown values, e.g. Tmax in CSF): each output voxel is
    the interpolation of the finite values renormalised by their share of the interpolation weights, and
    ``fill`` where that share is below a half (a NaN would otherwise spread to every neighbour it touches).
    """
    sitk = _sitk()
    ref = to_sitk(np.zeros(fixed_shape_zyx, np.float32), fixed_affine)

    def resample(vol: np.ndarray, interp, outside: float) -> np.ndarray:
        out = sitk.Resample(to_sitk(vol, moving_affine), ref, transform.sitk_transform, interp, float(outside),
                            sitk.sitkFloat32)
        return sitk.GetArrayFromImage(out)

    if nearest:
        return resample(moving_zyx, sitk.sitkNearestNeighbor, fill)
    moving = np.asarray(moving_zyx, np.float32)
    known = np.isfinite(moving)
    if known.all():
        return resample(moving, sitk.sitkLinear, fill)
    values = resample(np.where(known, moving, 0.0).astype(np.float32), sitk.sitkLinear, 0.0)
    share = resample(known.astype(np.float32), sitk.sitkLinear, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(share >= 0.5, values / share, np.float32(fill)).astype(np.float32)
