"""Moved to :mod:`ctperf.viz.qa_figures`; this path stays an alias of it for one release."""

import sys

from ctperf.viz import qa_figures as _moved

sys.modules[__name__] = _moved
