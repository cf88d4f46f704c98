"""The measurement facts an imzML file declares, in the shape the metadata schema stores.

Everything here is read from the header through pyimzml's cv-param parser, plus the m/z range,
which needs one pass over the m/z arrays (a single array in continuous mode).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

from em2q_msi.geometry import PixelGrid, pixel_size_um

if TYPE_CHECKING:
    from em2q_msi.imzml import ImzML

MAX_PIXELS_X = "IMS:1000042"
MAX_PIXELS_Y = "IMS:1000043"
PIXEL_SIZE_X = "IMS:1000046"
PIXEL_SIZE_Y = "IMS:1000047"
POSITIVE = "MS:1000130"
NEGATIVE = "MS:1000129"
CENTROID = "MS:1000127"
PROFILE = "MS:1000128"


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _params(group: Any) -> dict[str, Any]:
    """cv and user params of a pyimzml ParamGroup as ``{name: value}`` (``True`` when the
    param carries no value, e.g. ``"top down"``)."""
    out: dict[str, Any] = {}
    for name, _acc, value, _raw_name, raw_value, *_ in group.cv_params:
        out[str(name)] = True if raw_value in (None, "") else _jsonable(value)
    for name, _dtype, value, raw_value, *_ in group.user_params:
        out[str(name)] = True if raw_value in (None, "") else _jsonable(value)
    return out


def _first_accession(groups: list[Any], accession: str) -> Any:
    for group in groups:
        if accession in group.param_by_accession:
            return group.param_by_accession[accession]
    return None


def declared_grid(reader: ImzML) -> dict[str, int | None]:
    """Max pixel counts x/y from the scan settings (``None`` when not declared)."""
    settings = list(reader.metadata.scan_settings.values())
    x = _first_accession(settings, MAX_PIXELS_X)
    y = _first_accession(settings, MAX_PIXELS_Y)
    return {
        "max_count_x": int(x) if x is not None else None,
        "max_count_y": int(y) if y is not None else None,
    }


def file_pixel_size_um(reader: ImzML) -> tuple[float | None, float | None]:
    """The pixel size ``(x, y)`` in µm that the scan settings declare (IMS:1000046/47), None
    per axis where the file does not say."""
    settings = list(reader.metadata.scan_settings.values())
    size_x = _first_accession(settings, PIXEL_SIZE_X)
    size_y = _first_accession(settings, PIXEL_SIZE_Y)
    return (
        float(size_x) if size_x is not None else None,
        float(size_y) if size_y is not None else None,
    )


def pixel_grid(
    reader: ImzML, setup_pixel_size_um: tuple[float | None, float | None] | None = None
) -> PixelGrid:
    """The measurement's grid: the bounding box of its coordinates, with the file's pixel size,
    else the setup's (``SpectrometerSettings.pixel_size_x_um``/``_y_um``)."""
    size = pixel_size_um(file_pixel_size_um(reader), setup_pixel_size_um)
    return PixelGrid.from_coordinates(reader.coordinates, size)


def grid_facts(grid: PixelGrid) -> dict[str, Any]:
    """The grid as ``ImzMLFacts`` fields (pixels and origin per axis, pixel size in µm)."""
    size = grid.pixel_size_um
    return {
        "pixels_x": grid.nx,
        "pixels_y": grid.ny,
        "pixels_z": grid.nz,
        "origin_x": grid.origin[0],
        "origin_y": grid.origin[1],
        "origin_z": grid.origin[2],
        "pixel_size_x_um": size[0] if size else None,
        "pixel_size_y_um": size[1] if size else None,
    }


def grid_from_facts(facts: Any) -> PixelGrid | None:
    """The grid ``grid_facts`` stored (an ``ImzMLFacts`` or its document); None without pixel
    counts. Facts stored before origins existed have origin 1, their grid then is 1..max."""
    if facts is None:
        return None

    def get(name: str) -> Any:
        return facts.get(name) if isinstance(facts, dict) else getattr(facts, name, None)

    if not get("pixels_x") or not get("pixels_y"):
        return None
    size_x, size_y = get("pixel_size_x_um"), get("pixel_size_y_um")
    return PixelGrid(
        origin=(int(get("origin_x") or 1), int(get("origin_y") or 1), int(get("origin_z") or 1)),
        shape=(int(get("pixels_z") or 1), int(get("pixels_y")), int(get("pixels_x"))),
        pixel_size_um=pixel_size_um((size_x, size_y)),
    )


def _polarity(reader: ImzML) -> str | None:
    groups = list(reader.metadata.referenceable_param_groups.values())
    accessions = {acc for g in groups for acc in g.param_by_accession}
    text = reader.header.first_spectrum_xml
    accessions |= {m.decode() for m in re.findall(rb'accession="(MS:10001(?:29|30))"', text)}
    if POSITIVE in accessions and NEGATIVE in accessions:
        return "mixed"
    if POSITIVE in accessions:
        return "positive"
    if NEGATIVE in accessions:
        return "negative"
    return None


def _spectrum_type(reader: ImzML) -> str | None:
    groups = [
        reader.metadata.file_description,
        *reader.metadata.referenceable_param_groups.values(),
    ]
    accessions = {acc for g in groups for acc in g.param_by_accession}
    if CENTROID in accessions:
        return "centroid"
    if PROFILE in accessions:
        return "profile"
    return None


def _instrument(reader: ImzML) -> dict[str, Any]:
    configs = []
    model = None
    for config_id, config in reader.metadata.instrument_configurations.items():
        params = _params(config)
        for name, value in params.items():
            if value is True and model is None:
                model = name
        configs.append(
            {
                "id": str(config_id),
                "params": params,
                "components": [
                    {"type": c.type, "params": _params(c)}
                    for c in getattr(config, "components", [])
                ],
            }
        )
    return {"model": model, "configurations": configs}


def measurement_facts(reader: ImzML) -> dict[str, Any]:
    """Mode, pixel grid and size (µm), spectra count, m/z range, dtypes, uuid, checksum,
    instrument, polarity and scan settings, as plain JSON types."""
    coords = reader.coordinates
    size_x, size_y = file_pixel_size_um(reader)
    mz_min, mz_max = reader.mz_range()
    grid = declared_grid(reader)
    return {
        "mode": reader.mode,
        "n_spectra": reader.n_spectra,
        "pixel_grid": {
            **grid,
            "max_x": int(coords[:, 0].max()),
            "max_y": int(coords[:, 1].max()),
            "max_z": int(coords[:, 2].max()),
            "min_x": int(coords[:, 0].min()),
            "min_y": int(coords[:, 1].min()),
            "min_z": int(coords[:, 2].min()),
        },
        "pixel_size_um": {"x": size_x, "y": size_y},
        "mz_min": mz_min,
        "mz_max": mz_max,
        "mz_dtype": reader.mz_dtype.name,
        "intensity_dtype": reader.intensity_dtype.name,
        "n_values": int(reader.index.intensity_lengths.sum()),
        "ibd_size_bytes": reader.ibd_size,
        "uuid": reader.uuid,
        "checksum": (
            {"type": reader.checksum_type, "value": reader.checksum}
            if reader.checksum_type
            else None
        ),
        "spectrum_type": _spectrum_type(reader),
        "polarity": _polarity(reader),
        "instrument": _instrument(reader),
        "scan_settings": {str(k): _params(v) for k, v in reader.metadata.scan_settings.items()},
    }
