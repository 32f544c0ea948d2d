"""Moved to :mod:`ctperf.analysis.masks`; this path stays an alias of it for one release."""

import sys

from ctperf.analysis import masks as _moved

sys.modules[__name__] = _moved
