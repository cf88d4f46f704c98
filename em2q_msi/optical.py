"""The optical (microscopy, H&E) image under the ion images: decoding an upload, registering it
to the MSI grid with landmark pairs, and drawing an ion image over it.

Coordinates: an optical image's pixel coordinates are ``(x, y)`` = (column, row), pixel
``(row, column)`` covering ``[column, column + 1) × [row, row + 1)``, like the MSI image pixel
coordinates of ``em2q_msi.spatial`` (ROIs). The registration is the affine transform taking
optical ``(x, y)`` onto MSI ``(x, y)`` (:func:`register`, least squares through
``spatial.fit_affine``); the overlay samples, for each optical pixel centre, the MSI pixel the
transform puts it in (nearest neighbour: an ion image's pixels are its measurement's spots).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from em2q_msi.spatial import AffineFit, SpatialError, fit_affine, polygons

#: the image formats an optical upload may have (Pillow's names)
FORMATS = ("PNG", "JPEG", "TIFF")
#: the longest side of the display image; larger uploads are downsampled for the page
MAX_DISPLAY_PX = 2048
#: the largest upload decoded, in pixels (a 40k × 40k slide scan is tiled elsewhere, not here)
MAX_IMAGE_PIXELS = 400_000_000


class OpticalImageError(SpatialError):
    """An optical image or registration that cannot be used: not an image, an unsupported
    format, a truncated file, too few or degenerate landmarks, an opacity outside 0…1."""


@dataclass(frozen=True)
class OpticalPicture:
    """A decoded upload: its ``format`` (PNG, JPEG, TIFF), size in pixels, and the PNG shown
    on the page (``display_png``; ``display_scale`` display pixels per image pixel, ≤ 1)."""

    format: str
    width_px: int
    height_px: int
    display_png: bytes
    display_scale: float


def _to_display_mode(image: Any) -> Any:
    """8-bit RGB(A) of any Pillow image: 16-bit and float greyscale (microscopy TIFFs) are
    scaled between their 0.5 and 99.5 percentiles."""
    from PIL import Image

    if image.mode in ("RGB", "RGBA"):
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        data = np.asarray(image, dtype=np.float64)
        lo, hi = np.percentile(data, [0.5, 99.5]) if data.size else (0.0, 1.0)
        scaled = np.clip((data - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(data)
        return Image.fromarray((scaled * 255).astype(np.uint8)).convert("RGB")
    return image.convert(
        "RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB"
    )


def decode(data: bytes, max_display_px: int = MAX_DISPLAY_PX) -> OpticalPicture:
    """Check an uploaded optical image completely (decoded to its last pixel, so a truncated
    file is refused here, before anything is stored) and make its display PNG."""
    from PIL import Image

    if not data:
        raise OpticalImageError("the optical image is empty (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise OpticalImageError(f"the optical image is too large to decode: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds on bad bytes
            raise OpticalImageError(
                f"not a readable PNG, JPEG or TIFF image ({type(exc).__name__}: {exc})"
            ) from None
        finally:
            Image.MAX_IMAGE_PIXELS = previous
    if image.format not in FORMATS:
        raise OpticalImageError(
            f"optical images must be PNG, JPEG or TIFF; this one is {image.format or 'unknown'}"
        )
    width, height = image.size
    display = _to_display_mode(image)
    scale = 1.0
    if max(width, height) > max_display_px:
        scale = max_display_px / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        display = display.resize(size, Image.Resampling.LANCZOS)
        scale = size[0] / width
    buffer = io.BytesIO()
    display.save(buffer, format="PNG")
    return OpticalPicture(image.format, width, height, buffer.getvalue(), scale)


def landmark_pairs(
    landmarks: Sequence[Sequence[float]] | Sequence[Mapping[str, Any]],
) -> tuple[np.ndarray, np.ndarray]:
    """``(optical (n, 2), msi (n, 2))`` from ``[[x, y, msi_x, msi_y], …]`` or
    ``[{"optical": [x, y], "msi": [x, y]}, …]``; OpticalImageError naming the bad one."""
    if not isinstance(landmarks, Sequence) or isinstance(landmarks, str | bytes):
        raise OpticalImageError(
            f"landmarks: expected a list of [x, y, msi_x, msi_y], got {type(landmarks).__name__}"
        )
    optical, msi = [], []
    for i, pair in enumerate(landmarks):
        try:
            values = [*pair["optical"], *pair["msi"]] if isinstance(pair, Mapping) else list(pair)
            numbers = [float(v) for v in values]
        except (KeyError, TypeError, ValueError):
            raise OpticalImageError(
                f"landmark {i}: expected [x, y, msi_x, msi_y] or "
                f'{{"optical": [x, y], "msi": [x, y]}}, got {pair!r}'
            ) from None
        if len(numbers) != 4:
            raise OpticalImageError(f"landmark {i}: expected 4 numbers, got {len(numbers)}")
        optical.append(numbers[:2])
        msi.append(numbers[2:])
    return np.array(optical, dtype=np.float64).reshape(-1, 2), np.array(
        msi, dtype=np.float64
    ).reshape(-1, 2)


def register(landmarks: Sequence[Sequence[float]] | Sequence[Mapping[str, Any]]) -> AffineFit:
    """The affine transform from optical to MSI pixel coordinates fitted by least squares to
    ≥ 3 landmark pairs not on one line; ``residuals_px`` in MSI pixels."""
    optical, msi = landmark_pairs(landmarks)
    if optical.shape[0] < 3:
        raise OpticalImageError(
            f"registration needs at least 3 landmark pairs, got {optical.shape[0]}: click the "
            "same feature on the optical image and on the ion image, 3 times or more"
        )
    try:
        return fit_affine(optical, msi)
    except SpatialError as exc:
        raise OpticalImageError(str(exc)) from None


def geometry_to_msi(geometry: Mapping[str, Any], optical_to_msi: np.ndarray) -> dict[str, Any]:
    """A GeoJSON ``Polygon``/``MultiPolygon`` drawn in optical pixel coordinates, carried into
    MSI pixel coordinates by the registration's (2, 3) matrix. An affine map keeps edges
    straight, so the MSI pixels whose centres fall inside the result are exactly those whose
    centres, mapped back onto the optical image, fall inside the drawn polygon."""
    matrix = np.asarray(optical_to_msi, dtype=np.float64).reshape(2, 3)
    try:
        parts = polygons(geometry)
    except SpatialError as exc:
        raise OpticalImageError(str(exc)) from None
    mapped = [
        [(ring @ matrix[:, :2].T + matrix[:, 2]).tolist() for ring in rings] for rings in parts
    ]
    if len(mapped) == 1:
        return {"type": "Polygon", "coordinates": mapped[0]}
    return {"type": "MultiPolygon", "coordinates": mapped}


def layer_rgba(image: np.ndarray, colormap: str = "viridis") -> np.ndarray:
    """RGBA ``uint8`` of a ``(rows, cols)`` ion image through a colormap (min…max of its
    finite pixels); NaN pixels (not acquired) transparent."""
    from matplotlib import colormaps

    data = np.asarray(image, dtype=np.float64)
    if data.ndim != 2:
        raise OpticalImageError(f"an overlay layer is a 2-D image, got shape {data.shape}")
    finite = np.isfinite(data)
    lo, hi = (float(data[finite].min()), float(data[finite].max())) if finite.any() else (0, 1)
    scaled = np.clip((data - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(data)
    rgba = colormaps[colormap](np.where(finite, scaled, 0.0), bytes=True)
    rgba[~finite, 3] = 0
    return rgba


def warp_to_optical(
    layer: np.ndarray, optical_to_msi: np.ndarray, size_px: tuple[int, int], scale: float = 1.0
) -> np.ndarray:
    """The RGBA ``layer`` (MSI rows × cols × 4) drawn on an optical image of ``size_px``
    ``(width, height)`` display pixels (``scale`` display pixels per optical pixel): each
    display pixel takes the MSI pixel its centre falls in; outside the MSI image transparent."""
    rgba = np.asarray(layer, dtype=np.uint8)
    matrix = np.asarray(optical_to_msi, dtype=np.float64).reshape(2, 3)
    width, height = (int(v) for v in size_px)
    ys, xs = np.mgrid[0:height, 0:width]
    x = (xs.ravel() + 0.5) / scale
    y = (ys.ravel() + 0.5) / scale
    u = matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2]
    v = matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2]
    col, row = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    inside = (row >= 0) & (row < rgba.shape[0]) & (col >= 0) & (col < rgba.shape[1])
    out = np.zeros((height * width, 4), np.uint8)
    out[inside] = rgba[row[inside], col[inside]]
    return out.reshape(height, width, 4)


def composite(optical_rgb: np.ndarray, warped: np.ndarray, opacity: float) -> np.ndarray:
    """The optical image with the warped RGBA layer over it at ``opacity`` (0: optical only,
    1: the layer only where it is drawn); ``uint8`` RGB."""
    if not (0.0 <= float(opacity) <= 1.0):
        raise OpticalImageError(f"opacity must be between 0 and 1, got {opacity!r}")
    base = np.asarray(optical_rgb, dtype=np.float64)[..., :3]
    top = np.asarray(warped, dtype=np.float64)
    alpha = (top[..., 3:4] / 255.0) * float(opacity)
    return np.round(base * (1 - alpha) + top[..., :3] * alpha).astype(np.uint8)


def png(rgb_or_rgba: np.ndarray) -> bytes:
    """PNG bytes of a ``uint8`` RGB or RGBA array."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb_or_rgba)).save(buffer, format="PNG")
    return buffer.getvalue()


def display_rgb(display_png: bytes) -> np.ndarray:
    """The stored display PNG as ``uint8`` RGB."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(display_png)).convert("RGB"))
