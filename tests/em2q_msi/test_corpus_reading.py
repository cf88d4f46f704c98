"""Every corpus variant read by EM²Q's reader against pyimzML (``tests.corpus.reference``), and
validated as expected; arrays beyond 4 GiB; empty chunks through the processing steps."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from em2q_msi.chunks import iter_chunk, write_measurement_chunk
from em2q_msi.imzml import ImzML
from em2q_msi.parameters import ProcessingParameters
from em2q_msi.peaks import concatenate_peaks, preprocess_and_pick
from em2q_msi.qc import MeanSpectrumAccumulator, concatenate_metrics, spectrum_metrics
from em2q_msi.validation import validate
from tests.corpus import LONG_SPECTRUM_POINTS, build_corpus
from tests.corpus.reference import reference_spectra


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("corpus"))


def _same(ours: np.ndarray, theirs: np.ndarray) -> bool:
    return ours.dtype == theirs.dtype and np.array_equal(
        ours.astype(np.float64), theirs.astype(np.float64), equal_nan=True
    )


def _differences(path: Path) -> list[str]:
    coords, expected = reference_spectra(path)
    out = []
    with ImzML.open(str(path), use_cache=False) as reader:
        if not np.array_equal(reader.coordinates, coords):
            out.append("coordinates differ")
        block = reader.read_block(0, reader.n_spectra)
        small = [s for b in reader.iter_blocks(rows_per_block=4) for s in _spectra(b)]
        for i, (mz, intensity) in enumerate(expected):
            for how, (our_mz, our_int) in (
                ("read_block", block.spectrum(i)),
                ("iter_blocks", small[i]),
                ("spectrum", reader.spectrum(i)),
            ):
                if not (_same(our_mz, mz) and _same(our_int, intensity)):
                    out.append(f"spectrum {i} by {how}")
        values = np.concatenate([mz for mz, _ in expected]).astype(np.float64)
        if values.size and reader.mz_range() != (values.min(), values.max()):
            out.append(f"mz_range {reader.mz_range()} != {(values.min(), values.max())}")
    return out


def _spectra(block):
    return [block.spectrum(i) for i in range(len(block))]


def test_every_valid_corpus_file_reads_as_pyimzml_reads_it(corpus):
    differences = {
        f.name: diff for f in corpus if f.expect_valid and (diff := _differences(f.imzml))
    }
    assert differences == {}


def test_every_valid_corpus_file_passes_validation(corpus):
    problems = {f.name: validate(str(f.imzml)).problems for f in corpus if f.expect_valid}
    assert {name: p for name, p in problems.items() if p} == {}


def test_every_invalid_corpus_file_is_refused_with_its_named_problem(corpus):
    codes = {f.name: validate(str(f.imzml)).codes for f in corpus if not f.expect_valid}
    assert codes == {f.name: [f.problem_code] for f in corpus if not f.expect_valid}


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("unsorted-mz", "spectrum 2 (x=3, y=1, z=1)"),
        ("duplicate-coordinates", "spectrum 4 (x=2, y=1, z=1, same pixel as spectrum 1)"),
        ("mismatched-lengths", "spectrum 3 (x=1, y=2, z=1,"),
        ("nan-intensities", "spectrum 5 (x=3, y=2, z=1, intensity)"),
        ("zlib-corrupt", "spectrum 4 (x=2, y=2, z=1, the zlib-compressed intensity array"),
        ("numpress", "MS-Numpress linear prediction compression (MS:1002312)"),
    ],
)
def test_refusals_name_the_spectrum_and_its_pixel_or_the_feature(corpus, name, where):
    corpus_file = next(f for f in corpus if f.name == name)
    (problem,) = validate(str(corpus_file.imzml)).problems
    assert where in problem.message


def test_the_corpus_holds_a_spectrum_of_a_million_points(corpus):
    long = next(f for f in corpus if f.name == "long-spectrum")
    with ImzML.open(str(long.imzml), use_cache=False) as reader:
        assert int(reader.index.mz_lengths.max()) == LONG_SPECTRUM_POINTS


def test_fewer_spectra_than_chunks_give_empty_chunks_with_empty_results(corpus, tmp_path):
    """Six spectra in eight chunks: chunks 6 and 7 are valid empty partitions all the way
    through preprocessing, peak picking and per-spectrum metrics."""
    six = next(f for f in corpus if f.name == "six-spectra")
    params = ProcessingParameters()
    reader = ImzML.open(str(six.imzml), use_cache=False)
    peaks, metrics, accumulators = [], [], []
    for i in range(8):
        url = str(tmp_path / f"chunk{i}")
        accumulator = MeanSpectrumAccumulator()
        write_measurement_chunk(reader, 8, i, url, on_block=accumulator.add)
        blocks = list(iter_chunk(url, 2))
        peaks.append(concatenate_peaks([preprocess_and_pick(b, params)[1] for b in blocks]))
        metrics.append(concatenate_metrics([spectrum_metrics(b, params) for b in blocks]))
        accumulators.append(MeanSpectrumAccumulator.from_state(accumulator.state()))
    assert [len(p) for p in peaks] == [1, 1, 1, 1, 1, 1, 0, 0]
    assert [m["tic"].size for m in metrics] == [1, 1, 1, 1, 1, 1, 0, 0]
    assert peaks[7].offsets.tolist() == [0] and peaks[7].coordinates.shape == (0, 3)
    whole = concatenate_peaks(peaks)
    assert len(whole) == 6 and whole.mz.size == sum(p.mz.size for p in peaks[:6])
    merged = accumulators[0]
    for part in accumulators[1:]:
        merged = merged.merge(part)
    mz, mean = merged.result()
    np.testing.assert_array_equal(mz, reader.mz_axis())
    expected = reader.read_block(0, 6).intensity.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(mean, expected, rtol=1e-12)


def _beyond_4_gib(source: Path, folder: Path) -> Path:
    """A copy of ``source`` whose arrays start beyond byte 2**32 of a sparse .ibd (a hole
    after the UUID: no disk used). The SHA-1 is dropped: hashing 4 GiB of zeros proves
    nothing here."""
    shift = 2**32
    ibd = source.with_suffix(".ibd").read_bytes()
    target = folder / source.name
    with open(target.with_suffix(".ibd"), "wb") as f:
        f.write(ibd[:16])
        os.truncate(f.fileno(), shift + 16)
        f.seek(shift + 16)
        f.write(ibd[16:])
    xml = source.read_bytes()
    xml = re.sub(
        rb'(accession="IMS:1000102"[^>]*?value=")(\d+)',
        lambda m: m.group(1) + str(int(m.group(2)) + shift).encode(),
        xml,
    )
    xml = re.sub(rb'<cvParam[^>]*accession="IMS:1000091"[^>]*/>', b"", xml)
    target.write_bytes(xml)
    return target


@pytest.mark.parametrize("name", ["processed-mzf64-intf32", "continuous-zlib"])
def test_arrays_beyond_4_gib_are_read_and_validated(corpus, tmp_path, name):
    source = next(f for f in corpus if f.name == name)
    moved = _beyond_4_gib(source.imzml, tmp_path)
    assert os.path.getsize(moved.with_suffix(".ibd")) > 2**32
    with ImzML.open(str(moved), use_cache=False) as reader:
        assert int(reader.index.intensity_offsets.min()) > 2**32
    assert _differences(moved) == []
    assert validate(str(moved)).ok
