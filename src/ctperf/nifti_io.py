"""Moved to :mod:`ctperf.io.nifti`; this path stays an alias of it for one release."""

import sys

from ctperf.io import nifti as _moved

sys.modules[__name__] = _moved
