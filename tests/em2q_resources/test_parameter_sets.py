"""Parameter sets: the one check, the one hash, saving, resolving and the seeded ``default``."""

from __future__ import annotations

import uuid

import pytest

from em2q_msi.parameters import ProcessingParameters
from em2q_resources import parameter_sets as ps
from em2q_resources.connections import set_up_metadata_store
from em2q_resources.metadata import DocumentNotFound, MetadataStore, load_schema
from em2q_resources.results_layout import result_key

S = load_schema()


@pytest.mark.parametrize(
    ("values", "field", "problem"),
    [
        ({"peaks": {"snr_threshold": 3}}, "peaks", "unknown processing step"),
        ({"peak_picking": {"snr": 3}}, "peak_picking.snr", "unknown parameter"),
        ({"peak_picking": {"snr_threshold": "abc"}}, "peak_picking.snr_threshold", "a number"),
        ({"peak_picking": {"snr_threshold": True}}, "peak_picking.snr_threshold", "a number"),
        ({"smoothing": {"window_points": 7.5}}, "smoothing.window_points", "an integer"),
        ({"smoothing": {"window_points": 8}}, "smoothing.window_points", "must be odd"),
        ({"smoothing": {"method": "fourier"}}, "smoothing.method", "expected one of"),
        ({"qc": {"low_tic_fraction": 1.5}}, "qc.low_tic_fraction", "must be <= 1.0"),
        ({"binning": {"tolerance_ppm": float("nan")}}, "binning.tolerance_ppm", "finite"),
        ({"ion_images": {"mz": [100.0, "x"]}}, "ion_images.mz[1]", "a number"),
        ({"ion_images": {"mz": 100.0}}, "ion_images.mz", "a list of numbers"),
        ({"peak_picking": [3]}, "peak_picking", "an object of parameters"),
        ({}, "values", "at least one step"),
        ([("peak_picking", {})], "values", "at least one step"),
    ],
)
def test_validate_refuses_a_bad_value_naming_its_field(values, field, problem):
    with pytest.raises(ps.InvalidParameterSet, match=problem) as raised:
        ps.validate(values)
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")


def test_validate_returns_the_parameters_the_steps_run_with():
    params = ps.validate({"peak_picking": {"snr_threshold": 5}})
    assert params.peak_picking.snr_threshold == 5.0
    assert params.smoothing == ProcessingParameters().smoothing


SAME_EFFECTIVE_VALUES = [
    {"peak_picking": {"snr_threshold": 5}},
    {"peak_picking": {"snr_threshold": 5.0, "noise": "mad"}},
    {"peak_picking": {"snr_threshold": 5}, "smoothing": {"window_points": 11.0}},
    {**ProcessingParameters.defaults().to_dict(), "peak_picking": {"snr_threshold": 5.0}},
]


def test_sets_with_the_same_effective_values_have_one_hash():
    hashes = {ps.content_hash(values) for values in SAME_EFFECTIVE_VALUES}
    assert hashes == {ProcessingParameters.from_dict(SAME_EFFECTIVE_VALUES[0]).digest()}


def test_a_different_effective_value_is_a_different_hash():
    assert ps.content_hash({"peak_picking": {"snr_threshold": 5}}) != ps.content_hash(
        {"peak_picking": {"snr_threshold": 6}}
    )


def test_normalise_fills_in_every_step_and_canonical_types():
    normalised = ps.normalise({"smoothing": {"window_points": 7.0}})
    assert set(normalised) == set(ProcessingParameters.defaults().to_dict())
    assert normalised["smoothing"]["window_points"] == 7
    assert isinstance(normalised["smoothing"]["window_points"], int)


def test_differently_spelled_sets_resolve_to_the_same_result_folder(metadata_store):
    ids = [
        ps.save(metadata_store, f"spelling-{i}", values, author="ada").id
        for i, values in enumerate(SAME_EFFECTIVE_VALUES)
    ]
    resolved = [ps.resolve(metadata_store, set_id) for set_id in ids]
    folders = {result_key("m-1", "peak_table", r.content_hash, None) for r in resolved}
    assert folders == {f"results/m-1/peak_table/{resolved[0].short_hash}/all"}
    assert resolved[0].short_hash == ps.content_hash(SAME_EFFECTIVE_VALUES[0])[:16]


