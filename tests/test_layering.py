"""Dependencies point inwards (../shared/STYLE.md, "Layout"): importing an inner layer in a fresh interpreter loads
no file-format, GUI, network or cluster library and none of the outer ctperf layers."""

import subprocess
import sys

import pytest

#: Libraries of the outer layers (files, DICOM, figures, web, node, cluster).
OUTER_LIBRARIES = ("nibabel", "pydicom", "highdicom", "matplotlib", "pynetdicom", "dask", "distributed", "fastapi",
                   "PIL", "reportlab")
#: ctperf's outer layers (I/O, figures, workflows, applications).
OUTER_CTPERF = ("ctperf.io", "ctperf.nifti_io", "ctperf.dicom_io", "ctperf.viz", "ctperf.qa_plots", "ctperf.report",
                "ctperf.pipeline", "ctperf.workflows", "ctperf.apps", "ctperf.cli")

LAYERS = {
    "core": (["ctperf.core.grid", "ctperf.core.morphology", "ctperf.core.midline", "ctperf.core.orientation",
              "ctperf.core.types", "ctperf.core.constants"],
             ("ctperf.engine",)),
    "engine": (["ctperf.engine", "ctperf.engine.deconvolution", "ctperf.engine.regularise"], ()),
    "analysis": (["ctperf.analysis.masks", "ctperf.analysis.indices", "ctperf.analysis.regions",
                  "ctperf.analysis.metrics"], ("ctperf.engine",)),
}


def _loaded_after_import(modules: list[str]) -> list[str]:
    code = f"import sys\nfor m in {modules!r}:\n    __import__(m)\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return out.split()


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_inner_layers_import_no_outer_layer(layer):
    modules, also_forbidden = LAYERS[layer]
    loaded = _loaded_after_import(modules)
    forbidden = OUTER_CTPERF + also_forbidden
    bad = [m for m in loaded if m.split(".")[0] in OUTER_LIBRARIES or m.startswith(forbidden)]
    assert bad == [], f"importing the {layer} layer loads {bad}"
