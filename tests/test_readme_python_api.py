"""The README's Python example runs as written (on a small phantom study standing in for STUDY/)."""

import re
from pathlib import Path

from cohort_data import write_small_study

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    blocks = _python_blocks()
    assert len(blocks) == 1, "the README has one Python example"
    write_small_study(tmp_path / "STUDY")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.split()
    assert len(printed) == 3 and all(float(v) >= 0 for v in printed)
    assert (tmp_path / "results" / "metrics.json").is_file() and (tmp_path / "results" / "tmax.nii.gz").is_file()
    res = namespace["res"]
    assert namespace["tmax_s"].shape == namespace["core"].shape == res.perfusion.cbf.shape
    assert res.metrics["thresholds"]["rcbf_core"] == 0.34
