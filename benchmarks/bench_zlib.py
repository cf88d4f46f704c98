"""What zlib compression costs a ranged read: one block of spectra read from a zlib-compressed
pair against the same spectra uncompressed (both written by pyimzml's ``ImzMLWriter``), best of
``--rounds``, alternating. Prints figures and the ratio; asserts only that both give the same
spectra.

Run: ``.venv/bin/python -m benchmarks.bench_zlib [--spectra 400 --peaks 2000 --block 200]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def write(folder: Path, name: str, spectra: list, compressed: bool, mode: str) -> str:
    from pyimzml.compression import NoCompression, ZlibCompression
    from pyimzml.ImzMLWriter import ImzMLWriter

    kind = ZlibCompression if compressed else NoCompression
    with ImzMLWriter(
        str(folder / name),
        mode=mode,
        mz_compression=kind(),
        intensity_compression=kind(),
    ) as writer:
        for i, (mz, intensity) in enumerate(spectra):
            writer.addSpectrum(mz, intensity.astype(np.float32), (i % 100 + 1, i // 100 + 1))
    return str(folder / f"{name}.imzML")


def main() -> None:
    from em2q_msi.imzml import ImzML
    from em2q_msi.synthetic import continuous_spectra, processed_spectra

    parser = argparse.ArgumentParser()
    parser.add_argument("--spectra", type=int, default=400)
    parser.add_argument("--peaks", type=int, default=2000)
    parser.add_argument("--block", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for label, spectra in (
            ("processed", list(processed_spectra(args.spectra, args.peaks, seed=3))),
            ("continuous", list(continuous_spectra(args.spectra, args.peaks, seed=3))),
        ):
            paths = {c: write(folder, f"{label}-{c}", spectra, c, label) for c in (False, True)}
            readers = {c: ImzML.open(p, use_cache=False) for c, p in paths.items()}
            start = args.spectra // 4
            best = {False: float("inf"), True: float("inf")}
            for _ in range(args.rounds):
                for c, reader in readers.items():
                    began = time.perf_counter()
                    reader.read_block(start, start + args.block)
                    best[c] = min(best[c], time.perf_counter() - began)
            a = readers[False].read_block(start, start + args.block)
            b = readers[True].read_block(start, start + args.block)
            assert np.array_equal(a.intensity, b.intensity) and np.array_equal(a.mz, b.mz)
            sizes = {c: os.path.getsize(Path(p).with_suffix(".ibd")) for c, p in paths.items()}
            print(
                f"{label}: {args.block}-spectrum block of ~{args.peaks} values: uncompressed "
                f"{best[False] * 1e3:.2f} ms, zlib {best[True] * 1e3:.2f} ms "
                f"({best[True] / best[False]:.1f}x); .ibd {sizes[False] / 1e6:.1f} MB vs "
                f"{sizes[True] / 1e6:.1f} MB ({sizes[True] / sizes[False]:.2f})"
            )


if __name__ == "__main__":
    main()
