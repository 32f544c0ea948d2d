"""Digital CT perfusion phantom with an independent ground truth.

This package imports nothing from the rest of ctperf (its physics constants are its own), so tests comparing the
engine with the phantom are not circular.

    from ctperf.synthetic import PhantomSpec, make_phantom, write_truth
    ph = make_phantom(PhantomSpec(lesion="left", seed=1))
    ph.hu            # float32 (t, z, y, x) HU
    ph.times_s       # float64 (t, z) s
    ph.affine_ras    # 4x4 voxel (x, y, z) -> RAS mm
    ph.truth         # PhantomTruth maps and masks, (z, y, x)
    ph.truth_metrics # strict-JSON dict of truth indices
    write_truth(ph, "out/")
"""

from .phantom import Phantom, PhantomSpec, make_phantom
from .physics import KH, RHO
from .truth import PhantomTruth, write_truth

__all__ = ["Phantom", "PhantomSpec", "PhantomTruth", "make_phantom", "write_truth", "RHO", "KH"]
