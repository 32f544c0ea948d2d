"""Moved to :mod:`ctperf.engine.motion`; this path stays an alias of it for one release."""

import sys

from ctperf.engine import motion as _moved

sys.modules[__name__] = _moved
