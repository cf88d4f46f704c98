"""Studies in the catalog: create, add members, groups from the design; study parameter values
in parameter sets (validated by the one check, kept out of the processing hash)."""

from __future__ import annotations

import pytest

from em2q_resources import parameter_sets as ps
from em2q_resources import studies
from em2q_resources.metadata import AlreadyExists, DocumentNotFound
from em2q_resources.metadata.synthetic import measurement


def register(store, index: int, condition: str, organ: str = "brain"):
    s = store.schema
    doc = measurement(s, index)
    doc.sample.condition = s.SampleCondition._NAMES_TO_VALUES[condition]
    doc.sample.organ = organ
    store.create(doc, refresh=True)
    return doc.id


def test_validate_accepts_a_study_step_and_names_a_bad_study_value():
    ps.validate({"study": {"normalisation": "rms", "contrasts": ["b vs a"]}})
    with pytest.raises(ps.InvalidParameterSet) as raised:
        ps.validate({"study": {"normalisation": "quantile"}})
    assert raised.value.field == "study.normalisation"


def test_study_values_do_not_change_the_processing_hash():
    plain = {"peak_picking": {"snr_threshold": 4.0}}
    with_study = {**plain, "study": {"tolerance_ppm": 5.0}}
    assert ps.content_hash(with_study) == ps.content_hash(plain)


def test_study_values_round_trip_through_a_saved_set_and_a_change_is_a_new_version(
    metadata_store,
):
    values = {"study": {"tolerance_ppm": 5.0, "contrasts": ["DISEASED vs HEALTHY"]}}
    first = ps.save(metadata_store, "cmp", values, author="Ada")
    again = ps.save(metadata_store, "cmp", values, author="Ada")
    changed = ps.save(metadata_store, "cmp", {"study": {"tolerance_ppm": 7.0}}, author="Ada")
    assert again.id == first.id == "cmp@v1"
    assert changed.id == "cmp@v2"
    resolved = ps.resolve(metadata_store, "cmp@v1")
    assert resolved.study.tolerance_ppm == 5.0
    assert resolved.study.contrast_pairs() == (("DISEASED", "HEALTHY"),)
    assert ps.resolve(metadata_store, "cmp").study.tolerance_ppm == 7.0


def test_a_study_is_stored_with_its_members_design_and_groups(metadata_store):
    a = register(metadata_store, 1, "HEALTHY")
    b = register(metadata_store, 2, "DISEASED", organ="liver")
    study = studies.create(
        metadata_store, "st-1", title="Lesions", design=["sample.condition", "sample.organ"],
        members=[a, b, a],
    )  # fmt: skip
    stored = studies.get(metadata_store, "st-1")
    assert stored.member_ids == [a, b]
    assert stored.parameter_set == "default"
    assert studies.member_groups(metadata_store, study) == {
        a: "HEALTHY/brain",
        b: "DISEASED/liver",
    }


def test_adding_members_keeps_the_earlier_ones_once(metadata_store):
    a, b, c = (register(metadata_store, i, "HEALTHY") for i in (1, 2, 3))
    studies.create(metadata_store, "st-2", title="t", design=["sample.condition"], members=[a])
    updated = studies.add_members(metadata_store, "st-2", [b, a, c])
    assert updated.member_ids == [a, b, c]
    assert studies.get(metadata_store, "st-2").member_ids == [a, b, c]


def test_a_member_without_the_design_field_is_refused_naming_it(metadata_store):
    a = register(metadata_store, 1, "HEALTHY")
    with pytest.raises(studies.InvalidStudy, match=rf"{a}.*sample.condition_detail"):
        studies.create(
            metadata_store, "st-3", title="t", design=["sample.condition_detail"], members=[a]
        )
    assert not metadata_store.exists(metadata_store.schema.Study, "st-3")


def test_an_unknown_member_or_parameter_set_is_refused(metadata_store):
    with pytest.raises(studies.InvalidStudy, match="no measurement 'm-missing'"):
        studies.create(
            metadata_store, "st-4", title="t", design=["sample.organ"], members=["m-missing"]
        )
    with pytest.raises(DocumentNotFound):
        studies.create(
            metadata_store, "st-4", title="t", design=["sample.organ"], parameter_set="nope"
        )


def test_a_study_id_is_not_taken_twice(metadata_store):
    studies.create(metadata_store, "st-5", title="t", design=["sample.organ"])
    with pytest.raises(AlreadyExists):
        studies.create(metadata_store, "st-5", title="t", design=["sample.organ"])
