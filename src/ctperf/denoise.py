"""Moved to :mod:`ctperf.engine.denoise`; this path stays an alias of it for one release."""

import sys

from ctperf.engine import denoise as _moved

sys.modules[__name__] = _moved
