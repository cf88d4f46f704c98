"""Image figures of the web catalog: physical aspect, planes of a 3-D stack, pixels not
acquired shown as such (never as zero)."""

from __future__ import annotations

import numpy as np

from em2q.web import plots
from em2q_msi.geometry import PixelGrid


def test_image_axes_are_in_micrometres_with_equal_scales_so_pixels_keep_their_aspect():
    grid = PixelGrid((101, 41, 1), (1, 2, 3), (20.0, 40.0))
    figure = plots.images_figure([("TIC", np.ones((2, 3)))], grid=grid)
    heatmap = figure.data[0]
    assert (heatmap.dx, heatmap.dy) == (20.0, 40.0)
    assert figure.layout.yaxis.scaleanchor == "x" and figure.layout.yaxis.scaleratio == 1


def test_pixels_not_acquired_read_not_acquired_over_their_own_background():
    image = np.array([[1.0, np.nan], [0.0, 2.0]])
    figure = plots.images_figure([("TIC", image)], grid=PixelGrid((1, 1, 1), (1, 2, 2)))
    text = np.asarray(figure.data[0].text)
    assert text[0, 1] == "not acquired" and text[1, 0] == ""  # zero is a value, not a gap
    assert figure.layout.plot_bgcolor == plots.NOT_ACQUIRED_COLOR


def test_a_3d_stack_is_drawn_as_one_panel_per_plane():
    grid = PixelGrid((1, 1, 3), (3, 2, 2))
    stack = np.arange(12, dtype=float).reshape(3, 2, 2)
    figure = plots.images_figure([("m/z 500", stack)], grid=grid)
    assert [a.text for a in figure.layout.annotations] == [
        "m/z 500 · z=3",
        "m/z 500 · z=4",
        "m/z 500 · z=5",
    ]
    np.testing.assert_array_equal(figure.data[2].z, stack[2])
