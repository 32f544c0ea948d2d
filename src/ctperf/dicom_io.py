"""Old location of :mod:`ctperf.io.dicom` (re-export kept for one release; import from ``ctperf.io.dicom``)."""

from ctperf.io.dicom import *  # noqa: F401,F403
from ctperf.io.dicom import __all__  # noqa: F401
from ctperf.io.dicom._fastheader import _fast_header_values  # noqa: F401
from ctperf.io.dicom.scan import _header_from, _read_header  # noqa: F401
