"""The command line as a new user meets it: `-q` on every analysing command, a progress bar that only moves
forward, a withheld value's reason written once, QA flags with the study's values, `--help` that says what is
required and what the exit codes mean, one line on Ctrl-C, and one-line refusals that name the right thing."""

import errno
import json
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ctperf import cli
from ctperf.apps.terminal import MODE_A_STAGES, PHANTOM_STAGES, RunProgress, missing_value_cells, warning_lines
from ctperf.core.qa_text import QA_FLAG_TEXT, qa_value_text, with_values


def _run(args, capsys):
    """The command line in this process: (exit code, stdout, stderr)."""
    code = cli.run_command([str(a) for a in args], prog_name="ctperf")
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _lines(text):
    return [ln for ln in text.splitlines() if ln.strip()]


# ------------------------------------------------------------------------------------------- progress bar
class _FakeProgress:
    """Records what a rich Progress would display: total, completed (as a percentage) and description."""

    def __init__(self):
        self.state, self.history = {}, []

    def update(self, task, **kw):
        self.state.update(kw)
        if "description" in kw:  # a stage or part update (the set-up sets only total and completed)
            total = self.state.get("total")
            self.history.append((self.state.get("description", ""), self.state.get("completed", 0.0), total))


def _counter(description):
    """(i, n) of a "[i/n] stage" description."""
    head = description.split("]", 1)[0].lstrip("[")
    i, n = head.split("/")
    return int(i), int(n)


def test_progress_counter_and_percent_only_move_forward_over_a_fixed_total():
    """The events of a real `ctperf demo` (phantom stages, DICOM files, the engine's stages with the midline and
    the AIF announced after the denoising, a stage the list does not know, an earlier stage repeated late, file
    counts after a later stage): the counter never goes back, the total never changes, the percentage never
    falls, and the end is 100 %."""
    stages = PHANTOM_STAGES + MODE_A_STAGES
    fake = _FakeProgress()
    bar = RunProgress(fake, 0, stages)
    total = fake.state["total"]
    events = [("stage", "generating phantom"), ("stage", "writing DICOM"), ("stage", "writing truth"),
              ("stage", "load"), ("part", 100, 320), ("part", 320, 320), ("stage", "preprocess"),
              ("stage", "denoise"), ("stage", "hemispheres"), ("stage", "aif"), ("stage", "deconvolution"),
              ("stage", "maps"), ("stage", "a stage a newer engine adds"), ("stage", "regularise"),
              ("stage", "hemispheres"),  # out of order: announced again after later stages
              ("stage", "rcbf"), ("part", 5, 320),  # a late file count of an earlier stage
              ("stage", "indices"),  # "masks" skipped: counted as done
              ("stage", "write")]
    for kind, *args in events:
        getattr(bar, kind)(*args)
    counters = [_counter(d) for d, _, _ in fake.history]
    percents = [100.0 * c / t for _, c, t in fake.history]
    assert {n for _, n in counters} == {len(stages)}  # the total number of stages is fixed
    assert {t for *_, t in fake.history} == {total}  # ...and so is the bar's length
    assert [i for i, _ in counters] == sorted(i for i, _ in counters)  # the counter never goes back
    assert percents == sorted(percents) and percents[0] == 0.0 and percents[-1] < 100.0
    assert counters[-1][0] == len(stages) and fake.state["description"].endswith("write")
    shown = {d.split("] ", 1)[1] for d, _, _ in fake.history}
    assert "a stage a newer engine adds" in shown  # an unknown stage is named, under the current counter
    bar.finish()
    assert fake.state["completed"] == fake.state["total"] == total


def test_every_stage_the_engine_announces_is_listed():
    """The stage list is the bar's fixed length: the stages the pipeline and the engine announce are all in it, in
    their order (a stage missing from the list was what made the total grow mid-run)."""
    import inspect
    import re

    import ctperf.engine as engine
    import ctperf.pipeline as pipeline

    engine_stages = re.findall(r'timer(?:\.announce)?\("([^"]+)"', inspect.getsource(engine))
    pipeline_stages = re.findall(r'_step\(progress, "([^"]+)"\)', inspect.getsource(pipeline))
    assert len(engine_stages) >= 8 and len(pipeline_stages) >= 4
    assert set(engine_stages) | set(pipeline_stages) <= set(MODE_A_STAGES)
    assert MODE_A_STAGES[0] == "load" and MODE_A_STAGES[-1] == "write"


