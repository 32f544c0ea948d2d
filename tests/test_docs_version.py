"""docs/definitions.md names the definition version the code writes into metrics.json."""

from pathlib import Path

from ctperf.core.constants import DEFINITION_VERSION

DOC = Path(__file__).resolve().parents[1] / "docs" / "definitions.md"


def test_definitions_title_carries_the_current_version():
    title = DOC.read_text(encoding="utf-8").splitlines()[0]
    assert title == f"# ctperf definitions (definition version {DEFINITION_VERSION})"
    assert f"Changes in definition version {DEFINITION_VERSION} " in DOC.read_text(encoding="utf-8")
