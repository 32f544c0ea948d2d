"""What the web app's jobs do: demo study, Mode A, Mode B - each a call into the workflow functions."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from ctperf.apps.web.jobs import Job
from ctperf.apps.web.settings import WebSettings
from ctperf.errors import CTPerfError

#: Sub-folders of the results folder that hold inputs, not results.
UPLOADS, STUDIES = ".uploads", ".studies"


def new_output_dir(settings: WebSettings, label: str) -> Path:
    """A fresh, not yet existing folder ``<label>-YYYYmmdd-HHMMSS[-n]`` in the results folder."""
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("._") or "run"
    stem = f"{label[:40]}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, n = settings.results_dir / stem, 1
    while out.exists():
        n += 1
        out = settings.results_dir / f"{stem}-{n}"
    return out


def make_demo_study(settings: WebSettings, lesion: str = "left", seed: int = 0) -> Path:
    """Write a digital phantom CTP study (DICOM) into ``results_dir/.studies/`` and return its DICOM folder."""
    from ctperf.synthetic import PhantomSpec, make_phantom
    from ctperf.synthetic.dicom_writer import DicomLayout, write_ctp_dicom

    # keep the phantom's field of view (224 mm) whatever the matrix
    spec = PhantomSpec(matrix=settings.demo_matrix, n_slices=settings.demo_slices,
                       pixel_mm=224.0 / settings.demo_matrix, noise_hu=3.0 if settings.demo_matrix < 128 else 8.0,
                       lesion=lesion, seed=seed)
    ph = make_phantom(spec)
    base = settings.results_dir / STUDIES
    base.mkdir(parents=True, exist_ok=True)
    n = 1
    while (base / f"demo-{n}").exists():
        n += 1
    dicom = base / f"demo-{n}" / "dicom"
    write_ctp_dicom(ph.hu, ph.times_s, ph.affine_ras, dicom, layout=DicomLayout(vendor="siemens"), seed=seed)
    return dicom


def run_mode_a(settings: WebSettings, job: Job, study: Path, label: str, series: str | None = None) -> dict:
    """Mode A on a DICOM folder into a new results folder; progress goes to the job's event log."""
    from ctperf.config import Config
    from ctperf.pipeline import run_dicom_folder

    out = new_output_dir(settings, label)
    last = [0.0]

    def files(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] > 0.25:  # throttled: the browser needs a few updates a second
            last[0] = now
            job.emit(stage="reading DICOM", done=done, total=total)

    try:
        result = run_dicom_folder(study, out, Config(), series=series, progress=lambda s: job.emit(stage=s),
                                  load_progress=files)
    except CTPerfError as exc:
        if settings.show_identifiers:
            raise
        # folder names often carry patient names: keep them out of the page
        raise type(exc)(str(exc).replace(str(study), "<study folder>")) from None
    return {"result_id": out.name, "hypoperfusion_ml": result.metrics.get("hypoperfusion_ml"),
            "core_ml": result.metrics.get("core_ml")}


def run_mode_b(settings: WebSettings, job: Job, inputs: dict[str, Path], ranges: dict[str, Any]) -> dict:
    """Mode B (vendor maps + MIP screenshot with a yellow ROI + AIF/VOF CSV) into a new results folder."""
    from ctperf.config import Config
    from ctperf.modeb.pipeline_b import run_maps

    out = new_output_dir(settings, "modeb")
    job.emit(stage="Mode B: maps, ROI, indices")
    metrics = run_maps(mip=inputs["mip"], tmax=inputs["tmax"], cbv=inputs["cbv"], rcbf=inputs["rcbf"],
                       aif_csv=inputs["aif_csv"], vof_csv=inputs["vof_csv"], out_dir=out, cfg=Config(),
                       ranges=ranges)
    return {"result_id": out.name, "hypoperfusion_ml": metrics.get("hypoperfusion_ml"),
            "core_ml": metrics.get("core_ml")}
