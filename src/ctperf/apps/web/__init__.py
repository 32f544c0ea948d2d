"""Local web app: run studies, read the maps in a NiiVue viewer, tune thresholds, download results.

Needs the ``web`` extra (``pip install "ctperf[web]"``).  Start it with ``ctperf gui``.  The web layer calls the
workflow functions of :mod:`ctperf.pipeline` and :mod:`ctperf.modeb.pipeline_b` only (no engine imports).
Research use only - not a medical device.
"""

from ctperf.apps.web.settings import WebSettings

__all__ = ["WebSettings", "create_app"]


def create_app(settings: WebSettings):
    """Build the FastAPI application (lazy import so ``import ctperf.apps.web`` stays cheap)."""
    from ctperf.apps.web.server import create_app as _create

    return _create(settings)
