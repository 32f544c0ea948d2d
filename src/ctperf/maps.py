"""Moved to :mod:`ctperf.engine.maps`; this path stays an alias of it for one release."""

import sys

from ctperf.engine import maps as _moved

sys.modules[__name__] = _moved
