"""File and DICOM input/output (see docs: STYLE layout `io/`)."""
