"""A corpus of real-world imzML variants for tests: ``build_corpus(folder) -> list[CorpusFile]``.

Valid variants (every data type and mode, zlib, stage offsets, 3-D, tiny and huge spectra) and
invalid ones (each with the one problem upload must name); see
:func:`tests.corpus.generate.build_corpus` for the list and the interface.
"""

from tests.corpus.generate import LONG_SPECTRUM_POINTS, CorpusFile, build_corpus

__all__ = ["LONG_SPECTRUM_POINTS", "CorpusFile", "build_corpus"]
