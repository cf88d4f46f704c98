"""Chunk ranges, and chunks written to local folders and S3 read back whole and in part."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import numpy as np
import pytest

from em2q_msi.chunks import (
    ChunkWriter,
    chunk_meta,
    chunk_range,
    chunk_ranges,
    iter_chunk,
    read_chunk,
    write_chunk,
    write_measurement_chunk,
)
from em2q_msi.errors import ChunkCorrupt, ChunkNotFound
from em2q_msi.imzml import ImzML
from em2q_msi.spectra import SpectraBlock


def assert_blocks_equal(a: SpectraBlock, b: SpectraBlock) -> None:
    assert a.is_continuous == b.is_continuous and a.first_index == b.first_index
    np.testing.assert_array_equal(a.coordinates, b.coordinates)
    np.testing.assert_array_equal(a.mz, b.mz)
    np.testing.assert_array_equal(a.intensity, b.intensity)
    assert a.mz.dtype == b.mz.dtype and a.intensity.dtype == b.intensity.dtype
    if not a.is_continuous:
        np.testing.assert_array_equal(a.offsets, b.offsets)


@pytest.mark.parametrize(("n", "k"), [(10, 3), (9, 9), (100, 7), (0, 2), (5, 1)])
def test_chunk_ranges_are_contiguous_balanced_and_cover_everything(n, k):
    ranges = chunk_ranges(n, k)
    assert len(ranges) == k and ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    sizes = [stop - start for start, stop in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_more_chunks_than_spectra_gives_empty_tail_chunks():
    assert chunk_ranges(3, 5) == [(0, 1), (1, 2), (2, 3), (3, 3), (3, 3)]


def test_chunk_index_outside_k_is_refused():
    assert chunk_range(10, 3, 2) == (7, 10)
    with pytest.raises(ValueError, match="chunk index 3 is outside 0..2"):
        chunk_range(10, 3, 3)
    with pytest.raises(ValueError, match=">= 1"):
        chunk_ranges(10, 0)


@pytest.mark.parametrize("name", ["small_continuous", "small_processed"])
def test_chunk_round_trip_local(name, request, tmp_path):
    reader = ImzML.open(request.getfixturevalue(name))
    block = reader.read_block(3, 9)
    meta = write_chunk(block, str(tmp_path / "chunk"), extra={"chunk": "1/2"})
    assert meta["n_spectra"] == 6 and meta["first_index"] == 3 and meta["extra"] == {"chunk": "1/2"}
    assert_blocks_equal(read_chunk(str(tmp_path / "chunk")), block)
    assert sorted(p.name for p in (tmp_path / "chunk").iterdir()) == sorted(
        [f"{n}.npy" for n in meta["files"]] + ["meta.json"]
    )


@pytest.mark.parametrize("name", ["small_continuous", "small_processed"])
def test_partial_read_returns_only_the_asked_spectra(name, request, tmp_path):
    reader = ImzML.open(request.getfixturevalue(name))
    write_chunk(reader.read_block(2, 12), str(tmp_path / "c"))
    part = read_chunk(str(tmp_path / "c"), 4, 7)
    assert_blocks_equal(part, reader.read_block(6, 9))


def test_chunk_files_are_plain_npy(small_processed, tmp_path):
    block = ImzML.open(small_processed).read_block(0, 5)
    write_chunk(block, str(tmp_path / "c"))
    np.testing.assert_array_equal(np.load(tmp_path / "c" / "intensity.npy"), block.intensity)
    np.testing.assert_array_equal(np.load(tmp_path / "c" / "offsets.npy"), block.offsets)


@pytest.mark.parametrize("name", ["small_continuous", "small_processed"])
def test_chunk_round_trip_on_s3_with_ranged_partial_reads(name, request, s3_bucket):
    bucket, options = s3_bucket
    reader = ImzML.open(request.getfixturevalue(name))
    block = reader.read_block(0, reader.n_spectra)
    url = f"{bucket}/chunks/{name}/0"
    write_chunk(block, url, storage_options=options)
    assert_blocks_equal(read_chunk(url, storage_options=options), block)
    assert_blocks_equal(read_chunk(url, 5, 8, storage_options=options), reader.read_block(5, 8))
    fs = fsspec.filesystem("s3", **options)
    assert sorted(Path(p).name for p in fs.ls(url)) == sorted(
        ["coordinates.npy", "intensity.npy", "meta.json", "mz.npy"]
        + ([] if block.is_continuous else ["offsets.npy"])
    )


def test_streamed_writer_equals_one_block(small_processed, tmp_path):
    reader = ImzML.open(small_processed)
    whole = reader.read_block(0, reader.n_spectra)
    writer = ChunkWriter(
        str(tmp_path / "c"),
        continuous=False,
        n_spectra=reader.n_spectra,
        n_values=int(whole.offsets[-1]),
        mz_dtype=reader.mz_dtype,
        intensity_dtype=reader.intensity_dtype,
    )
    for block in reader.iter_blocks(rows_per_block=5):
        writer.append(block)
    writer.commit()
    assert_blocks_equal(read_chunk(str(tmp_path / "c")), whole)
    blocks = list(iter_chunk(str(tmp_path / "c"), 4))
    assert [b.first_index for b in blocks] == [0, 4, 8]


def test_blocks_read_back_by_bytes_hold_about_that_many_bytes(small_processed, tmp_path):
    """Memory of a chunk step is bounded by bytes, whatever the peaks per spectrum: blocks of
    ``block_bytes`` cover the chunk in order, each at most that much stored data (or one
    spectrum, when a single spectrum is bigger)."""
    reader = ImzML.open(small_processed)
    whole = reader.read_block(0, reader.n_spectra)
    write_measurement_chunk(reader, 1, 0, str(tmp_path / "c"))
    per_value = whole.mz.itemsize + whole.intensity.itemsize
    budget = 3 * int(whole.offsets[-1]) * per_value // reader.n_spectra  # about 3 spectra
    blocks = list(iter_chunk(str(tmp_path / "c"), block_bytes=budget))
    assert len(blocks) > 1
    assert [b.first_index for b in blocks] == list(np.cumsum([0, *map(len, blocks[:-1])]))
    assert sum(map(len, blocks)) == reader.n_spectra
    for block in blocks:
        assert len(block) == 1 or (block.mz.nbytes + block.intensity.nbytes) <= 2 * budget
    assert np.array_equal(np.concatenate([b.intensity for b in blocks]), whole.intensity)


def test_unfinished_write_is_invisible(small_processed, tmp_path):
    reader = ImzML.open(small_processed)
    writer = ChunkWriter(
        str(tmp_path / "c"),
        continuous=False,
        n_spectra=reader.n_spectra,
        n_values=int(reader.index.mz_lengths.sum()),
        mz_dtype=reader.mz_dtype,
        intensity_dtype=reader.intensity_dtype,
    )
    writer.append(reader.read_block(0, 4))  # the step dies here
    with pytest.raises(ChunkNotFound, match="no committed chunk"):
        read_chunk(str(tmp_path / "c"))
    assert not any(p.name.endswith(".npy") for p in (tmp_path / "c").iterdir())


def test_rewrite_uncommits_the_old_chunk_first(small_processed, tmp_path):
    reader = ImzML.open(small_processed)
    url = str(tmp_path / "c")
    write_chunk(reader.read_block(0, 3), url)
    ChunkWriter(
        url,
        continuous=False,
        n_spectra=2,
        n_values=10,
        mz_dtype=reader.mz_dtype,
        intensity_dtype=reader.intensity_dtype,
    )
    with pytest.raises(ChunkNotFound):
        chunk_meta(url)


def test_incomplete_commit_is_refused_and_cleaned(small_processed, tmp_path):
    reader = ImzML.open(small_processed)
    writer = ChunkWriter(
        str(tmp_path / "c"),
        continuous=False,
        n_spectra=5,
        n_values=10**6,
        mz_dtype=reader.mz_dtype,
        intensity_dtype=reader.intensity_dtype,
    )
    writer.append(reader.read_block(0, 5))
    with pytest.raises(ValueError, match="chunk incomplete"):
        writer.commit()
    assert list((tmp_path / "c").iterdir()) == []


def test_meta_that_disagrees_with_a_file_is_corrupt(small_processed, tmp_path):
    write_chunk(ImzML.open(small_processed).read_block(0, 5), str(tmp_path / "c"))
    meta_path = tmp_path / "c" / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["files"]["intensity"]["shape"] = [3]
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(ChunkCorrupt, match="does not match meta.json"):
        read_chunk(str(tmp_path / "c"))


def test_16_bit_float_intensities_are_stored_as_exact_32_bit_floats(tmp_path):
    intensity = np.array([[0.5, 1.0, 65504.0], [3.25, 0.0, 1e-3]], dtype=np.float16)
    block = SpectraBlock(np.array([100.0, 200.0, 300.0]), intensity, None, np.ones((2, 3), int))
    write_chunk(block, str(tmp_path / "c"))
    back = read_chunk(str(tmp_path / "c"))
    assert back.intensity.dtype == np.float32
    np.testing.assert_array_equal(back.intensity, intensity.astype(np.float32))


@pytest.mark.parametrize("name", ["small_continuous", "small_processed"])
def test_an_empty_chunk_reads_as_one_block_of_zero_spectra(name, request, tmp_path):
    reader = ImzML.open(request.getfixturevalue(name), use_cache=False)
    from em2q_msi.chunks import write_measurement_chunk

    seen = []
    start, stop, _ = write_measurement_chunk(
        reader,
        reader.n_spectra + 2,
        reader.n_spectra + 1,
        str(tmp_path / "c"),
        on_block=seen.append,
    )
    assert start == stop == reader.n_spectra
    (block,) = iter_chunk(str(tmp_path / "c"), 4)
    assert len(block) == 0 and block.coordinates.shape == (0, 3)
    assert [len(b) for b in seen] == [0]
    if reader.mode == "continuous":
        np.testing.assert_array_equal(block.mz, reader.mz_axis())
        assert block.intensity.shape == (0, reader.mz_axis().size)
    else:
        assert block.offsets.tolist() == [0]


def test_a_chunk_is_read_back_in_blocks_of_bytes_not_of_a_fixed_spectra_count(tmp_path):
    from em2q_msi.synthetic import synthetic_processed

    block = synthetic_processed(n_spectra=40, points_per_spectrum=500)
    write_chunk(block, str(tmp_path / "c"))
    per_spectrum = 500 * (8 + 4)  # float64 m/z and float32 intensity per value
    blocks = list(iter_chunk(str(tmp_path / "c"), block_bytes=10 * per_spectrum))
    assert [len(b) for b in blocks] == [10, 10, 10, 10]
    np.testing.assert_array_equal(np.concatenate([b.mz for b in blocks]), block.mz)
