"""Every validation problem, each made by editing a generated file so it has only that problem."""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from pyimzml.ImzMLParser import ImzMLParser

from em2q_msi.errors import ImzMLValidationError
from em2q_msi.validation import validate
from tests.em2q_msi.conftest import replace_nth

SHA1 = rb'(accession="IMS:1000091"[^>]*?value=")[^"]*(")'


@pytest.mark.parametrize("name", ["example_continuous", "example_processed"])
def test_official_examples_are_valid(name, request, cache_dir):
    report = validate(request.getfixturevalue(name), cache_dir=cache_dir)
    assert report.ok, report.problems
    assert report.to_dict() == {"ok": True, "problems": []}


@pytest.mark.parametrize("name", ["small_continuous", "small_processed"])
def test_generated_files_are_valid(name, request):
    report = validate(request.getfixturevalue(name))
    assert report.ok, report.problems


def test_xml_not_well_formed_is_reported_with_line(small_processed, broken_copy):
    path = broken_copy(
        small_processed, edit_xml=lambda x: x.replace(b"</spectrumList>", b"</spectrumLis>")
    )
    report = validate(path)
    assert report.codes == ["xml_not_well_formed"]
    assert re.search(r"mismatched tag at line \d+, column \d+", report.problems[0].message)


def test_document_that_is_not_imzml_is_rejected(small_processed, broken_copy):
    path = broken_copy(
        small_processed,
        edit_xml=lambda x: re.sub(rb'<cvParam cvRef="IMS" accession="IMS:1000031"[^>]*/>', b"", x),
    )
    report = validate(path)
    assert report.codes == ["not_imzml"]
    assert "IMS:1000030" in report.problems[0].message


def test_html_is_not_imzml(tmp_path):
    (tmp_path / "a.imzML").write_text("<html><body>hello</body></html>", encoding="utf-8")
    (tmp_path / "a.ibd").write_bytes(b"\0" * 16)
    assert validate(str(tmp_path / "a.imzML")).codes == ["not_imzml"]


def test_missing_ibd_is_reported(small_processed, tmp_path):
    (tmp_path / "x.imzML").write_bytes(Path(small_processed).read_bytes())
    report = validate(str(tmp_path / "x.imzML"))
    assert report.codes == ["file_missing"] and "x.ibd" in report.problems[0].message


def test_ibd_uuid_mismatch_names_both_uuids(small_processed, broken_copy):
    path = broken_copy(small_processed, edit_ibd=lambda b: bytes([b[0] ^ 0xFF]) + b[1:])
    report = validate(path)
    assert report.codes == ["uuid_mismatch"]
    ibd = Path(path[:-6] + ".ibd").read_bytes()[:16].hex()
    assert f".ibd UUID is {ibd}, the imzML declares " in report.problems[0].message


def test_sha1_mismatch_shows_both_digests(small_processed, broken_copy):
    wrong = hashlib.sha1(b"something else").hexdigest()
    path = broken_copy(
        small_processed,
        edit_xml=lambda x: re.sub(SHA1, rb"\g<1>" + wrong.encode() + rb"\2", x),
        fix_checksum=False,
    )
    actual = hashlib.sha1(Path(path[:-6] + ".ibd").read_bytes()).hexdigest()
    report = validate(path)
    assert report.codes == ["checksum_mismatch"]
    assert report.problems[0].message == f".ibd SHA-1 is {actual}, the imzML declares {wrong}"


def test_md5_checksum_is_checked_too(small_processed, broken_copy):
    def to_md5(digest: str):
        return lambda x: re.sub(
            rb'accession="IMS:1000091" name="ibd SHA-1" value="[^"]*"',
            b'accession="IMS:1000090" name="ibd MD5" value="' + digest.encode() + b'"',
            x,
        )

    ibd = Path(small_processed[:-6] + ".ibd").read_bytes()
    good = broken_copy(
        small_processed, edit_xml=to_md5(hashlib.md5(ibd).hexdigest()), fix_checksum=False
    )
    assert validate(good).ok
    bad = broken_copy(small_processed, edit_xml=to_md5("0" * 32), fix_checksum=False)
    report = validate(bad)
    assert report.codes == ["checksum_mismatch"] and ".ibd MD5 is " in report.problems[0].message


def test_offset_outside_ibd_is_rejected_with_offset_named(small_processed, broken_copy):
    # The 10th external offset is the intensity array of spectrum 4 (m/z, intensity per spectrum).
    path = broken_copy(
        small_processed,
        edit_xml=lambda x: replace_nth(
            x, rb'(accession="IMS:1000102"[^>]*?value=")\d+(")', rb"\g<1>999999999\2", 9
        ),
    )
    report = validate(path)
    assert report.codes == ["offset_out_of_range"]
    assert (
        "spectrum 4 (x=1, y=2, z=1, intensity array at offset 999999999"
        in report.problems[0].message
    )