def test_progress_from_several_threads_stays_monotonic():
    fake = _FakeProgress()
    bar = RunProgress(fake, 0, MODE_A_STAGES)
    names = list(MODE_A_STAGES) * 20

    def announce(offset):
        for name in names[offset::4]:
            bar.stage(name)
            bar.part(3, 7)

    threads = [threading.Thread(target=announce, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    completed = [c for _, c, _ in fake.history]
    assert completed == sorted(completed)
    assert [_counter(d)[0] for d, _, _ in fake.history] == sorted(_counter(d)[0] for d, _, _ in fake.history)


def test_single_stage_bar_pulses_and_ends_full():
    fake = _FakeProgress()
    bar = RunProgress(fake, 0, ("recompute",))
    assert fake.state["total"] is None  # nothing to count: the bar pulses
    bar.stage("recompute")
    assert fake.state["description"] == "[1/1] recompute"
    bar.finish()
    assert fake.state["total"] == fake.state["completed"] > 0


# ----------------------------------------------------------------------------- reasons and QA flag values
NOISY = {
    **{k: None for k in cli.SUMMARY_KEYS},
    **{f"{k}_reason": "contrast-to-noise ratio 12.9 below 14.5 (thresholds.lesion_min_contrast_to_noise): no usable "
                      "bolus, no lesion index is measurable" for k in cli.SUMMARY_KEYS},
    "qa_flags": {"lesion_unmeasured": True, "core_noise_limited": True, "tmax_dispersion_ambiguous": True,
                 "lesion_beyond_coverage": True},
    "qa_values": {"tmax_dispersion_sd_s": 0.723, "coverage_mm": 40.0, "contrast_to_noise": 12.92,
                  "lesion_unmeasured_reason": "contrast-to-noise ratio 12.9 below 14.5",
                  "tmax_dispersion_observation_reason": None},
}


def test_a_reason_shared_by_many_values_is_printed_once(capsys):
    table, notes = cli._summary_table(NOISY, "t")
    cells, _ = missing_value_cells(NOISY, cli.SUMMARY_KEYS)
    assert set(cells.values()) == {"n/a"} and len(cells) == len(cli.SUMMARY_KEYS)
    assert notes == [f"n/a: {NOISY['core_ml_reason']}"]
    cli._finish(NOISY, "noisy study")
    out = capsys.readouterr().out
    assert out.count("no usable bolus") == 1  # the table's 14 withheld values, one reason line


def test_reasons_are_numbered_when_there_are_several_and_a_single_one_stays_inline():
    metrics = {"core_ml": None, "core_ml_reason": "A", "penumbra_ml": None, "penumbra_ml_reason": "A",
               "HIR": None, "HIR_reason": "B", "Mismatch_Ratio": None, "Mismatch_Ratio_reason": "B",
               "PVT_sec": None, "PVT_sec_reason": "no venous sinus voxels identified", "tmax10_ml": 3.0,
               "lesion_side": None}
    cells, notes = missing_value_cells(metrics, cli.SUMMARY_KEYS)
    assert cells == {"core_ml": "n/a (1)", "penumbra_ml": "n/a (1)", "HIR": "n/a (2)", "Mismatch_Ratio": "n/a (2)",
                     "PVT_sec": "n/a (no venous sinus voxels identified)", "lesion_side": "n/a (undefined)"}
    assert notes == ["(1) A", "(2) B"]
    assert missing_value_cells({"core_ml": 1.0}, cli.SUMMARY_KEYS) == ({}, [])


def test_qa_flags_on_the_terminal_show_the_studys_values():
    lines = dict((text.split(":", 1)[0], text) for _, text in warning_lines(NOISY))
    assert "Tmax uncertain by 0.72 s (qa_values.tmax_dispersion_sd_s)" in lines["QA flag tmax_dispersion_ambiguous"]
    assert "inside the slab (40 mm, qa_values.coverage_mm)" in lines["QA flag lesion_beyond_coverage"]
    assert "(12.9, qa_values.contrast_to_noise)" in lines["QA flag core_noise_limited"]
    # a named reason (text) or a missing value stays a name
    assert "(qa_values.tmax_dispersion_observation_reason)" in lines["QA flag tmax_dispersion_ambiguous"]
    assert "qa_values.lesion_unmeasured_reason:" in lines["QA flag lesion_unmeasured"]
    # the shared text (figures, PDF) keeps only the names; without values the terminal shows it unchanged
    assert "0.72" not in QA_FLAG_TEXT["tmax_dispersion_ambiguous"]
    assert warning_lines({"qa_flags": {"lesion_beyond_coverage": True}})[0][1] == \
        f"QA flag lesion_beyond_coverage: {QA_FLAG_TEXT['lesion_beyond_coverage']}"


@pytest.mark.parametrize("name, value, shown", [
    ("tmax_dispersion_sd_s", 0.723, "0.72 s"), ("coverage_mm", 40.0, "40 mm"), ("contrast_to_noise", 12.92, "12.9"),
    ("aif_peak_scaled_hu", 393.44, "393 HU"), ("cbf_dispersion_sd_pct", 4.0, "4 %"), ("motion_max_mm", 2, "2 mm"),
    ("tmax_dispersion_sd_s", None, None), ("x_reason", "text", None), ("flag", True, None),
    ("noise_hu", float("nan"), None)])
def test_qa_value_text(name, value, shown):
    assert qa_value_text(name, value) == shown


def test_with_values_keeps_text_without_values():
    text = "by qa_values.tmax_dispersion_sd_s (qa_values.coverage_mm)"
    assert with_values(text, None) == with_values(text, {}) == text


# ---------------------------------------------------------------------------------------------------- help
def _help(*command):
    r = CliRunner().invoke(cli.app, [*command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"},
                           terminal_width=200)
    assert r.exit_code == 0, r.output
    return " ".join(r.output.split())


@pytest.mark.parametrize("command", ["demo", "phantom"])
def test_help_says_the_output_folder_is_required(command):
    text = _help(command)
    assert "(OUT_DIR | --out_dir OUT_DIR)" in text and "[OUT_DIR]" not in text and "[out_dir]" not in text
    assert "Required: give it here or as --out_dir" in text


@pytest.mark.parametrize("command", ["run", "demo", "inspect", "maps", "recompute", "aggregate", "prr", "phantom",
                                     "batch", "compare", "stats", "gui", "node"])
def test_every_subcommand_names_its_exit_codes(command):
    text = _help(command)
    assert "Exit codes:" in text
    if command in ("run", "maps", "recompute"):
        assert "3 a QA flag was raised and --fail-on-qa was given" in text
    if command not in ("gui", "node"):
        assert "130 interrupted" in text


@pytest.mark.parametrize("command", ["run", "demo", "maps", "recompute", "batch", "aggregate"])
def test_main_subcommands_show_an_example(command):
    assert f"Example: ctperf {command} " in _help(command)


def test_recompute_help_lists_quiet():
    text = _help("recompute")
    assert "--quiet" in text and "-q" in text


# ---------------------------------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_during_run_is_one_line_and_leaves_the_folder_as_it_was(tmp_path, capsys, monkeypatch):
    import ctperf.pipeline

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ctperf.pipeline, "run_dicom_folder", interrupted)
    code, out, err = _run(["run", "--dicom_dir", tmp_path, "--out_dir", tmp_path / "new", "-q"], capsys)
    assert code == 130 and _lines(err) == ["ctperf: interrupted; no output written"], err
    old = tmp_path / "old"
    old.mkdir()
    (old / "ctperf_manifest.json").write_text(json.dumps({"mode": "A", "files": ["metrics.json"]}))
    code, _, err = _run(["run", "--dicom_dir", tmp_path, "--out_dir", old, "-q"], capsys)
    assert code == 130 and _lines(err) == [f"ctperf: interrupted; no output written; the earlier result in {old} "
                                           "is unchanged"], err


def test_ctrl_c_while_writing_a_phantom_says_it_is_incomplete(tmp_path, capsys, monkeypatch):
    import ctperf.synthetic

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ctperf.synthetic, "write_truth", interrupted)
    args = ["--matrix", "32", "--n-slices", "2", "-q"]
    code, _, err = _run(["phantom", tmp_path / "ph", *args], capsys)
    assert code == 130 and _lines(err) == [f"ctperf: interrupted; the phantom study in {tmp_path / 'ph'} is "
                                           "incomplete (delete it)"], err


def test_ctrl_c_during_the_swap_of_a_result_set_restores_the_earlier_one(tmp_path, monkeypatch):
    """The claim "the earlier result is unchanged" holds even when Ctrl-C lands while a new set is moved in."""
    import os

    from ctperf.io import outdir

    out = tmp_path / "res"
    with outdir.atomic_output_dir(out) as tmp:
        (tmp / "a.txt").write_text("old a")
        (tmp / "b.txt").write_text("old b")
    before = {p.name: p.read_text() for p in out.iterdir()}
    real, calls = os.replace, [0]

    def replace(src, dst):
        calls[0] += 1
        if calls[0] == 5:  # the old set moved aside (3 files), one new file placed
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(outdir.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        with outdir.atomic_output_dir(out) as tmp:
            (tmp / "a.txt").write_text("new a")
            (tmp / "c.txt").write_text("new c")
    monkeypatch.setattr(outdir.os, "replace", real)
    assert {p.name: p.read_text() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["res"]  # no staging folder left


# -------------------------------------------------------------------------------- one-line refusals
def test_recompute_of_a_mode_b_result_says_so_in_one_line(tmp_path, capsys):
    folder = tmp_path / "modeb"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"mode": "B"}))
    (folder / "ctperf_manifest.json").write_text(json.dumps({"mode": "B", "files": ["metrics.json"]}))
    code, _, err = _run(["recompute", folder, "-q", "--out_dir", tmp_path / "rc"], capsys)
    lines = _lines(err)
    assert code == 2 and len(lines) == 1, err
    assert "holds a Mode B result" in lines[0] and "needs a Mode A result folder" in lines[0]
    assert "missing" not in lines[0] and not (tmp_path / "rc").exists()


