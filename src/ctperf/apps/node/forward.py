"""The sending side: C-STORE the derived DICOM objects of a study to the forward destination."""

from __future__ import annotations

from pathlib import Path

from ctperf.apps.node.settings import Destination


def send_files(paths: list[Path], dest: Destination, calling_aet: str, timeout_s: float = 30.0) -> str | None:
    """Send every file in one association; returns None on success, else a short reason (no identifiers)."""
    from pydicom import dcmread
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE

    datasets = [dcmread(p) for p in paths]
    if not datasets:
        return "no DICOM results to send"
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    for uid in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    try:
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
    except OSError as exc:
        return f"cannot connect to {dest}: {exc.strerror or exc}"
    if not assoc.is_established:
        return f"association with {dest} not established (rejected, aborted or unreachable)"
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None:
                return f"no C-STORE response from {dest} (connection lost or timed out)"
            if code not in (0x0000, 0xB000, 0xB007, 0xB006):
                return f"{dest} answered C-STORE with status 0x{code:04X}"
    finally:
        assoc.release()
    return None
