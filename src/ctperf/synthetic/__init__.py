"""Digital CT perfusion phantom with an independent ground truth.

This package imports nothing from the rest of ctperf (its physics constants RHO = 1.04 g/mL and
KH = (1 - 0.45) / (1 - 0.25) are its own), so tests comparing the engine with the phantom are not circular.

Usage::

    from ctperf.synthetic import PhantomSpec, make_phantom, write_truth
    ph = make_phantom(PhantomSpec(lesion="left", seed=1))
    ph.hu            # float32 (t, z, y, x) HU: baseline anatomy + contrast + noise (+ motion)
    ph.times_s       # float64 (t, z) s, acquisition time of every frame and slice, times_s[0, 0] == 0
    ph.affine_ras    # 4x4 voxel (x, y, z) -> RAS+ mm; x toward patient LEFT, y POSTERIOR, z SUPERIOR
    ph.truth         # PhantomTruth: maps and masks (z, y, x) in the frame-0 position, AIF/VOF curves
    ph.truth_metrics # strict-JSON dict of truth indices (None instead of NaN/inf)
    write_truth(ph, "out/")  # truth_*.nii.gz + truth.json

Model summary (details in :mod:`.physics`, :mod:`.anatomy`, :mod:`.phantom`, :mod:`.truth`):

* AIF: gamma variate (peak 350 dHU, FWHM 9 s, arrival 7 s -> 5 baseline frames at 1.5 s) + delayed, dispersed
  recirculation (20 % of the first-pass peak).  VOF: AIF delayed by ``venous_delay_s`` (5 s) and exponentially
  dispersed (2.5 s), same area; PVT_sec ~7.4 s by default, ``venous_delay_s >= 10`` makes ``PVT_present`` true.
* Tissue: ``C = CBF*RHO/(6000*KH) * Ca (x) h (x) exp(-t/MTT)`` with ``h`` = delay + exponential dispersion
  (``dispersion_s`` = 1 s).  CBV = CBF*MTT/60 exactly (MTT snapped to 0.01 s).  Truth Tmax = delay + time of
  the peak of ``h (x) R`` (numerical; = delay without dispersion).  ``truth.cbf_apparent`` = CBF * max(h (x) R),
  the flow an ideal deconvolution of the dispersed curve returns (~0.63 x CBF for GM at the default dispersion);
  ``truth.core_apparent`` the core on it (smaller than ``truth.core`` under dispersion, the same without).
* Normal values (+-10 % smooth variation): GM CBF 64 / MTT 4.2 s (CBV ~4.5), WM 22 / 5.0 s (CBV ~1.8), deep grey
  50 / 4.3 s.  Peak enhancement at the defaults: GM ~16 HU, WM ~6 HU, deep grey ~12 HU, core ~2 HU.
* Lesion (MCA territory): core CBF 10-14 %, CBV 35-50 %, Tmax ~10-11 s; penumbra CBF 56-72 %, CBV 98-112 %,
  Tmax 6-10 s; benign oligemia ring Tmax 4-6 s.  Defaults give ~25 mL core, ~100 mL Tmax > 6 s in the 40 mm slab.
* Anatomy from analytic shapes in head-frame mm: scalp, skull (dense tables + diploe), CSF shell, folded cortex
  (meandering sulci), WM, deep grey nuclei, butterfly lateral ventricles, 3rd ventricle, interhemispheric and
  Sylvian fissures, insula; ICA/MCA/ACA/PCA tubes (partial-volumed; the lesion-side MCA is occluded at mid-M1);
  superior sagittal sinus, torcula and transverse sinuses.
* Noise: Gaussian, in-plane correlated (Gaussian kernel of ``noise_fwhm_mm``), std ``noise_hu``, independent per
  frame; seeded.  Motion: per-frame rigid transform about the head centre, frame 0 is the reference.

* ``tissue_partial_volume=True`` (opt-in) mixes the tissue classes through the slice thickness (5 sub-planes for
  5 mm): CBF and CBV of a voxel are the volume-weighted sums of its classes, MTT = 60*CBV/CBF and Tmax is the
  peak of the CBF-weighted mixture of the class residues.  Default off: classes at voxel centres, only vessels
  partial-volumed.

* ``residue="gamma"`` (``gamma_k``), ``"box"`` or ``"lognormal"`` (opt-in) replaces the exponential residue of all
  tissue (:func:`.physics.residue_function`); truth Tmax = delay + peak of the dispersed residue (box: its plateau
  start, :func:`.physics.residue_truth`).

Block phantom families (:mod:`.blocks`, ``make_block_phantom``): a grid of (CBF, MTT) blocks per hemisphere with
one residue shape, dispersion 0-3 s per slice, per-hemisphere delays and white or correlated noise, for the
validation harness (benchmarks/validate.py).

Limitations: all tissue of the realistic phantom shares one dispersion time constant; arteries on both sides
carry the undelayed AIF (the lesion-side MCA is simply absent beyond mid-M1); no beam hardening, streaks or
truncation artefacts; the lower slab is an idealised cerebrum (no cerebellum / skull base).
"""

from .phantom import Phantom, PhantomSpec, make_phantom
from .physics import KH, RHO
from .truth import PhantomTruth, write_truth

__all__ = ["Phantom", "PhantomSpec", "PhantomTruth", "make_phantom", "write_truth", "RHO", "KH"]
