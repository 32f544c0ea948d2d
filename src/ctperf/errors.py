"""User-facing errors.

Every problem caused by the user's input (bad folder, unreadable file, mismatched grids, ...) is raised as a
:class:`CTPerfError` with a one-line message. The CLI prints that line and exits non-zero; it never shows a
traceback for these.
"""


class CTPerfError(Exception):
    """A clear, one-line error about the user's input or request."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class InputError(CTPerfError):
    """The input data cannot be used (missing, malformed, inconsistent)."""


class DicomError(InputError):
    """The DICOM folder does not contain a usable CT perfusion acquisition."""


class ConfigError(InputError, ValueError):
    """A configuration value of the wrong kind or outside its valid range (the message names the range)."""
