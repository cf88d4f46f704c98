"""The IDL is the source of truth: mappings and documents are derived from it and validated."""

from __future__ import annotations

import pytest

from em2q_resources.metadata import schema as sch
from em2q_resources.metadata.schema import SchemaViolation, load_schema
from em2q_resources.metadata.synthetic import measurement

SCHEMA = load_schema()


def test_every_indexed_entity_of_the_domain_is_in_the_idl():
    assert set(SCHEMA.entities) == {
        "Project",
        "Study",
        "Sample",
        "Instrument",
        "Measurement",
        "SpectraPartition",
        "ParameterSet",
        "WorkflowRun",
        "Workflow",
        "PeakFeature",
        "QcRecord",
        "Roi",
        "OpticalImage",
    }


def test_searchable_strings_are_normalised_keywords_with_a_text_subfield():
    title = SCHEMA.entity("Measurement").mapping["properties"]["title"]
    assert title["type"] == "keyword"
    assert title["normalizer"] == "lowercase"
    assert title["fields"]["text"]["type"] == "text"


def test_mapping_types_follow_the_thrift_types():
    props = SCHEMA.entity("Measurement").mapping["properties"]
    assert props["id"] == {"type": "keyword"}
    assert props["status"] == {"type": "keyword"}  # enum, stored by name
    assert props["uploaded_at"]["type"] == "date"
    assert props["files"]["type"] == "nested"
    assert props["files"]["properties"]["size_bytes"] == {"type": "long"}
    assert props["facts"]["properties"]["pixels_x"] == {"type": "integer"}
    assert props["settings"]["properties"]["resolving_power"] == {"type": "double"}
    assert "type" not in props["settings"]  # a struct field is a plain object
    assert SCHEMA.entity("ParameterSet").mapping["properties"]["values"]["type"] == "nested"


def test_a_change_to_the_idl_changes_the_mapping(tmp_path):
    idl = sch.IDL_PATH.read_text(encoding="utf-8")
    changed = idl.replace(
        "  16: optional list<string> tags,\n",
        "  16: optional list<string> tags,\n  99: optional double ambient_humidity_percent,\n",
    )
    assert changed != idl
    path = tmp_path / "em2q.thrift"
    path.write_text(changed, encoding="utf-8")
    altered = load_schema(path, module_name="em2q_changed_thrift")
    before, after = SCHEMA.entity("Measurement"), altered.entity("Measurement")
    assert after.mapping["properties"]["ambient_humidity_percent"] == {"type": "double"}
    assert before.mapping_hash != after.mapping_hash
    assert SCHEMA.entity("Project").mapping_hash == altered.entity("Project").mapping_hash


def test_documents_use_field_names_and_enum_names():
    doc = sch.to_document(measurement(SCHEMA, 1))
    assert doc["settings"]["polarity"] in ("POSITIVE", "NEGATIVE")
    assert doc["files"][0]["role"] == "IMZML"
    assert "status_reason" not in doc  # absent optional fields are left out


def test_measurement_round_trips_exactly_through_its_document():
    original = measurement(SCHEMA, 7)
    assert sch.from_document(SCHEMA.Measurement, sch.to_document(original)) == original


def test_missing_required_field_is_refused_with_its_path():
    doc = sch.to_document(measurement(SCHEMA, 1))
    del doc["settings"]["polarity"]
    with pytest.raises(SchemaViolation, match=r"Measurement\.settings\.polarity: required"):
        sch.from_document(SCHEMA.Measurement, doc)


def test_unknown_enum_value_is_refused_with_the_choices():
    doc = sch.to_document(measurement(SCHEMA, 1))
    doc["settings"]["analyzer"] = "MAGNETIC_SECTOR"
    with pytest.raises(SchemaViolation) as error:
        sch.from_document(SCHEMA.Measurement, doc)
    assert error.value.field == "Measurement.settings.analyzer"
    assert "ORBITRAP" in str(error.value)


def test_wrong_type_is_refused_with_its_path():
    doc = sch.to_document(measurement(SCHEMA, 1))
    doc["facts"]["pixels_x"] = "many"
    with pytest.raises(SchemaViolation, match=r"Measurement\.facts\.pixels_x: expected an integer"):
        sch.from_document(SCHEMA.Measurement, doc)


def test_unknown_field_is_refused():
    doc = sch.to_document(measurement(SCHEMA, 1))
    doc["sample"]["colour"] = "blue"
    with pytest.raises(SchemaViolation, match=r"Measurement\.sample\.colour: unknown field"):
        sch.from_document(SCHEMA.Measurement, doc)


def test_struct_with_missing_required_field_cannot_become_a_document():
    broken = measurement(SCHEMA, 1)
    broken.operator = None
    with pytest.raises(SchemaViolation, match=r"Measurement\.operator: required field is missing"):
        sch.to_document(broken)


def test_integer_out_of_range_is_refused():
    broken = measurement(SCHEMA, 1)
    broken.facts.pixels_x = 2**40
    with pytest.raises(SchemaViolation, match="out of range"):
        sch.to_document(broken)


