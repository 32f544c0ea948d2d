"""Moved to :mod:`ctperf.engine.deconvolution`; this path stays an alias of it for one release."""

import sys

from ctperf.engine import deconvolution as _moved

sys.modules[__name__] = _moved
