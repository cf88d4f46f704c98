"""Errors raised while reading, validating and chunking imzML data.

Every class carries a stable ``code`` (snake_case) that the validation report, the step entry
point and later the web and Thrift surfaces use; the message names the offending value so a
technician can act on it without reading code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ImzMLError(Exception):
    """Base class: something is wrong with an imzML/ibd pair or with how it is read."""

    code = "imzml_error"


class ImzMLNotWellFormed(ImzMLError):
    code = "xml_not_well_formed"


class ImzMLNotImzML(ImzMLError):
    """Well-formed XML, but not an imzML document (no mzML root, no mode, no spectra...)."""

    code = "not_imzml"


class ImzMLMissingFile(ImzMLError):
    code = "file_missing"


class ImzMLUnsupported(ImzMLError):
    """A valid imzML feature this reader does not handle (e.g. MS-Numpress compression); the
    message names the feature and where it is declared."""

    code = "unsupported"


class ImzMLUUIDMismatch(ImzMLError):
    code = "uuid_mismatch"


class ImzMLChecksumMismatch(ImzMLError):
    code = "checksum_mismatch"


class ImzMLOffsetOutOfRange(ImzMLError):
    code = "offset_out_of_range"


class ImzMLEncodedLengthMismatch(ImzMLError):
    code = "encoded_length_mismatch"


class ImzMLCompressedDataError(ImzMLError):
    """A compressed array that does not inflate, or inflates to another length than declared."""

    code = "compressed_data_invalid"


class ImzMLArrayLengthMismatch(ImzMLError):
    """A spectrum whose m/z and intensity arrays have different lengths."""

    code = "array_length_mismatch"


class ImzMLTruncated(ImzMLError):
    code = "ibd_truncated"


class ImzMLCoordinateOutsideGrid(ImzMLError):
    code = "coordinate_outside_grid"


class ImzMLDuplicateCoordinate(ImzMLError):
    code = "duplicate_coordinate"


class ImzMLEmptySpectrum(ImzMLError):
    code = "empty_spectrum"


class ImzMLUnsortedMz(ImzMLError):
    code = "mz_not_sorted"


class ImzMLNonFiniteValues(ImzMLError):
    code = "non_finite_values"


class ImzMLContinuousMismatch(ImzMLError):
    """A continuous file whose spectra do not share one m/z array or one length."""

    code = "continuous_layout_mismatch"


class ChunkError(Exception):
    """Base class for problems with stored spectra chunks."""

    code = "chunk_error"


class ChunkNotFound(ChunkError):
    """No committed chunk at the URL (missing, or its write never finished)."""

    code = "chunk_not_found"


class ChunkCorrupt(ChunkError):
    code = "chunk_corrupt"


class ImzMLValidationError(ImzMLError):
    """Raised by ``ValidationReport.raise_for_problems``; the message lists every problem."""

    code = "invalid_imzml"

    def __init__(self, message: str, problems: list | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])


class StepFailed(Exception):
    """A step of the platform refused its input or reported a failure: the one error of a
    step, whether it ran in the run's process (a measurement that fails validation) or was
    launched (``python -m em2q_msi.steps`` reported ``"ok": false``).

    ``metadata``: numbers or problems shown with the failed step; ``summary``: the launched
    step's own JSON report, when it was launched.
    """

    def __init__(
        self,
        message: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        summary: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.metadata = dict(metadata or {})
        self.summary = dict(summary or {})

    @classmethod
    def from_summary(cls, step: str, summary: Mapping[str, Any]) -> StepFailed:
        """The failure a launched ``em2q_msi.steps`` step reported in its JSON summary."""
        error = summary.get("error") or {}
        return cls(
            f"em2q_msi.steps {step} failed ({error.get('code', 'unknown')}): "
            f"{error.get('message', 'no message; see the step log above')}",
            summary=summary,
        )
