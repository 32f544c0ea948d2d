"""Radiological display orientation from the affine (ctperf.core.orientation), checked against nibabel's axis codes."""

import numpy as np
import pytest
from nibabel.orientations import aff2axcodes

from ctperf.core.orientation import direction_letter, display_orientation
from test_qa_plots import NX, NY, NZ, _affine  # the standard and flipped axial grids of the figure tests

OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}


def test_radiological_orientation_from_affine():
    standard = display_orientation(_affine(), (NZ, NY, NX))
    assert not standard.flip_lr and not standard.flip_ud and not standard.transpose
    assert (standard.left, standard.right, standard.top, standard.bottom) == ("R", "L", "A", "P")
    flipped = display_orientation(_affine(flip_x=True), (NZ, NY, NX))
    assert flipped.flip_lr and (flipped.left, flipped.right) == ("R", "L")
    # A voxel at the patient's left (large x in the standard grid) is drawn on the image right.
    col, _ = standard.point(10, NX - 5, (NY, NX))
    assert col > NX / 2
    col, _ = flipped.point(10, NX - 5, (NY, NX))  # in the flipped grid large x is the patient's right
    assert col < NX / 2
    # Rows along x and columns along y (transposed acquisition) are transposed back for display.
    swapped = np.array([[0, -3.0, 0, 0], [-3.0, 0, 0, 0], [0, 0, 5.0, 0], [0, 0, 0, 1]])
    tr = display_orientation(swapped, (NZ, NY, NX))
    assert tr.transpose and (tr.left, tr.right, tr.top, tr.bottom) == ("R", "L", "A", "P")
    # Slices ordered inferior to superior even when z runs downwards.
    down = _affine()
    down[2, 2] = -5.0
    assert display_orientation(down, (NZ, NY, NX)).slice_order == tuple(range(NZ - 1, -1, -1))


def _rotation(yaw_deg: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(yaw_deg)), np.sin(np.deg2rad(yaw_deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize("seed", range(12))
def test_edge_letters_agree_with_nibabel(seed):
    """Every in-plane axis permutation and sign, tilted by up to 30 degrees: the letters at the display's edges are
    the positive / negative ends of the voxel axis drawn there, as nibabel's aff2axcodes names them."""
    rng = np.random.default_rng(seed)
    m = np.zeros((3, 3))
    cols = rng.permutation(2) if rng.random() < 0.5 else np.array([0, 1])
    m[cols[0], 0], m[cols[1], 1], m[2, 2] = rng.choice([-1.0, 1.0], 3) * rng.uniform(0.5, 3.0, 3)
    a = np.eye(4)
    a[:3, :3] = _rotation(rng.uniform(-30.0, 30.0)) @ m
    codes = aff2axcodes(a)  # labels of the positive ends of voxel axes x, y, z
    o = display_orientation(a, (NZ, NY, NX))
    across, down = (codes[1], codes[0]) if o.transpose else (codes[0], codes[1])  # image column / row voxel axes
    assert o.right == (OPPOSITE[across] if o.flip_lr else across)
    assert o.left == OPPOSITE[o.right]
    assert o.bottom == (OPPOSITE[down] if o.flip_ud else down)
    assert o.top == OPPOSITE[o.bottom]
    assert (o.left, o.right, o.top, o.bottom) == ("R", "L", "A", "P")  # radiological: patient right on image left


def test_direction_letter_is_nibabels_code_of_one_axis():
    for vec in ([3.0, 0.2, 0.1], [-0.1, -2.0, 0.5], [0.3, 0.2, -4.0], [-1.0, 0.9, 0.0]):
        a = np.eye(4)
        a[:3, 0] = vec
        a[:3, 1:3] = np.linalg.qr(np.column_stack([vec, [0, 1, 0], [0, 0, 1]]))[0][:, 1:]  # any completion
        assert direction_letter(np.array(vec)) == aff2axcodes(a)[0]