def test_aggregate_on_a_read_only_target_names_the_target(tmp_path, monkeypatch):
    """A read-only file system refuses even the removal of the temporary file that was never made (EROFS, not
    ENOENT): the error must still name the output, not the temporary file."""
    import pandas as pd

    from ctperf.errors import InputError
    from ctperf.utils.aggregate_metrics import aggregate

    study = tmp_path / "in" / "s1"
    study.mkdir(parents=True)
    (study / "metrics.json").write_text(json.dumps({"mode": "A", "study_id": "s1", "core_ml": 1.0}))

    def read_only(self, path=None, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    real_unlink = Path.unlink

    def unlink(self, missing_ok=False):
        if ".tmp-" in self.name:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(pd.DataFrame, "to_csv", read_only)
    monkeypatch.setattr(Path, "unlink", unlink)
    target = tmp_path / "rofs" / "s.csv"
    with pytest.raises(InputError) as info:
        aggregate(tmp_path / "in", target, warn=lambda _m: None)
    assert str(info.value) == f"cannot write {target}: Read-only file system"


# -------------------------------------------------------------------------- recompute -q, end to end
@pytest.fixture(scope="module")
def mode_a_result(tmp_path_factory):
    """A small phantom study analysed once (Mode A result folder)."""
    from ctperf.pipeline import run_dicom_folder
    from ctperf.synthetic import PhantomSpec, make_phantom
    from ctperf.synthetic.dicom_writer import write_ctp_dicom

    d = tmp_path_factory.mktemp("polish")
    ph = make_phantom(PhantomSpec(matrix=64, n_slices=4, lesion="left", seed=0))
    write_ctp_dicom(ph.hu, ph.times_s, ph.affine_ras, d / "dicom")
    run_dicom_folder(d / "dicom", d / "res")
    return d / "res"


def test_recompute_takes_quiet_like_the_other_commands(mode_a_result, tmp_path, capsys):
    cfg = tmp_path / "t.toml"
    cfg.write_text("[thresholds]\ntmax_hypoperfusion_s = 8.0\n")
    code, out, err = _run(["recompute", mode_a_result, "-q", "--config", cfg, "--out_dir", tmp_path / "rc1"], capsys)
    assert code == 0, err
    assert "ctperf recompute ->" in out and (tmp_path / "rc1" / "metrics.json").is_file()
    assert json.loads((tmp_path / "rc1" / "metrics.json").read_text())["thresholds"]["tmax_hypoperfusion_s"] == 8.0


def test_inspect_without_a_perfusion_series_still_lists_the_folder(tmp_path, capsys, monkeypatch):
    """`ctperf inspect` on a single 3D CT: the series table with the reason each series was left out, then the
    one-line error and exit 2 (it printed the error alone); `--json` stays the error alone."""
    from ctperf.synthetic import PhantomSpec, make_phantom
    from ctperf.synthetic.dicom_writer import DicomLayout, write_ctp_dicom

    monkeypatch.setenv("COLUMNS", "250")
    ph = make_phantom(PhantomSpec(matrix=32, n_slices=3, pixel_mm=7.0))
    write_ctp_dicom(ph.hu[:1], ph.times_s[:1], ph.affine_ras, tmp_path / "ct", layout=DicomLayout(vendor="siemens"),
                    seed=1)
    code, out, err = _run(["inspect", tmp_path / "ct"], capsys)
    assert code == 2 and "single time point" in out and "files" in out
    assert _lines(err) == [ln for ln in _lines(err) if ln.startswith("ctperf: error:")] and len(_lines(err)) == 1
    code, out, err = _run(["inspect", tmp_path / "ct", "--json"], capsys)
    assert code == 2 and not out.strip() and len(_lines(err)) == 1
