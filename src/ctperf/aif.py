"""Moved to :mod:`ctperf.engine.aif`; this path stays an alias of it for one release."""

import sys

from ctperf.engine import aif as _moved

sys.modules[__name__] = _moved
