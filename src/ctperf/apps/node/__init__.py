"""ctperf DICOM node: receive CT perfusion studies, analyse them on arrival, send the results on.

Flow: a pynetdicom SCP (C-ECHO, C-STORE for every CT transfer syntax and any storage class) writes each instance
atomically into a spool folder and records it in a persistent SQLite queue; a study is complete when no instance
has arrived for a quiet period; an analyser thread runs Mode A with DICOM outputs
(:func:`ctperf.pipeline.run_dicom_folder`); a sender thread C-STOREs the results to the forward destination,
retrying, then parks them. State survives restarts (``<out>/node.sqlite``), so a killed node loses nothing and
never repeats a finished analysis. Logs (``<out>/node.log``) name studies by a hash of the StudyInstanceUID only.

Research use only, not a medical device.
"""

from ctperf.apps.node.settings import NodeSettings, parse_forward

__all__ = ["NodeSettings", "parse_forward"]
