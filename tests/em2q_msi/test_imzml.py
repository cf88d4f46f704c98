"""The reader against pyimzml's reading (an independent implementation) and its own contracts."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pyimzml.ImzMLParser import ImzMLParser

from em2q_msi.errors import ImzMLMissingFile, ImzMLNotImzML, ImzMLOffsetOutOfRange, ImzMLUnsupported
from em2q_msi.imzml import INDEX_SUFFIX, ImzML
from em2q_msi.synthetic import write_imzml
from em2q_msi.validation import validate
from tests.em2q_msi.conftest import assert_same_spectra, copy_pair, set_sha1, upload_pair


def assert_equals_pyimzml(reader: ImzML, path: str) -> None:
    parser = ImzMLParser(path)
    assert reader.coordinates.tolist() == [list(c) for c in parser.coordinates]
    for i in range(reader.n_spectra):
        assert_same_spectra(reader.spectrum(i), parser.getspectrum(i))


@pytest.mark.parametrize("name", ["example_continuous", "example_processed"])
def test_example_spectra_equal_pyimzml_exactly(
    name: str, request: pytest.FixtureRequest, cache_dir
):
    path = request.getfixturevalue(name)
    reader = ImzML.open(path, cache_dir=cache_dir)
    assert reader.n_spectra == 9
    assert_equals_pyimzml(reader, path)


def test_example_continuous_and_processed_give_identical_spectra(
    example_continuous, example_processed, cache_dir
):
    cont = ImzML.open(example_continuous, cache_dir=cache_dir)
    proc = ImzML.open(example_processed, cache_dir=cache_dir)
    assert (cont.mode, proc.mode) == ("continuous", "processed")
    np.testing.assert_array_equal(cont.coordinates, proc.coordinates)
    for i in range(9):
        assert_same_spectra(cont.spectrum(i), proc.spectrum(i))
    block_c, block_p = cont.read_block(0, 9).to_ragged(), proc.read_block(0, 9)
    np.testing.assert_array_equal(block_c.offsets, block_p.offsets)
    np.testing.assert_array_equal(block_c.mz, block_p.mz)
    np.testing.assert_array_equal(block_c.intensity, block_p.intensity)


def test_continuous_block_is_2d_rows_of_spectra(example_continuous, cache_dir):
    reader = ImzML.open(example_continuous, cache_dir=cache_dir)
    block = reader.read_block(2, 7)
    assert block.is_continuous and block.intensity.shape == (5, 8399)
    assert block.first_index == 2 and block.coordinates.tolist() == reader.coordinates[2:7].tolist()
    np.testing.assert_array_equal(block.intensity[1], reader.spectrum(3)[1])


@pytest.mark.parametrize("mode", ["continuous", "processed"])
@pytest.mark.parametrize(
    ("mz_dtype", "intensity_dtype"),
    [(np.float64, np.float64), (np.int32, np.int64), (np.int64, np.int32), (np.float32, np.int64)],
)
def test_declared_dtypes_are_read_as_declared(make_dataset, mode, mz_dtype, intensity_dtype):
    name = f"dtype_{mode}_{mz_dtype.__name__}_{intensity_dtype.__name__}"
    path = make_dataset(
        name, mode=mode, n_x=3, n_y=2, n_values=120 if mode == "continuous" else 30,
        mz_dtype=mz_dtype, intensity_dtype=intensity_dtype,
    )  # fmt: skip
    reader = ImzML.open(path)
    assert reader.mz_dtype == np.dtype(mz_dtype) and reader.intensity_dtype == np.dtype(
        intensity_dtype
    )
    assert_equals_pyimzml(reader, path)


@pytest.mark.parametrize("mode", ["continuous", "processed"])
def test_three_dimensional_coordinates_are_kept(make_dataset, mode):
    path = make_dataset(f"3d_{mode}", mode=mode, n_x=3, n_y=2, n_z=3, n_values=50)
    reader = ImzML.open(path)
    assert reader.coordinates.shape == (18, 3)
    assert sorted(set(reader.coordinates[:, 2].tolist())) == [1, 2, 3]
    assert_equals_pyimzml(reader, path)


def test_iter_blocks_covers_every_spectrum_once_in_order(small_processed):
    reader = ImzML.open(small_processed)
    blocks = list(reader.iter_blocks(rows_per_block=5))
    assert [b.first_index for b in blocks] == [0, 5, 10]
    assert sum(len(b) for b in blocks) == reader.n_spectra
    whole = reader.read_block(0, reader.n_spectra)
    np.testing.assert_array_equal(np.concatenate([b.mz for b in blocks]), whole.mz)


def test_default_blocks_are_bounded_by_bytes(small_continuous):
    reader = ImzML.open(small_continuous)
    rows = reader.rows_for_bytes(2 * 300 * 4)
    assert rows == 2
    assert all(len(b) <= 2 for b in reader.iter_blocks(block_bytes=2 * 300 * 4))


def test_index_arrays_match_pyimzml_offsets(small_processed):
    reader = ImzML.open(small_processed)
    parser = ImzMLParser(small_processed)
    np.testing.assert_array_equal(reader.index.mz_offsets, parser.mzOffsets)
    np.testing.assert_array_equal(reader.index.intensity_offsets, parser.intensityOffsets)
    np.testing.assert_array_equal(reader.index.intensity_lengths, parser.intensityLengths)


def test_value_before_accession_is_parsed_by_the_general_scanner(small_processed, broken_copy):
    def swap(xml: bytes) -> bytes:
        return re.sub(
            rb'<cvParam (accession="[^"]*") (cvRef="IMS") (name="[^"]*") (value="[^"]*")/>',
            rb"<cvParam \4 \2 \1 \3/>",
            xml,
        )

    path = broken_copy(small_processed, edit_xml=swap)
    assert b'value="1" cvRef="IMS" accession="IMS:1000050"' in Path(path).read_bytes()
    assert_equals_pyimzml(ImzML.open(path, use_cache=False), small_processed)


def test_second_open_reads_the_cached_index_instead_of_scanning(
    make_dataset, tmp_path, monkeypatch
):
    """The second open takes the index from the cache: the XML scan does not run again (how
    much faster that is, ``python -m benchmarks.bench_reader`` measures: "cached open")."""
    import em2q_msi.imzml as imzml_module

    path = copy_pair(
        make_dataset("cache_big", mode="processed", n_x=6, n_y=5, n_values=5), tmp_path
    )
    scans: list[str] = []
    scan_file = imzml_module._scan_file

    def counted_scan(fs, scanned_path, *args, **kwargs):
        scans.append(scanned_path)
        return scan_file(fs, scanned_path, *args, **kwargs)

    monkeypatch.setattr(imzml_module, "_scan_file", counted_scan)
    first = ImzML.open(path)
    assert first.index_source == "scan" and os.path.exists(path + INDEX_SUFFIX)
    assert len(scans) == 1
    second = ImzML.open(path)
    assert second.index_source == path + INDEX_SUFFIX
    assert len(scans) == 1  # no second scan
    for name in second.index.FIELDS:
        np.testing.assert_array_equal(getattr(first.index, name), getattr(second.index, name))
    assert ImzML.open(path, use_cache=False).index_source == "scan" and len(scans) == 2


def test_stale_cache_is_detected_and_rebuilt(make_dataset, tmp_path):
    a = make_dataset("stale_a", mode="processed", n_x=3, n_y=3, n_values=20, seed=1)
    b = make_dataset("stale_b", mode="processed", n_x=4, n_y=2, n_values=20, seed=2)
    path = copy_pair(a, tmp_path / "data")
    assert ImzML.open(path).n_spectra == 9
    # Replace the pair in place by a different dataset under the same name.
    (tmp_path / "data" / Path(path).name).write_bytes(Path(b).read_bytes())
    (tmp_path / "data" / Path(path).with_suffix(".ibd").name).write_bytes(
        Path(b).with_suffix(".ibd").read_bytes()
    )
    reader = ImzML.open(path)
    assert reader.index_source == "scan" and reader.n_spectra == 8
    assert_equals_pyimzml(reader, path)
    assert ImzML.open(path).index_source == path + INDEX_SUFFIX


def test_read_only_data_caches_into_the_callers_folder(example_continuous, cache_dir):
    first = ImzML.open(example_continuous, cache_dir=cache_dir)
    second = ImzML.open(example_continuous, cache_dir=cache_dir)
    assert first.index_source == "scan" and second.index_source.startswith(cache_dir)
    assert not os.path.exists(example_continuous + INDEX_SUFFIX)


def test_s3_reading_gives_the_same_arrays(small_continuous, small_processed, s3_bucket):
    bucket, options = s3_bucket
    for local in (small_continuous, small_processed):
        url = "s3://" + upload_pair(local, bucket, options)
        remote = ImzML.open(url, storage_options=options)
        here = ImzML.open(local)
        assert remote.n_spectra == here.n_spectra
        a, b = remote.read_block(0, remote.n_spectra), here.read_block(0, here.n_spectra)
        np.testing.assert_array_equal(a.mz, b.mz)
        np.testing.assert_array_equal(a.intensity, b.intensity)
        np.testing.assert_array_equal(a.coordinates, b.coordinates)
        assert remote.facts() == {**here.facts(), "ibd_size_bytes": remote.ibd_size}
        # The index was cached beside the data in the bucket: the second open reads it.
        assert ImzML.open(url, storage_options=options).index_source.endswith(INDEX_SUFFIX)


def test_missing_ibd_is_named(small_continuous, tmp_path):
    lone = tmp_path / "lone.imzML"
    lone.write_bytes(Path(small_continuous).read_bytes())
    with pytest.raises(ImzMLMissingFile, match=r"lone\.ibd"):
        ImzML.open(str(lone))


def test_numpress_compressed_arrays_are_refused_with_the_compression_named(tmp_path):
    from pyimzml.ImzMLWriter import ImzMLWriter

    with ImzMLWriter(str(tmp_path / "z"), mode="processed") as w:
        w.addSpectrum(np.arange(5.0), np.arange(5.0), (1, 1))
    xml = (tmp_path / "z.imzML").read_bytes()
    xml = xml.replace(b'"MS:1000576" name="no compression"', b'"MS:1002313" name="x"', 2)
    (tmp_path / "z.imzML").write_bytes(xml)
    with pytest.raises(
        ImzMLUnsupported,
        match=r"m/z arrays of every spectrum .*MS-Numpress positive integer compression "
        r"\(MS:1002313\)",
    ):
        ImzML.open(str(tmp_path / "z.imzML"))


def test_compression_declared_inside_one_spectrum_is_refused_naming_it(tmp_path):
    from pyimzml.ImzMLWriter import ImzMLWriter

    with ImzMLWriter(str(tmp_path / "z"), mode="processed") as w:
        for x in (1, 2, 3):
            w.addSpectrum(np.arange(5.0), np.arange(5.0), (x, 1))
    xml = (tmp_path / "z.imzML").read_bytes()
    at = [m.start() for m in re.finditer(rb"<binaryDataArray ", xml)][5]  # spectrum 2
    inline = (
        b'<cvParam cvRef="MS" accession="MS:1002312" '
        b'name="MS-Numpress linear prediction compression" value=""/>'
    )
    end = xml.index(b"<binary/>", at)
    (tmp_path / "z.imzML").write_bytes(xml[:end] + inline + xml[end:])
    with pytest.raises(ImzMLUnsupported, match=r"^spectrum 2 declares MS-Numpress linear"):
        ImzML.open(str(tmp_path / "z.imzML"), use_cache=False)


def test_plain_mzml_is_not_imzml(tmp_path):
    (tmp_path / "a.imzML").write_text(
        '<?xml version="1.0"?><mzML xmlns="http://psi.hupo.org/ms/mzml"><fileDescription>'
        '<fileContent/></fileDescription><run><spectrumList count="0"></spectrumList></run></mzML>'
    )
    (tmp_path / "a.ibd").write_bytes(b"\0" * 16)
    with pytest.raises(ImzMLNotImzML, match="neither continuous"):
        ImzML.open(str(tmp_path / "a.imzML"))


def test_reading_past_the_end_of_the_ibd_names_spectrum_and_offset(small_processed, broken_copy):
    path = broken_copy(small_processed, edit_ibd=lambda b: b[: len(b) - 10])
    reader = ImzML.open(path, use_cache=False)
    last = reader.n_spectra - 1
    with pytest.raises(
        ImzMLOffsetOutOfRange, match=rf"spectrum {last}: the intensity array at offset"
    ):
        reader.read_block(0, reader.n_spectra)


def test_facts_of_the_example_name_grid_pixel_size_and_instrument(example_processed, cache_dir):
    facts = ImzML.open(example_processed, cache_dir=cache_dir).facts()
    assert facts["mode"] == "processed" and facts["n_spectra"] == 9
    assert facts["pixel_grid"]["max_count_x"] == 3 and facts["pixel_grid"]["max_count_y"] == 3
    assert facts["pixel_size_um"] == {"x": 100.0, "y": 100.0}
    assert facts["mz_min"] == pytest.approx(100.083335876) and facts["mz_max"] == pytest.approx(
        799.916687011
    )
    assert facts["uuid"] == "9d501bdc53444916b7e97e795b02c856"
    assert facts["checksum"] == {
        "type": "sha1",
        "value": "7e8fdb93053915d3edb51b70aa0619ac209964df",
    }
    assert facts["instrument"]["model"] == "LTQ FT Ultra"
    assert facts["polarity"] == "negative" and facts["spectrum_type"] == "profile"
    assert facts["mz_dtype"] == "float32" and facts["intensity_dtype"] == "float32"


def test_facts_read_polarity_and_uuid_of_a_pyimzml_file(tmp_path):
    path = write_imzml(tmp_path / "pos", mode="processed", n_values=10, polarity="positive")
    facts = ImzML.open(path).facts()
    assert facts["polarity"] == "positive" and facts["spectrum_type"] == "centroid"
    assert re.fullmatch(r"[0-9a-f]{32}", facts["uuid"])
    assert facts["pixel_size_um"] == {"x": None, "y": None}


def relayout(src: str, folder: Path, pad_after: Callable[[int], int]) -> str:
    """Copy a pair with ``pad_after(k)`` zero bytes inserted after the k-th array (in .ibd
    order) and every external offset in the XML moved to match: the same spectra, another
    layout (as other writers produce)."""
    parser = ImzMLParser(src)
    ibd = Path(src).with_suffix(".ibd").read_bytes()
    arrays = sorted(
        {
            (o, n * parser.sizeDict[p])
            for offs, lens, p in (
                (parser.mzOffsets, parser.mzLengths, parser.mzPrecision),
                (parser.intensityOffsets, parser.intensityLengths, parser.intensityPrecision),
            )
            for o, n in zip(offs, lens, strict=True)
        }
    )
    moved, out, pos = {}, bytearray(ibd[:16]), 16
    for k, (offset, nbytes) in enumerate(arrays):
        moved[offset] = pos
        out += ibd[offset : offset + nbytes] + b"\0" * pad_after(k)
        pos = len(out)
    xml = re.sub(
        rb'(accession="IMS:1000102"[^>]*?value=")(\d+)(")',
        lambda m: m[1] + str(moved[int(m[2])]).encode() + m[3],
        Path(src).read_bytes(),
    )
    xml = set_sha1(xml, bytes(out))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / Path(src).name).write_bytes(xml)
    (folder / Path(src).with_suffix(".ibd").name).write_bytes(bytes(out))
    return str(folder / Path(src).name)


@pytest.mark.parametrize(
    ("name", "pad"),
    [
        ("small_continuous", lambda k: 8),  # uniform stride wider than a row
        ("small_continuous", lambda k: 4096 if k == 5 else 0),  # one irregular gap
        ("small_processed", lambda k: (3 << 20) if k == 9 else 0),  # sparse: per-array reads
    ],
    ids=["continuous-strided", "continuous-gap", "processed-sparse"],
)
def test_other_layouts_of_the_same_spectra_read_the_same(name, pad, request, tmp_path):
    src = request.getfixturevalue(name)
    path = relayout(src, tmp_path / "relaid", pad)
    assert validate(path).ok
    reader = ImzML.open(path)
    assert_equals_pyimzml(reader, path)
    whole = reader.read_block(0, reader.n_spectra)
    expected = ImzML.open(src).read_block(0, reader.n_spectra)
    np.testing.assert_array_equal(whole.intensity, expected.intensity)
    np.testing.assert_array_equal(whole.mz, expected.mz)


def test_streamed_reading_releases_pages_and_reads_the_same(small_continuous, small_processed):
    for path in (small_continuous, small_processed):
        kept = ImzML.open(path)
        streamed = ImzML.open(path)
        streamed.resident_bytes = 0  # as for a file larger than the resident limit
        for a, b in zip(kept.iter_blocks(rows_per_block=5), streamed.iter_blocks(5), strict=True):
            np.testing.assert_array_equal(a.intensity, b.intensity)
            np.testing.assert_array_equal(a.mz, b.mz)
        streamed.close()
        assert streamed.spectrum(3)[1].tolist() == kept.spectrum(3)[1].tolist()


def test_remote_index_scan_streams_in_windows(make_dataset, monkeypatch):
    """Remote XML is scanned window by window (never whole in memory); tiny windows split the
    spectrum list in many places and must give the same index as the local scan."""
    import fsspec

    import em2q_msi.imzml as imzml_module

    local = make_dataset("windows", mode="processed", n_x=9, n_y=7, n_values=5)
    fs = fsspec.filesystem("memory")
    fs.put_file(local, "/windows/w.imzML")
    fs.put_file(local[:-6] + ".ibd", "/windows/w.ibd")
    monkeypatch.setattr(imzml_module, "_SCAN_WINDOW", 3000)
    remote = ImzML.open("memory:///windows/w.imzML", use_cache=False)
    here = ImzML.open(local, use_cache=False)
    for name in here.index.FIELDS:
        np.testing.assert_array_equal(getattr(remote.index, name), getattr(here.index, name))
    fs.rm("/windows", recursive=True)


def test_reader_pickles_for_process_pools(small_processed):
    import pickle

    reader = ImzML.open(small_processed)
    before = reader.spectrum(4)
    clone = pickle.loads(pickle.dumps(reader))
    assert_same_spectra(clone.spectrum(4), before)


def _mapped_kib(path: str) -> int:
    """Resident KiB of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps", encoding="utf-8") as smaps:
        for line in smaps:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                inside = line.rstrip().endswith(path)
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1])
    return total


def test_a_processed_file_read_block_by_block_holds_one_block_not_the_whole_ibd(make_dataset):
    import tracemalloc

    path = make_dataset("ranged_processed", mode="processed", n_x=30, n_y=30, n_values=1000)
    reader = ImzML.open(path)
    reader.resident_bytes = 0  # streamed, as every file above the resident limit
    ibd_bytes = reader.ibd_size
    block_bytes = ibd_bytes // 20
    most_mapped, seen = 0, 0
    tracemalloc.start()
    try:
        for block in reader.iter_blocks(block_bytes=block_bytes):
            seen += len(block)
            most_mapped = max(most_mapped, _mapped_kib(reader.ibd_path) * 1024)
        _, most_allocated = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == reader.n_spectra
    # arrays of about one block (its m/z and intensities, the next one's while it is made)
    assert most_allocated < 4 * block_bytes < ibd_bytes / 4
    # and of the .ibd's pages only those of the block being read stay mapped
    assert most_mapped <= 2 * block_bytes + (1 << 16)