def test_offset_inside_the_uuid_header_is_rejected(small_processed, broken_copy):
    path = broken_copy(
        small_processed,
        edit_xml=lambda x: replace_nth(
            x, rb'(accession="IMS:1000102"[^>]*?value=")\d+(")', rb"\g<1>4\2", 0
        ),
    )
    report = validate(path)
    assert "offset_out_of_range" in report.codes
    assert "spectrum 0 (x=1, y=1, z=1, m/z array at offset 4" in report.problems[0].message


def test_truncated_ibd_is_rejected_with_offset_named(small_processed, broken_copy):
    path = broken_copy(small_processed, edit_ibd=lambda b: b[:-700])
    size = len(Path(path[:-6] + ".ibd").read_bytes())
    report = validate(path)
    assert report.codes == ["ibd_truncated"]
    message = report.problems[0].message
    assert f"it is {size} bytes long but the imzML declares data up to byte {size + 700}" in message
    assert re.search(r"array of spectrum 1[01] at offset \d+", message)


def test_truncated_continuous_ibd_is_rejected(small_continuous, broken_copy):
    path = broken_copy(small_continuous, edit_ibd=lambda b: b[: len(b) - 3 * 1200 - 5])
    report = validate(path)
    assert report.codes == ["ibd_truncated"] and "4 spectra affected" in report.problems[0].message


def test_encoded_length_mismatch_is_reported(small_processed, broken_copy):
    path = broken_copy(
        small_processed,
        edit_xml=lambda x: replace_nth(
            x, rb'(accession="IMS:1000104"[^>]*?value=")\d+(")', rb"\g<1>3\2", 2
        ),
    )
    report = validate(path)
    assert report.codes == ["encoded_length_mismatch"]
    assert "spectrum 1 (x=2, y=1, z=1, m/z encoded length 3 bytes" in report.problems[0].message


def test_coordinates_outside_declared_grid_are_named(small_processed, broken_copy):
    path = broken_copy(
        small_processed,
        edit_xml=lambda x: re.sub(
            rb'(accession="IMS:1000042"[^>]*?value=")\d+(")', rb"\g<1>3\2", x
        ),
    )
    report = validate(path)
    assert report.codes == ["coordinate_outside_grid"]
    message = report.problems[0].message
    assert message.startswith("3 spectra lie outside the declared pixel grid x 1..3, y 1..3")
    assert "spectrum 3 (x=4, y=1, z=1)" in message


def test_offset_coordinates_within_a_box_of_the_declared_size_are_valid(
    small_processed, broken_copy
):
    """Instrument exports with stage offsets declare the size of the acquired box as the
    max pixel count; such coordinates lie beyond the count but inside a box of that size."""

    def shift(x: bytes) -> bytes:
        return re.sub(
            rb'(accession="IMS:1000050"[^>]*?value=")(\d+)(")',
            lambda m: m.group(1) + str(int(m.group(2)) + 100).encode() + m.group(3),
            x,
        )

    report = validate(broken_copy(small_processed, edit_xml=shift))
    assert report.ok, report.codes


def test_duplicated_coordinates_name_both_spectra(small_processed, broken_copy):
    def dup(x: bytes) -> bytes:
        x = replace_nth(x, rb'(accession="IMS:1000050"[^>]*?value=")\d+(")', rb"\g<1>1\2", 5)
        return replace_nth(x, rb'(accession="IMS:1000051"[^>]*?value=")\d+(")', rb"\g<1>1\2", 5)

    report = validate(broken_copy(small_processed, edit_xml=dup))
    assert report.codes == ["duplicate_coordinate"]
    assert "spectrum 5 (x=1, y=1, z=1, same pixel as spectrum 0)" in report.problems[0].message


def test_zero_length_spectra_are_valid(small_processed, broken_copy):
    def empty(x: bytes) -> bytes:
        for acc in (b"IMS:1000103", b"IMS:1000104"):
            for k in (6, 7):  # both arrays of spectrum 3
                pattern = rb'(accession="' + acc + rb'"[^>]*?value=")\d+(")'
                x = replace_nth(x, pattern, rb"\g<1>0\2", k)
        return x

    report = validate(broken_copy(small_processed, edit_xml=empty))
    assert report.ok, report.problems


def _patch(ibd: bytes, offset: int, payload: bytes) -> bytes:
    return ibd[:offset] + payload + ibd[offset + len(payload) :]


def test_unsorted_mz_is_named(small_processed, broken_copy):
    parser = ImzMLParser(small_processed)
    off = parser.mzOffsets[2]  # float64 m/z: swap the first two values of spectrum 2
    mz = parser.getspectrum(2)[0]
    payload = struct.pack("<dd", mz[1], mz[0])
    report = validate(broken_copy(small_processed, edit_ibd=lambda b: _patch(b, off, payload)))
    assert report.codes == ["mz_not_sorted"]
    assert "spectrum 2 (x=3, y=1, z=1)" in report.problems[0].message


