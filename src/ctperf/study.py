"""Moved to :mod:`ctperf.core.types`; this path stays an alias of it for one release."""

import sys

from ctperf.core import types as _moved

sys.modules[__name__] = _moved
