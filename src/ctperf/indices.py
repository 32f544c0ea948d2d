"""Moved to :mod:`ctperf.analysis.indices`; this path stays an alias of it for one release."""

import sys

from ctperf.analysis import indices as _moved

sys.modules[__name__] = _moved
