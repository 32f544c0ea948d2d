"""Moved to :mod:`ctperf.engine.preprocess`; this path stays an alias of it for one release."""

import sys

from ctperf.engine import preprocess as _moved

sys.modules[__name__] = _moved