def test_field_paths_resolve_through_nested_lists():
    info = sch.field_info(SCHEMA.ParameterSet, "values.number")
    assert (info.es_type, info.nested_path) == ("double", "values")
    with pytest.raises(SchemaViolation, match="unknown field 'colour'"):
        sch.field_info(SCHEMA.Measurement, "sample.colour")


def test_units_come_from_the_idl_annotations():
    assert sch.field_unit(SCHEMA.Measurement, "settings.pixel_size_x_um") == "µm"
    assert sch.field_unit(SCHEMA.Measurement, "settings.laser.frequency_hz") == "Hz"
    assert sch.field_unit(SCHEMA.SpectrometerSettings, "mass_range.min_mz") == "m/z"
    assert sch.field_unit(SCHEMA.Measurement, "title") is None
    with pytest.raises(SchemaViolation, match="title"):
        sch.field_unit(SCHEMA.Measurement, "title.x")


# ----------------------------------------------------------------------------- string rules


@pytest.mark.parametrize(
    "value",
    ["../measurements", "..", "a/b", "/abs", "a..b", "trailing.", ".hidden", "%2e%2e", "a b",
     "\u2024\u2024", "\uff0e\uff0e", "caf\u00e9", "x" * 129, ""],
)  # fmt: skip
def test_identifiers_outside_the_grammar_are_refused_both_ways(value):
    project = SCHEMA.Project(id=value, title="t")
    with pytest.raises(sch.InvalidIdentifier) as raised:
        sch.to_document(project)
    assert raised.value.field == "Project.id"
    with pytest.raises(sch.InvalidText if "\x00" in value else sch.InvalidIdentifier):
        sch.from_document(SCHEMA.Project, {"id": value, "title": "t"})


@pytest.mark.parametrize("value", ["m-0000001", "Example_Continuous.imzML", "a.b-c_d", "x" * 128])
def test_identifiers_inside_the_grammar_are_kept(value):
    assert sch.to_document(SCHEMA.Project(id=value, title="t"))["id"] == value


def test_a_parameter_set_id_may_carry_a_version_but_its_name_may_not():
    assert sch.check_versioned_identifier("strict@v12") == "strict@v12"
    with pytest.raises(sch.InvalidIdentifier):
        sch.check_versioned_identifier("../x@v1")
    with pytest.raises(sch.InvalidIdentifier):
        sch.check_identifier("strict@v12")


@pytest.mark.parametrize(
    ("title", "named"),
    [
        ("lone \ud800 surrogate", "lone UTF-16 surrogate"),
        ("\udcff escaped byte", "lone UTF-16 surrogate"),
        ("nul \x00 inside", "NUL"),
        ("escape \x1b[2J", "control character"),
        ("c1 \x85 control", "control character"),
        ("non-character \uffff", "control character"),
    ],
)
def test_strings_that_would_poison_the_catalog_are_refused_naming_the_field(title, named):
    with pytest.raises(sch.InvalidText, match=named) as raised:
        sch.to_document(measurement(SCHEMA, 1, title=title))
    assert raised.value.field == "Measurement.title"
    document = sch.to_document(measurement(SCHEMA, 1))
    with pytest.raises(sch.InvalidText):
        sch.from_document(SCHEMA.Measurement, {**document, "title": title})


def test_tabs_and_newlines_are_ordinary_text():
    doc = sch.to_document(measurement(SCHEMA, 1, description="line one\n\tline two\r\n"))
    assert doc["description"] == "line one\n\tline two\r\n"


def test_strings_are_stored_in_nfc():
    decomposed = "Mu\u0308nster e\u0301tude"
    doc = sch.to_document(measurement(SCHEMA, 1, title=decomposed))
    assert doc["title"] == "M\u00fcnster \u00e9tude"
    read = sch.from_document(SCHEMA.Measurement, {**doc, "title": decomposed})
    assert read.title == "M\u00fcnster \u00e9tude"


@pytest.mark.parametrize(("low", "high"), [(900.0, -5.0), (500.0, 499.9), (-10.0, 100.0)])
def test_a_mass_range_must_be_positive_and_not_decreasing(low, high):
    settings = measurement(SCHEMA, 1).settings
    settings.mass_range = SCHEMA.MassRange(min_mz=low, max_mz=high)
    with pytest.raises(SchemaViolation) as raised:
        sch.to_document(measurement(SCHEMA, 1, settings=settings))
    assert raised.value.field.startswith("Measurement.settings.mass_range")
    with pytest.raises(SchemaViolation):
        sch.from_document(SCHEMA.MassRange, {"min_mz": low, "max_mz": high})


def test_a_mass_range_of_a_single_mz_value_is_valid():
    """A measurement of one m/z value (a file with one-point spectra) has min = max."""
    document = sch.to_document(SCHEMA.MassRange(min_mz=500.0, max_mz=500.0))
    assert sch.from_document(SCHEMA.MassRange, document).max_mz == 500.0
