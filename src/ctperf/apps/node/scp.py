"""The receiving side: a pynetdicom SCP answering C-ECHO and C-STORE, writing instances atomically to the spool.

Every storage SOP class is accepted (so bad input, e.g. a non-CT instance, is stored and reported rather than
refused); CT Image and Enhanced CT Image storage accept every transfer syntax pynetdicom knows. Only calling AE
titles in ``allow`` may associate (when the list is given).
"""

from __future__ import annotations

import logging
import os
import uuid

from ctperf.apps.node.queue import StudyQueue
from ctperf.apps.node.settings import NodeSettings, uid_key

log = logging.getLogger("ctperf.node")

#: C-STORE status codes (PS3.4 Annex B / PS3.7 Annex C).
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000
#: Pseudo study UIDs grouping instances without a StudyInstanceUID / that cannot be parsed (analysed and reported
#: as failed studies like any other).
NO_STUDY, UNPARSABLE = "no-study-instance-uid", "unparsable-instances"


def build_ae(settings: NodeSettings):
    """A configured ``pynetdicom.AE`` (not yet listening)."""
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts
    from pynetdicom.sop_class import (
        CTImageStorage,
        EnhancedCTImageStorage,
        Verification,
    )

    ae = AE(ae_title=settings.ae_title)
    ct = {CTImageStorage, EnhancedCTImageStorage}
    for cx in StoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES if cx.abstract_syntax in ct
                                 else cx.transfer_syntax)
    ae.add_supported_context(Verification)
    if settings.allow:
        ae.require_calling_aet = list(settings.allow)
    ae.maximum_associations = 32
    ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 60
    return ae


def store_instance(encoded: bytes, study_uid: str, sop_uid: str, sop_class: str, settings: NodeSettings,
                   queue: StudyQueue) -> str:
    """Write one received instance atomically (temporary file + fsync + rename) and record it.

    Returns the study key. A repeated SOP instance replaces the file and is counted once.
    """
    study_key = uid_key(study_uid)
    folder = settings.spool / study_key
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{uid_key(sop_uid, 24)}.dcm"
    tmp = settings.spool / f".{uuid.uuid4().hex}.part"
    with open(tmp, "wb") as fh:
        fh.write(encoded)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    queue.add_instance(study_key, uid_key(sop_uid, 24), str(sop_class))
    return study_key


def make_handlers(settings: NodeSettings, queue: StudyQueue):
    """pynetdicom event handlers bound to ``settings`` and ``queue``."""
    from pynetdicom import evt

    def on_store(event):
        try:
            sop_uid = str(event.request.AffectedSOPInstanceUID)
            sop_class = str(event.request.AffectedSOPClassUID)
            encoded = event.encoded_dataset()
        except Exception:  # noqa: BLE001 - a request pynetdicom cannot hand over: refuse it, keep serving
            log.warning("refused an instance whose request is malformed")
            return CANNOT_UNDERSTAND
        status = SUCCESS
        try:
            study_uid = str(event.dataset.get("StudyInstanceUID", "") or "") or NO_STUDY
        except Exception:  # noqa: BLE001 - unparsable data set: keep it (reported as a failed study)
            study_uid, status = UNPARSABLE, CANNOT_UNDERSTAND
            log.warning("stored an instance that cannot be parsed (from %s)", event.assoc.requestor.ae_title)
        try:
            key = store_instance(encoded, study_uid, sop_uid, sop_class, settings, queue)
        except OSError as exc:
            log.error("cannot store an instance: %s", exc.strerror or exc)
            return OUT_OF_RESOURCES
        log.debug("stored instance for study %s", key)
        return status

    def on_echo(event):
        return SUCCESS

    def on_accepted(event):
        log.info("association from %s accepted", event.assoc.requestor.ae_title)

    def on_rejected(event):
        log.warning("association rejected (calling AE title not allowed or bad request)")

    return [(evt.EVT_C_STORE, on_store), (evt.EVT_C_ECHO, on_echo), (evt.EVT_ACCEPTED, on_accepted),
            (evt.EVT_REJECTED, on_rejected)]


def start_server(settings: NodeSettings, queue: StudyQueue):
    """Start listening (non-blocking); returns the ``pynetdicom`` server (``.shutdown()`` to stop)."""
    settings.spool.mkdir(parents=True, exist_ok=True)
    ae = build_ae(settings)
    return ae.start_server((settings.host, settings.port), block=False, evt_handlers=make_handlers(settings, queue))
