"""ProcessingParameters: strict parsing with field-named errors, JSON round trip, content hash."""

from __future__ import annotations

import json

import pytest

from em2q_msi.parameters import ParameterError, ProcessingParameters


def test_defaults_round_trip_through_json():
    params = ProcessingParameters.defaults()
    text = json.dumps(params.to_dict())
    assert ProcessingParameters.from_dict(json.loads(text)) == params


def test_missing_steps_and_names_take_defaults():
    params = ProcessingParameters.from_dict({"peak_picking": {"snr_threshold": 5}})
    assert params.peak_picking.snr_threshold == 5.0
    assert params.smoothing == ProcessingParameters.defaults().smoothing


def test_wrong_type_names_the_field():
    with pytest.raises(ParameterError) as info:
        ProcessingParameters.from_dict({"peak_picking": {"snr_threshold": "abc"}})
    assert str(info.value) == "peak_picking.snr_threshold: expected a number, got 'abc'"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"smoothin": {}}, "smoothin: unknown processing step"),
        ({"smoothing": {"window": 5}}, "smoothing.window: unknown parameter"),
        ({"smoothing": {"window_points": 10}}, "smoothing.window_points: must be odd"),
        ({"smoothing": {"window_points": 5, "polyorder": 5}}, "smoothing.polyorder: must be less"),
        ({"smoothing": {"method": "boxcar"}}, "smoothing.method: expected one of"),
        ({"baseline": {"window_points": 2.5}}, "baseline.window_points: expected an integer"),
        ({"peak_picking": {"snr_threshold": True}}, "peak_picking.snr_threshold: expected a num"),
        ({"peak_picking": {"snr_threshold": -1}}, "peak_picking.snr_threshold: must be >= 0"),
        ({"binning": {"min_frequency": 1.5}}, "binning.min_frequency: must be <= 1"),
        ({"qc": {"lock_masses": [500, "x"]}}, "qc.lock_masses[1]: expected a number"),
        ({"qc": {"lock_masses": 500}}, "qc.lock_masses: expected a list of numbers"),
        (
            {"ion_images": {"tolerance_ppm": 5, "tolerance_da": 0.1}},
            "ion_images.tolerance_ppm: give exactly one",
        ),
    ],
)
def test_bad_values_are_rejected_with_the_field_named(values, message):
    with pytest.raises(ParameterError) as info:
        ProcessingParameters.from_dict(values)
    assert str(info.value).startswith(message)


def test_naming_only_a_dalton_window_switches_off_the_ppm_one():
    params = ProcessingParameters.from_dict({"ion_images": {"mz": [500.25], "tolerance_da": 0.1}})
    assert params.ion_images.tolerance_ppm is None
    assert params.ion_images.to_dict() == {
        "mz": [500.25],
        "tolerance_ppm": None,
        "tolerance_da": 0.1,
    }


def test_integral_float_is_accepted_for_an_integer_field():
    assert (
        ProcessingParameters.from_dict({"baseline": {"window_points": 51.0}}).baseline.window_points
        == 51
    )


def test_digest_is_stable_and_changes_with_a_value():
    a = ProcessingParameters.defaults()
    b = ProcessingParameters.from_dict({"binning": {"tolerance_ppm": 20}})
    assert a.digest() == ProcessingParameters.from_dict(a.to_dict()).digest()
    assert a.digest() != b.digest()
