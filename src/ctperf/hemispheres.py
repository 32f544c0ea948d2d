"""Split: :func:`find_midline` moved to :mod:`ctperf.engine.hemispheres`, :func:`hemispheres_from_plane` and
:func:`mirror` to :mod:`ctperf.core.midline`; this path re-exports them for one release."""

from ctperf.core.midline import hemispheres_from_plane, mirror  # noqa: F401
from ctperf.engine.hemispheres import find_midline  # noqa: F401
