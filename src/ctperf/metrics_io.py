"""Split: the metrics document moved to :mod:`ctperf.analysis.metrics`, its files and schema to
:mod:`ctperf.io.metrics_files`; this path re-exports them for one release."""

from ctperf.analysis.metrics import build_metrics, dumps, flatten, to_strict  # noqa: F401
from ctperf.io.metrics_files import SCHEMA_PATH, load_schema, write_metrics  # noqa: F401
