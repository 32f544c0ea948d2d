"""Moved to :mod:`ctperf.viz.report`; this path stays an alias of it for one release."""

import sys

from ctperf.viz import report as _moved

sys.modules[__name__] = _moved
