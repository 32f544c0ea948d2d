"""`ctperf node` (README "DICOM outputs and DICOM node"): a real Orthanc receives the results; concurrent
senders lose nothing; a killed node restarts without loss or repeated analyses; bad input never crashes it.

Everything runs on 127.0.0.1 with free ports; Orthanc (Debian package ``orthanc``) gets its own config and
storage in a temporary folder. CI (``.ci/run``) installs Orthanc; elsewhere the Orthanc tests skip without it.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pynetdicom", reason="the node extra (pynetdicom) is not installed")
pytest.importorskip("highdicom", reason="the node extra (highdicom) is not installed")
import pydicom  # noqa: E402
from dicom_net_helpers import (  # noqa: E402
    NodeProcess,
    Orthanc,
    echo,
    free_port,
    send_concurrently,
    send_files,
    wait_for,
)

from ctperf.synthetic import PhantomSpec, make_phantom  # noqa: E402
from ctperf.synthetic.dicom_writer import DicomLayout, write_ctp_dicom  # noqa: E402

needs_orthanc = pytest.mark.skipif(Orthanc.available() is None, reason="Orthanc (Debian package orthanc) absent")
ANALYSIS_TIMEOUT = 300


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(PhantomSpec(matrix=64, n_slices=4, pixel_mm=3.5, noise_hu=3.0, seed=0))


def _study(ph, folder: Path, seed: int) -> list[Path]:
    """A 64x64x4x40 phantom study (160 files); ``seed`` gives it its own Study/Series/SOP UIDs."""
    return write_ctp_dicom(ph.hu, ph.times_s, ph.affine_ras, folder, layout=DicomLayout(patient_name="SECRET^P"),
                           seed=seed)


def _states(node) -> dict:
    return node.status()["by_state"]


def _no_identifiers(node) -> None:
    text = (node.out / "node.log").read_text()
    assert "SECRET" not in text
    for s in node.status()["study_list"]:
        assert "SECRET" not in str(s)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    if Orthanc.available() is None:
        pytest.skip("Orthanc (Debian package orthanc) absent")
    o = Orthanc(tmp_path_factory.mktemp("orthanc"), node_port=free_port()).start()
    yield o
    o.stop()


@needs_orthanc
def test_ten_concurrent_senders_results_arrive_in_orthanc(phantom, orthanc, tmp_path):
    files = _study(phantom, tmp_path / "study", seed=11)
    port = free_port()
    node = NodeProcess(tmp_path / "node", port, "--forward", f"ORTHANC@127.0.0.1:{orthanc.dicom_port}").start()
    try:
        before = set(orthanc.instances())
        codes = send_concurrently([files[i::10] for i in range(10)], port)  # 10 senders at once
        assert codes.count(0) == len(files) == 160
        wait_for(lambda: _states(node).get("sent") == 1, ANALYSIS_TIMEOUT, "the results to be sent")
        st = node.status()
        assert st["instances"] == 160 and st["study_list"][0]["instances"] == 160
        assert len(list((node.out / "spool").rglob("*.dcm"))) == 160
        new = sorted(set(orthanc.instances()) - before)
        assert len(new) == 13  # 6 maps, SEG, SR, 5 captures
        key = st["study_list"][0]["key"]
        nifti_dir = node.out / "results" / key
        src = pydicom.dcmread(files[0], stop_before_pixels=True)
        from ctperf.io.dicom_out.parametric_map import read_parametric_map
        from ctperf.io.nifti import load_volume

        kinds = set()
        for oid in new:
            raw = orthanc.get(f"/instances/{oid}/file", raw=True)
            ds = pydicom.dcmread(io.BytesIO(raw))
            assert ds.StudyInstanceUID == src.StudyInstanceUID
            kinds.add(ds.SOPClassUID.name)
            if ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30":
                p = tmp_path / "pm.dcm"
                p.write_bytes(raw)
                data, aff, _ = read_parametric_map(p)
                name = ds.ContentLabel.lower()
                nii, aff_nii = load_volume(nifti_dir / f"{name}.nii.gz")
                assert np.array_equal(data, nii, equal_nan=True)
                np.testing.assert_allclose(aff, aff_nii, atol=1e-4)
        assert {"Parametric Map Storage", "Segmentation Storage", "Comprehensive 3D SR Storage",
                "Secondary Capture Image Storage"} <= kinds
        _no_identifiers(node)
        assert node.terminate() == 0
        assert "stopped" in (node.out / "node.log").read_text()
    finally:
        node.ensure_stopped()


@needs_orthanc
def test_killed_mid_queue_restart_loses_nothing_and_repeats_no_analysis(phantom, orthanc, tmp_path):
    studies = [_study(phantom, tmp_path / f"s{i}", seed=20 + i) for i in range(3)]
    port = free_port()
    args = ("--forward", f"ORTHANC@127.0.0.1:{orthanc.dicom_port}")
    node = NodeProcess(tmp_path / "node", port, *args, quiet_s=2).start()
    before = set(orthanc.instances())
    try:
        assert set(send_concurrently(studies, port)) == {0}  # the three studies arrive together
        # kill (SIGKILL) while the first analysis runs and the other two wait in the queue
        wait_for(lambda: _states(node).get("analysing"), ANALYSIS_TIMEOUT, "an analysis to start", poll=0.05)
        node.kill()
        st = node.status()
        assert st["instances"] == 480 and st["studies"] == 3
        assert st["by_state"]["analysing"] == 1 and st["by_state"].get("queued", 0) + st["by_state"].get(
            "receiving", 0) == 2
        node = NodeProcess(tmp_path / "node", port, *args, quiet_s=2).start()
        wait_for(lambda: _states(node).get("sent") == 3, 3 * ANALYSIS_TIMEOUT, "all three studies to be sent")
        st = node.status()
        assert st["instances"] == 480
        assert [s["analyses_completed"] for s in st["study_list"]] == [1, 1, 1]
        assert sorted(s["analyses_started"] for s in st["study_list"]) == [1, 1, 2]  # the killed one restarted
        assert len(set(orthanc.instances()) - before) == 3 * 13  # no second result set reached PACS
        assert node.terminate() == 0
    finally:
        node.ensure_stopped()


def test_bad_input_is_stored_and_reported_never_crashes(phantom, tmp_path):
    files = _study(phantom, tmp_path / "good", seed=31)
    uid = pydicom.uid.generate_uid
    bad = tmp_path / "bad"
    bad.mkdir()
    # a non-CT instance in its own study
    mr = pydicom.dcmread(files[0])
    mr.SOPClassUID = mr.file_meta.MediaStorageSOPClassUID = pydicom.uid.MRImageStorage
    mr.Modality, mr.StudyInstanceUID, mr.SeriesInstanceUID = "MR", uid(), uid()
    mr.SOPInstanceUID = mr.file_meta.MediaStorageSOPInstanceUID = uid()
    mr.save_as(bad / "mr.dcm")
    # a perfusion study in which one file's pixel data is truncated
    trunc_dir = tmp_path / "trunc"
    trunc = _study(phantom, trunc_dir, seed=32)
    ds = pydicom.dcmread(trunc[5])
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    ds.save_as(trunc[5])
    # a study that is not a perfusion: one time point
    single = _study(phantom, tmp_path / "single", seed=33)[:4]

    port = free_port()
    node = NodeProcess(tmp_path / "node", port, "--allow", "SCANNER,OTHER").start()
    try:
        assert not echo(port, calling="INTRUDER")  # calling AE title not allowed
        assert set(send_files([bad / "mr.dcm"], port)) == {0}
        assert set(send_files(trunc, port, calling="OTHER")) == {0}
        assert set(send_files(single, port)) == {0}
        wait_for(lambda: _states(node).get("failed") == 3, ANALYSIS_TIMEOUT, "three failed studies")
        st = node.status()
        assert st["instances"] == 1 + 160 + 4
        assert all(s["reason"] for s in st["study_list"])
        assert echo(port)  # still serving
        assert set(send_files(files, port)) == {0}  # and a good study after the bad ones is analysed
        wait_for(lambda: _states(node).get("done") == 1, ANALYSIS_TIMEOUT, "the good study")
        _no_identifiers(node)
        assert node.terminate() == 0
    finally:
        node.ensure_stopped()


def test_unreachable_destination_parks_the_results(phantom, tmp_path):
    files = _study(phantom, tmp_path / "study", seed=41)
    port, dead = free_port(), free_port()
    node = NodeProcess(tmp_path / "node", port, "--forward", f"PACS@127.0.0.1:{dead}", "--retries", "2",
                       "--retry-delay", "0.2").start()
    try:
        assert set(send_files(files, port)) == {0}
        wait_for(lambda: _states(node).get("parked") == 1, ANALYSIS_TIMEOUT, "the results to be parked")
        s = node.status()["study_list"][0]
        assert s["send_attempts"] == 2 and "not established" in s["reason"]
        key = s["key"]
        assert len(list((node.out / "results" / key / "dicom").glob("*.dcm"))) == 13
        assert node.terminate() == 0
    finally:
        node.ensure_stopped()


def test_queue_recovery_rules(tmp_path):
    from ctperf.apps.node.queue import StudyQueue

    q = StudyQueue(tmp_path / "q.sqlite")
    for key in ("a", "b", "c"):
        q.add_instance(key, f"{key}1", "1.2")
    q.add_instance("a", "a1", "1.2")  # a repeated instance counts once
    time.sleep(0.02)
    assert q.promote_quiet(0.01) == 3
    assert q.take("queued", "analysing") == "a"
    assert q.take("queued", "analysing") == "b"
    (tmp_path / "res" / "b").mkdir(parents=True)
    (tmp_path / "res" / "b" / "metrics.json").write_text("{}")  # b finished writing before the kill
    q.close()
    q = StudyQueue(tmp_path / "q.sqlite")
    assert q.recover(tmp_path / "res") == {"requeued": 1, "completed_before_stop": 1, "resend": 0}
    rows = {r.key: r for r in q.studies()}
    assert (rows["a"].state, rows["b"].state, rows["c"].state) == ("queued", "analysed", "queued")
    assert rows["a"].n_instances == 1 and rows["b"].analyses_completed == 1
    q.add_instance("b", "b2", "1.2")  # new data re-open a finished study
    assert {r.key: r.state for r in q.studies()}["b"] == "receiving"
    q.close()


def test_ct_storage_accepts_every_transfer_syntax(tmp_path):
    from pynetdicom import ALL_TRANSFER_SYNTAXES
    from pynetdicom.sop_class import CTImageStorage

    from ctperf.apps.node.scp import build_ae
    from ctperf.apps.node.settings import NodeSettings

    ae = build_ae(NodeSettings(out=tmp_path))
    ct = [cx for cx in ae.supported_contexts if cx.abstract_syntax == CTImageStorage]
    assert set(ct[0].transfer_syntax) == set(ALL_TRANSFER_SYNTAXES)


def test_compressed_ct_arrives_compressed(phantom, tmp_path):
    from ctperf.synthetic.dicom_writer import TRANSFER_SYNTAXES

    port = free_port()
    node = NodeProcess(tmp_path / "node", port, quiet_s=3600).start()  # store only, no analysis
    try:
        sent = {}
        for i, name in enumerate(("jpeg_lossless", "jpeg2000_lossless", "rle", "jpegls_lossless")):
            files = write_ctp_dicom(phantom.hu[:2], phantom.times_s[:2], phantom.affine_ras, tmp_path / name,
                                    layout=DicomLayout(transfer_syntax=name), seed=50 + i)
            assert set(send_files(files, port, own_syntax_only=True)) == {0}, name
            sent[str(TRANSFER_SYNTAXES[name])] = len(files)
        st = node.status()
        assert st["instances"] == sum(sent.values())
        stored = [pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID
                  for p in (node.out / "spool").rglob("*.dcm")]
        assert {str(ts): stored.count(ts) for ts in set(stored)} == sent
        assert node.terminate() == 0
    finally:
        node.ensure_stopped()


def test_queue_interrupted_send_is_resent_and_failed_sends_park(tmp_path):
    from ctperf.apps.node.queue import StudyQueue

    q = StudyQueue(tmp_path / "q.sqlite")
    q.add_instance("d", "d1", "1.2")
    time.sleep(0.02)
    q.promote_quiet(0.01)
    assert q.take("queued", "analysing") == "d"
    time.sleep(0.01)
    q.finish_analysis("d", True, None, forward=True)
    assert q.take("analysed", "sending") == "d"
    q.close()
    q = StudyQueue(tmp_path / "q.sqlite")  # killed while sending
    assert q.recover(tmp_path)["resend"] == 1
    assert q.take("analysed", "sending", "AND next_send <= ?", (time.time(),)) == "d"
    assert q.send_result("d", False, "refused", retries=2, delay_s=0.0) == "analysed"  # retry later
    assert q.take("analysed", "sending") == "d"
    assert q.send_result("d", False, "refused", retries=2, delay_s=0.0) == "parked"
    row = q.studies()[0]
    assert (row.state, row.send_attempts, row.reason, row.analyses_completed) == ("parked", 2, "refused", 1)
    q.close()


def test_the_same_study_sent_again_is_not_analysed_or_forwarded_twice(tmp_path):
    """A re-send of instances already received (e.g. after a timeout) leaves a finished study as it is; a new
    instance re-opens it (review 46: the re-send re-opened it and the PACS got a second copy of every result)."""
    from ctperf.apps.node.queue import StudyQueue

    q = StudyQueue(tmp_path / "q.sqlite")
    for sop in ("e1", "e2"):
        q.add_instance("e", sop, "1.2")
    time.sleep(0.02)
    q.promote_quiet(0.01)
    assert q.take("queued", "analysing") == "e"
    time.sleep(0.01)
    q.finish_analysis("e", True, None, forward=True)
    assert q.take("analysed", "sending") == "e" and q.send_result("e", True, None, retries=3, delay_s=0.0) == "sent"
    for sop in ("e1", "e2"):  # the same instances again
        q.add_instance("e", sop, "1.2")
    row = q.studies()[0]
    assert (row.state, row.n_instances, row.analyses_started) == ("sent", 2, 1)
    q.add_instance("e", "e3", "1.2")
    assert q.studies()[0].state == "receiving" and q.studies()[0].n_instances == 3
    q.close()


def test_recovery_without_a_forward_destination_finishes_as_done(tmp_path):
    """An analysis that completed just before a stop becomes `done` when the node forwards nothing (it stayed
    `analysed`, shown as waiting to be sent, for ever)."""
    from ctperf.apps.node.queue import StudyQueue

    q = StudyQueue(tmp_path / "q.sqlite")
    q.add_instance("f", "f1", "1.2")
    time.sleep(0.02)
    q.promote_quiet(0.01)
    assert q.take("queued", "analysing") == "f"
    (tmp_path / "res" / "f").mkdir(parents=True)
    (tmp_path / "res" / "f" / "metrics.json").write_text("{}")
    q.close()
    q = StudyQueue(tmp_path / "q.sqlite")
    assert q.recover(tmp_path / "res", forward=False)["completed_before_stop"] == 1
    assert q.studies()[0].state == "done"
    q.close()


def test_the_node_summary_names_withheld_volumes():
    from ctperf.apps.node.server import volumes_text

    assert volumes_text({"core_ml": 22.285, "hypoperfusion_ml": 103.635}) == "core 22.3 mL, hypoperfusion 103.6 mL"
    text = volumes_text({"core_ml": None, "core_ml_reason": "contrast-to-noise ratio 7.9 below 14.5 (thresholds.x)",
                         "hypoperfusion_ml": None})
    assert "None" not in text and text.startswith("core n/a (contrast-to-noise") and "hypoperfusion n/a (" in text
