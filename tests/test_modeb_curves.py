"""AIF / VOF CSV reading and time to peak."""

import numpy as np
import pytest

from ctperf.errors import InputError
from ctperf.modeb.curves_csv import parse_curve_text, read_curve_csv, time_to_peak_s

T = np.array([0.0, 1.5, 3.0, 4.5, 6.0, 7.5])
Y = np.array([2.0, 2.5, 40.25, 310.0, 120.5, 30.0])


def _write(tmp_path, text, name="aif.csv", encoding="utf-8"):
    p = tmp_path / name
    p.write_text(text, encoding=encoding)
    return p


@pytest.mark.parametrize("text", [
    "time_s,HU\n" + "".join(f"{t},{y}\n" for t, y in zip(T, Y)),  # comma with header
    "".join(f"{t}, {y}\n" for t, y in zip(T, Y)),  # no header, spaces
    "time_s;aif_hu\n" + "".join(f"{t};{y}\n".replace(".", ",") for t, y in zip(T, Y)),  # ; + decimal comma
    "\ufeffframe,time_s,roi_area,AIF_HU,comment\n" +
    "".join(f"{i},{t},12.0,{y},ok\n" for i, (t, y) in enumerate(zip(T, Y))),  # extra columns, BOM
    "# exported curve\n\nTime\tValue\n" + "".join(f" {t}\t{y} \n" for t, y in zip(T, Y)),  # tabs, comments
    "t (ms);mean HU\n" + "".join(f"{int(t * 1000)};{y}\n".replace(".", ",") for t, y in zip(T, Y)),  # ms
    "time_s,HU\n" + "".join(f"{t},{y}\n" for t, y in zip(T[::-1], Y[::-1])),  # unsorted
])
def test_csv_variants(tmp_path, text):
    t, y = read_curve_csv(_write(tmp_path, text))
    np.testing.assert_allclose(t, T)
    np.testing.assert_allclose(y, Y)


def test_value_column_choice():
    text = "time_s,aif,vof\n0,1,5\n1,2,6\n2,3,9\n3,2,7\n"
    assert parse_curve_text(text)[1].tolist() == [1, 2, 3, 2]
    assert parse_curve_text(text, value_column="vof")[1].tolist() == [5, 6, 9, 7]
    assert parse_curve_text(text, value_column=2)[1].tolist() == [5, 6, 9, 7]
    with pytest.raises(InputError, match="no column named"):
        parse_curve_text(text, value_column="cbf")


def test_unreadable_csv(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_curve_csv(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="no numeric rows"):
        read_curve_csv(_write(tmp_path, "time,value\nabc,def\n"))
    with pytest.raises(InputError, match="usable rows"):
        read_curve_csv(_write(tmp_path, "time,value\n0,1\n1,2\n"))
    with pytest.raises(InputError, match="empty"):
        read_curve_csv(_write(tmp_path, "\n\n"))
    p = tmp_path / "bin.csv"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    with pytest.raises(InputError):
        read_curve_csv(p)


@pytest.mark.parametrize("dt", [1.0, 1.5, 2.0])
@pytest.mark.parametrize("true_peak", [14.2, 15.0, 17.7])
def test_ttp_subsample(dt, true_peak):
    t = np.arange(0, 50, dt)
    y = 300 * np.exp(-0.5 * ((t - true_peak) / 4.0) ** 2) + 5  # FWHM ~ 9.4 s
    ttp = time_to_peak_s(t, y)
    assert abs(ttp - true_peak) < 0.1 < dt / 2  # grid-only estimate could be off by up to dt / 2


def test_ttp_nonuniform_and_edges():
    t = np.array([0, 1, 2, 3, 4, 6, 8, 10, 12.0])  # 1 s then 2 s sampling
    y = -((t - 5.3) ** 2) + 40  # exact parabola: vertex recovered exactly on non-uniform samples
    assert time_to_peak_s(t, y) == pytest.approx(5.3, abs=1e-9)
    assert time_to_peak_s(t, t) == 12.0  # peak at the last sample
    assert time_to_peak_s([0, 1, 2, 3], [5, 5, 5, 5]) == 0.0