def test_the_same_effective_values_saved_again_return_the_saved_version(metadata_store):
    first = ps.save(metadata_store, "strict", SAME_EFFECTIVE_VALUES[0], author="ada")
    again = ps.save(metadata_store, "strict", SAME_EFFECTIVE_VALUES[1], author="bob")
    assert (again.id, again.author) == ("strict@v1", "ada") == (first.id, first.author)
    changed = ps.save(metadata_store, "strict", {"peak_picking": {"snr_threshold": 6}}, author="a")
    assert changed.id == "strict@v2"


def test_saved_values_are_those_the_author_wrote(metadata_store):
    saved = ps.save(metadata_store, "short", {"peak_picking": {"snr_threshold": 5}}, author="a")
    stored = metadata_store.get_parameter_set(saved.id)
    assert ps.values_from_documents(stored.values) == {"peak_picking": {"snr_threshold": 5.0}}
    assert stored.content_hash == ps.content_hash({"peak_picking": {"snr_threshold": 5}})


def test_an_invalid_set_is_not_saved(metadata_store):
    with pytest.raises(ps.InvalidParameterSet):
        ps.save(metadata_store, "broken", {"peak_picking": {"snr": 3}}, author="ada")
    assert metadata_store.parameter_sets("broken") == []


def test_a_set_saved_under_an_older_hash_resolves_under_the_one_hash(metadata_store):
    values = {"peak_picking": {"snr_threshold": 4}}
    old = S.ParameterSet(
        id="legacy@v1", name="legacy", version=1, author="ada", created_at="2026-01-01T00:00:00Z",
        values=ps.values_to_documents(values, S), content_hash="ab" * 32,
    )  # fmt: skip
    metadata_store.create(old)
    assert ps.resolve(metadata_store, "legacy").content_hash == ps.content_hash(values)
    assert ps.describe(metadata_store.get_parameter_set("legacy@v1"))["content_hash"] == (
        ps.content_hash(values)
    )  # what `params show` and the web page show: the hash the results are filed under
    assert ps.save(metadata_store, "legacy", values, author="bob").id == "legacy@v1"


def test_a_name_holding_an_unusable_legacy_set_still_takes_new_versions(metadata_store):
    unusable = S.ParameterSet(
        id="old@v1",
        name="old",
        version=1,
        author="ada",
        created_at="2026-01-01T00:00:00Z",
        values=ps.values_to_documents({"qc": {"min_snr": 2}}, S),
        content_hash="cd" * 32,
    )  # saved before every surface checked values
    metadata_store.create(unusable)
    assert ps.describe(metadata_store.get_parameter_set("old@v1"))["content_hash"] == "cd" * 32
    with pytest.raises(ps.InvalidParameterSet, match="qc.min_snr"):
        ps.resolve(metadata_store, "old")
    assert ps.save(metadata_store, "old", {"qc": {"min_median_snr": 2}}, author="a").id == "old@v2"


@pytest.fixture
def bare_store(elasticsearch_url):
    """Indices only: a store nobody has set up."""
    store = MetadataStore.connect(elasticsearch_url, index_prefix=f"test-{uuid.uuid4().hex[:8]}")
    store.ensure_indices()
    yield store
    store.drop_all()


def test_set_up_seeds_default_once_from_the_core_defaults(bare_store):
    set_up_metadata_store(bare_store)
    set_up_metadata_store(bare_store)
    saved = bare_store.parameter_sets(ps.DEFAULT_NAME)
    assert [s.id for s in saved] == ["default@v1"]
    assert ps.resolve(bare_store).params == ProcessingParameters.defaults()


def test_set_up_keeps_a_default_the_team_saved(bare_store):
    ps.save(bare_store, ps.DEFAULT_NAME, {"qc": {"min_median_snr": 3}}, author="ada")
    set_up_metadata_store(bare_store)
    assert [s.id for s in bare_store.parameter_sets(ps.DEFAULT_NAME)] == ["default@v1"]
    assert ps.resolve(bare_store).params.qc.min_median_snr == 3.0


def test_resolving_never_writes_default(bare_store):
    with pytest.raises(ps.DefaultNotSeeded, match="set the store up"):
        ps.resolve(bare_store, ps.DEFAULT_NAME)
    assert bare_store.parameter_sets(ps.DEFAULT_NAME) == []


def test_resolving_an_unknown_set_is_not_found(metadata_store):
    with pytest.raises(DocumentNotFound):
        ps.resolve(metadata_store, "nobody-saved-this")