def test_unsorted_continuous_axis_is_reported(small_continuous, broken_copy):
    parser = ImzMLParser(small_continuous)
    off = parser.mzOffsets[0]
    mz = parser.getspectrum(0)[0]
    payload = struct.pack("<dd", mz[1], mz[0])
    report = validate(broken_copy(small_continuous, edit_ibd=lambda b: _patch(b, off, payload)))
    assert report.codes == ["mz_not_sorted"] and report.problems[0].message.startswith("12 spectra")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_intensities_are_named(small_processed, broken_copy, value):
    parser = ImzMLParser(small_processed)
    off = parser.intensityOffsets[7] + 4 * 3  # float32 intensities
    report = validate(
        broken_copy(small_processed, edit_ibd=lambda b: _patch(b, off, struct.pack("<f", value)))
    )
    assert report.codes == ["non_finite_values"]
    assert report.problems[0].message.endswith("spectrum 7 (x=4, y=2, z=1, intensity)")


def test_non_finite_continuous_intensity_is_named(small_continuous, broken_copy):
    parser = ImzMLParser(small_continuous)
    off = parser.intensityOffsets[10]
    nan = struct.pack("<f", float("nan"))
    report = validate(broken_copy(small_continuous, edit_ibd=lambda b: _patch(b, off, nan)))
    assert (
        report.codes == ["non_finite_values"]
        and "spectrum 10 (x=3, y=3" in report.problems[0].message
    )


def test_every_problem_of_a_file_is_reported(small_processed, broken_copy):
    parser = ImzMLParser(small_processed)
    nan_at = parser.intensityOffsets[1]

    def xml(x: bytes) -> bytes:
        x = replace_nth(x, rb'(accession="IMS:1000050"[^>]*?value=")\d+(")', rb"\g<1>1\2", 5)
        x = replace_nth(x, rb'(accession="IMS:1000051"[^>]*?value=")\d+(")', rb"\g<1>1\2", 5)
        return replace_nth(
            x, rb'(accession="IMS:1000102"[^>]*?value=")\d+(")', rb"\g<1>99999999\2", 9
        )

    def ibd(b: bytes) -> bytes:
        b = bytes([b[0] ^ 1]) + b[1:]
        return _patch(b, nan_at, struct.pack("<f", float("nan")))

    report = validate(broken_copy(small_processed, edit_xml=xml, edit_ibd=ibd, fix_checksum=False))
    assert sorted(report.codes) == sorted(
        [
            "uuid_mismatch",
            "checksum_mismatch",
            "offset_out_of_range",
            "duplicate_coordinate",
            "non_finite_values",
        ]
    )
    assert report.to_dict()["ok"] is False
    with pytest.raises(ImzMLValidationError, match=r"\[uuid_mismatch\]") as info:
        report.raise_for_problems()
    assert len(info.value.problems) == 5


def test_validation_over_s3_matches_local(small_processed, broken_copy, s3_bucket):
    from tests.em2q_msi.conftest import upload_pair

    bucket, options = s3_bucket
    path = broken_copy(small_processed, edit_ibd=lambda b: b[:-700])
    url = "s3://" + upload_pair(path, bucket, options)
    remote = validate(url, storage_options=options)
    assert remote.codes == ["ibd_truncated"]
    assert remote.problems[0].message == validate(path).problems[0].message


def test_array_length_mismatch_is_named(small_processed, broken_copy):
    # External array length of the intensity array of spectrum 2 (6th IMS:1000103), with a
    # matching encoded length so only the lengths disagree.
    def edit(x: bytes) -> bytes:
        x = replace_nth(x, rb'(accession="IMS:1000103"[^>]*?value=")\d+(")', rb"\g<1>3\2", 5)
        return replace_nth(x, rb'(accession="IMS:1000104"[^>]*?value=")\d+(")', rb"\g<1>12\2", 5)

    report = validate(broken_copy(small_processed, edit_xml=edit))
    assert report.codes == ["array_length_mismatch"]
    assert "spectrum 2 (x=3, y=1, z=1, " in report.problems[0].message
    assert "m/z values, 3 intensities" in report.problems[0].message


def test_ibd_shorter_than_its_uuid_is_one_truncation_problem(small_processed, broken_copy):
    report = validate(broken_copy(small_processed, edit_ibd=lambda b: b[:10]))
    assert report.codes.count("ibd_truncated") == 1
    assert "shorter than its 16-byte UUID" in report.problems[0].message


def test_compressed_arrays_without_encoded_length_are_named(tmp_path, broken_copy):
    from pyimzml.compression import ZlibCompression
    from pyimzml.ImzMLWriter import ImzMLWriter

    with ImzMLWriter(
        str(tmp_path / "z"), mode="processed", intensity_compression=ZlibCompression()
    ) as w:
        for x in (1, 2, 3):
            w.addSpectrum(np.arange(1.0, 6.0), np.arange(5.0), (x, 1))

    def drop_encoded_length(x: bytes) -> bytes:  # the intensity array of spectrum 1
        return replace_nth(x, rb'<cvParam accession="IMS:1000104"[^>]*/>', b"", 3)

    report = validate(broken_copy(str(tmp_path / "z.imzML"), edit_xml=drop_encoded_length))
    assert report.codes == ["compressed_data_invalid"]
    assert report.problems[0].message == (
        "1 spectrum has a zlib-compressed intensity array without an external encoded length "
        "(IMS:1000104): spectrum 1 (x=2, y=1, z=1)"
    )
