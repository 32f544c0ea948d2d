"""File and DICOM input/output (see ``docs`` and STYLE.md section 3)."""
