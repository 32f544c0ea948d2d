"""Moved to :mod:`ctperf.core.constants`; this path stays an alias of it for one release."""

import sys

from ctperf.core import constants as _moved

sys.modules[__name__] = _moved
