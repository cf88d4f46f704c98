"""The pixel grid of a measurement: the bounding box of its acquired coordinates.

An instrument's stage coordinates need not start at (1, 1): a tissue section may be scanned at
x = 101..180, y = 41..120, with an irregular outline inside that box. Every image of a
measurement (TIC, ion images, QC masks) lives on the box ``min..max`` of the acquired
coordinates on each axis (z included for 3-D files), so no image carries a dead margin and a
pixel of the box without a spectrum is *not acquired* (NaN, drawn transparent), which is
different from *acquired without signal* (0).

Image layout: a 2-D measurement (one z plane) gives ``(ny, nx)`` images (rows are y, as
pyimzML's ``getionimage``); a 3-D one gives ``(nz, ny, nx)`` stacks, one plane per z.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


class GeometryError(ValueError):
    """Coordinates that do not fit a grid (outside its box, wrong shape)."""


def pixel_size_um(
    declared: tuple[float | None, float | None] | None,
    setup: tuple[float | None, float | None] | None = None,
) -> tuple[float, float] | None:
    """The pixel size ``(x, y)`` in µm: the file's (IMS:1000046/47) where it declares both,
    else the setup's, else ``None`` (square pixels assumed). One missing axis takes the other's
    value: a raster is square unless a file or setup says otherwise."""
    for candidate in (declared, setup):
        if candidate is None:
            continue
        x, y = candidate
        x = float(x) if x is not None and math.isfinite(float(x)) and float(x) > 0 else None
        y = float(y) if y is not None and math.isfinite(float(y)) and float(y) > 0 else None
        if x is None and y is None:
            continue
        return (x or y, y or x)  # type: ignore[return-value]
    return None


@dataclass(frozen=True)
class PixelGrid:
    """A box of pixels: ``origin`` is the imzML ``(x, y, z)`` of index ``(0, 0, 0)``,
    ``shape`` is ``(nz, ny, nx)``, ``pixel_size_um`` is ``(x, y)`` in µm (None: unknown)."""

    origin: tuple[int, int, int]
    shape: tuple[int, int, int]
    pixel_size_um: tuple[float, float] | None = None

    # ------------------------------------------------------------------ building

    @classmethod
    def from_coordinates(
        cls,
        coordinates: np.ndarray,
        pixel_size_um: tuple[float, float] | None = None,
    ) -> PixelGrid:
        """The bounding box of 1-based imzML coordinates ``(n, 2 or 3)``."""
        coords = _as_xyz(coordinates)
        if coords.shape[0] == 0:
            raise GeometryError("no coordinates: a grid needs at least one acquired pixel")
        low, high = coords.min(axis=0), coords.max(axis=0)
        return cls(
            origin=(int(low[0]), int(low[1]), int(low[2])),
            shape=(int(high[2] - low[2] + 1), int(high[1] - low[1] + 1), int(high[0] - low[0] + 1)),
            pixel_size_um=pixel_size_um,
        )

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> PixelGrid:
        size = value.get("pixel_size_um")
        return cls(
            origin=tuple(int(v) for v in value["origin"]),  # type: ignore[arg-type]
            shape=tuple(int(v) for v in value["shape"]),  # type: ignore[arg-type]
            pixel_size_um=(float(size[0]), float(size[1])) if size else None,
        )

    @classmethod
    def coerce(cls, grid: PixelGrid | tuple[int, ...] | Mapping[str, Any]) -> PixelGrid:
        """A PixelGrid from itself, its ``to_dict`` form, or an image shape ``(ny, nx)`` /
        ``(nz, ny, nx)`` whose origin is (1, 1, 1) (for grids made by hand)."""
        if isinstance(grid, PixelGrid):
            return grid
        if isinstance(grid, Mapping):
            return cls.from_dict(grid)
        shape = tuple(int(v) for v in grid)
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3:
            raise GeometryError(f"a grid shape is (ny, nx) or (nz, ny, nx), got {shape}")
        return cls(origin=(1, 1, 1), shape=shape)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """JSON form (manifests, reports): origin, shape, pixel size, image shape."""
        return {
            "origin": list(self.origin),
            "shape": list(self.shape),
            "image_shape": list(self.image_shape),
            "pixel_size_um": list(self.pixel_size_um) if self.pixel_size_um else None,
        }

    # ------------------------------------------------------------------ shape

    @property
    def nz(self) -> int:
        return self.shape[0]

    @property
    def ny(self) -> int:
        return self.shape[1]

    @property
    def nx(self) -> int:
        return self.shape[2]

    @property
    def is_3d(self) -> bool:
        return self.nz > 1

    @property
    def image_shape(self) -> tuple[int, ...]:
        """``(ny, nx)`` for one plane, else ``(nz, ny, nx)``."""
        return self.shape if self.is_3d else self.shape[1:]

    @property
    def n_pixels(self) -> int:
        """Pixels of the box (acquired or not)."""
        return self.nz * self.ny * self.nx

    @property
    def z_values(self) -> list[int]:
        """The imzML z coordinate of each plane."""
        return [self.origin[2] + k for k in range(self.nz)]

    @property
    def aspect(self) -> float:
        """Physical height / width of one pixel (1 when the pixel size is unknown)."""
        if not self.pixel_size_um:
            return 1.0
        return self.pixel_size_um[1] / self.pixel_size_um[0]

    # ------------------------------------------------------------------ mapping

    def indices(self, coordinates: np.ndarray) -> tuple[np.ndarray, ...]:
        """0-based image indices of imzML coordinates: ``(row, column)`` for a 2-D grid,
        ``(plane, row, column)`` for a 3-D one. GeometryError names the first outside."""
        coords = _as_xyz(coordinates)
        x = coords[:, 0] - self.origin[0]
        y = coords[:, 1] - self.origin[1]
        z = coords[:, 2] - self.origin[2]
        bad = (x < 0) | (x >= self.nx) | (y < 0) | (y >= self.ny) | (z < 0) | (z >= self.nz)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            axes = "xyz" if self.is_3d or coords[i, 2] != self.origin[2] else "xy"
            at = ", ".join(f"{a}={coords[i, k]}" for k, a in enumerate(axes))
            extent = ", ".join(
                f"{a} {self.origin[k]}..{self.origin[k] + self.shape[2 - k] - 1}"
                for k, a in enumerate(axes)
            )
            raise GeometryError(f"spectrum {i} at ({at}) lies outside the grid {extent}")
        return (z, y, x) if self.is_3d else (y, x)

    def acquired_mask(self, coordinates: np.ndarray) -> np.ndarray:
        """Boolean image (``image_shape``): True where a spectrum was acquired."""
        mask = np.zeros(self.image_shape, dtype=bool)
        mask[self.indices(coordinates)] = True
        return mask

    def image(
        self, coordinates: np.ndarray, values: np.ndarray, fill_value: float = np.nan
    ) -> np.ndarray:
        """Values per spectrum placed on the grid, float64. ``values`` of shape ``(n,)`` give
        one image (``image_shape``); ``(k, n)`` give ``k`` images; pixels not acquired hold
        ``fill_value`` (NaN: drawn transparent)."""
        data = np.asarray(values, dtype=np.float64)
        single = data.ndim == 1
        data = np.atleast_2d(data)
        n = _as_xyz(coordinates).shape[0]
        if data.shape[1] != n:
            raise GeometryError(f"{data.shape[1]} values per image but {n} coordinates")
        where = self.indices(coordinates)
        images = np.full((data.shape[0], *self.image_shape), fill_value, dtype=np.float64)
        images[(slice(None), *where)] = data
        return images[0] if single else images

    # ------------------------------------------------------------------ display

    def planes(self, image: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """``[(z, plane (ny, nx))]`` of one image of this grid (one entry for a 2-D grid)."""
        data = np.asarray(image)
        if data.shape != self.image_shape:
            raise GeometryError(f"image of shape {data.shape}, the grid's is {self.image_shape}")
        if not self.is_3d:
            return [(self.origin[2], data)]
        return list(zip(self.z_values, data, strict=True))

    def mosaic(self, image: np.ndarray, gap_pixels: int = 1) -> np.ndarray:
        """One 2-D image: the planes side by side (z increasing to the right), separated by
        ``gap_pixels`` NaN columns; a 2-D image as it is."""
        planes = [plane for _, plane in self.planes(image)]
        if len(planes) == 1:
            return np.asarray(planes[0], dtype=np.float64)
        gap = np.full((self.ny, gap_pixels), np.nan)
        parts: list[np.ndarray] = []
        for k, plane in enumerate(planes):
            if k:
                parts.append(gap)
            parts.append(np.asarray(plane, dtype=np.float64))
        return np.hstack(parts)

    def physical_repeats(self, max_repeat: int = 8) -> tuple[int, int]:
        """Integer ``(row, column)`` repeats that draw each pixel with its physical aspect
        (e.g. 20 × 40 µm pixels: ``(2, 1)``); ``(1, 1)`` for square or unknown pixels."""
        ratio = self.aspect
        if abs(ratio - 1.0) < 1e-9:
            return 1, 1
        wide = ratio < 1  # taller rows needed when ratio > 1
        r = 1 / ratio if wide else ratio
        for scale in range(1, max_repeat + 1):
            big = r * scale
            if abs(big - round(big)) <= 0.05 * big:
                long_side = min(max(int(round(big)), 1), max_repeat * scale)
                return (scale, long_side) if wide else (long_side, scale)
        return (1, int(round(1 / ratio))) if wide else (int(round(ratio)), 1)


def _as_xyz(coordinates: np.ndarray) -> np.ndarray:
    """``(n, 3)`` int64 coordinates; a missing z column is plane 1."""
    coords = np.asarray(coordinates)
    if coords.ndim != 2 or coords.shape[1] not in (2, 3):
        raise GeometryError(f"coordinates must be (n, 2) or (n, 3), got shape {coords.shape}")
    coords = coords.astype(np.int64, copy=False)
    if coords.shape[1] == 2:
        coords = np.column_stack([coords, np.ones(coords.shape[0], np.int64)])
    return coords
