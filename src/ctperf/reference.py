"""Moved to :mod:`ctperf.engine.reference`; this path stays an alias of it for one release."""

import sys

from ctperf.engine import reference as _moved

sys.modules[__name__] = _moved
