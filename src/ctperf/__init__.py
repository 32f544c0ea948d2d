"""ctperf: automatic CT perfusion analysis for stroke research.

Research use only. Not a medical device; not for clinical decisions.
"""

__version__ = "0.1.0"

DISCLAIMER = "Research use only - not a medical device, not for clinical decisions."
