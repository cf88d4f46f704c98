"""The optical image of a measurement: the one home of its rules (every surface calls these).

* :func:`save_image` decodes the upload completely (``SchemaViolation`` on
  ``OpticalImage.image`` when it is not a PNG, JPEG or TIFF image), writes the file and its
  display PNG atomically at ``results_layout.optical_key`` and only then the ``OpticalImage``
  document; if the document cannot be written the files are removed again, so no half-stored
  image is left. A new upload replaces the old image and its registration. Uploading needs
  the upload role (technicians too).
* :func:`register` fits the optical → MSI affine transform to landmark pairs
  (``em2q_msi.optical.register``) and stores it with its residuals (``SchemaViolation`` on
  ``OpticalImage.transform`` naming the problem: fewer than 3 pairs, on one line). Registering
  needs the role that saves ROIs (scientists, admins).
* :func:`save_roi` saves a ROI drawn on the optical image: the stored transform carries its
  polygon into MSI pixel coordinates and it is saved as an ordinary ``Roi``
  (``em2q_resources.rois.save``); ``NotRegistered`` while the image has no registration.
* :func:`overlay_png` draws a layer (an ion image, the TIC, a segment map) over the image.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

import numpy as np

from em2q_msi import optical
from em2q_resources.auth import Action, User, require
from em2q_resources.metadata.errors import DocumentNotFound
from em2q_resources.metadata.schema import SchemaViolation, check_identifier, load_schema, utc_now
from em2q_resources.metadata.store import MetadataStore
from em2q_resources.results_layout import optical_key, read_bytes, write_bytes
from em2q_resources.storage import StorageResource

__all__ = [
    "NotRegistered",
    "get",
    "overlay_png",
    "register",
    "save_image",
    "save_roi",
    "transform_of",
    "warped_layer_png",
]


class NotRegistered(SchemaViolation):
    """The measurement has no optical image, or one not registered to the MSI grid yet: what
    needs the optical → MSI transform (a ROI drawn on it, an overlay) cannot be done."""

    def __init__(self, measurement_id: str, has_image: bool = True) -> None:
        super().__init__(
            "OpticalImage.transform",
            f"the optical image of {measurement_id} is not registered yet: place 3 or more "
            "landmark pairs first"
            if has_image
            else f"{measurement_id} has no optical image: upload one and register it first",
        )
        self.measurement_id = measurement_id


_SUFFIX = {"PNG": "png", "JPEG": "jpg", "TIFF": "tif"}


def save_image(
    store: MetadataStore,
    storage: StorageResource,
    user: User | None,
    measurement_id: str,
    data: bytes,
    filename: str = "optical",
) -> Any:
    """Store ``data`` as the optical image of ``measurement_id``; returns the document."""
    user = require(user, Action.UPLOAD)
    schema = load_schema()
    check_identifier(measurement_id, "OpticalImage.measurement_id")
    store.get(schema.Measurement, measurement_id)  # DocumentNotFound before anything is read
    try:
        picture = optical.decode(data)
    except optical.OpticalImageError as exc:
        raise SchemaViolation("OpticalImage.image", f"{filename}: {exc}") from None
    original = write_bytes(
        storage,
        optical_key(measurement_id, _sha256(data), f"image.{_SUFFIX[picture.format]}"),
        data,
    )
    folder = posixpath.dirname(optical_key(measurement_id, original.checksum.sha256, "x"))
    try:
        display = write_bytes(
            storage,
            optical_key(measurement_id, original.checksum.sha256, "display.png"),
            picture.display_png,
        )
        doc = schema.OpticalImage(
            id=measurement_id,
            measurement_id=measurement_id,
            filename=posixpath.basename(filename.replace("\\", "/")) or "optical",
            format=picture.format,
            width_px=picture.width_px,
            height_px=picture.height_px,
            url=str(original),
            sha256=original.checksum.sha256,
            size_bytes=original.checksum.size,
            display_url=str(display),
            display_scale=picture.display_scale,
            uploaded_by=user.name,
            uploaded_at=utc_now(),
        )
        previous = _stored(store, measurement_id)
        if previous is None:
            store.create(doc, refresh=True)
        else:
            store.update(doc, previous, refresh=True)
    except BaseException:
        if previous_folder(store, measurement_id) != folder:
            storage.remove(folder, within=f"measurements/{measurement_id}/optical")
        raise
    if previous is not None and previous.doc.sha256 != doc.sha256:
        old = posixpath.dirname(optical_key(measurement_id, previous.doc.sha256, "x"))
        storage.remove(old, within=f"measurements/{measurement_id}/optical")
    return doc


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _stored(store: MetadataStore, measurement_id: str) -> Any:
    try:
        return store.get(load_schema().OpticalImage, measurement_id)
    except DocumentNotFound:
        return None


def previous_folder(store: MetadataStore, measurement_id: str) -> str | None:
    """The folder of the optical image the store names now (kept when a write fails)."""
    try:
        stored = _stored(store, measurement_id)
    except Exception:  # noqa: BLE001 - the store may be what failed; then keep nothing new
        return None
    if stored is None:
        return None
    return posixpath.dirname(optical_key(measurement_id, stored.doc.sha256, "x"))


def get(store: MetadataStore, measurement_id: str) -> Any:
    """The measurement's optical image document; ``DocumentNotFound`` naming it otherwise."""
    return store.get(load_schema().OpticalImage, measurement_id).doc


def transform_of(doc: Any) -> dict[str, Any] | None:
    """The stored registration (``matrix``, ``landmarks``, ``residuals_px``, ``rms_px``)."""
    return json.loads(doc.transform) if doc.transform else None


def register(store: MetadataStore, user: User | None, measurement_id: str, landmarks: Any) -> Any:
    """Fit and store the optical → MSI transform of ``landmarks`` (``[[x, y, msi_x, msi_y]]``
    or ``[{"optical": [x, y], "msi": [x, y]}]``); returns the document."""
    user = require(user, Action.SAVE_PARAMETER_SET)
    stored = store.get(load_schema().OpticalImage, measurement_id)
    try:
        fit = optical.register(landmarks)
        pairs = np.hstack(optical.landmark_pairs(landmarks))
    except optical.OpticalImageError as exc:
        raise SchemaViolation("OpticalImage.transform", str(exc)) from None
    doc = stored.doc
    doc.transform = json.dumps(
        {
            "matrix": fit.matrix.tolist(),
            "landmarks": pairs.tolist(),
            "residuals_px": fit.residuals_px.tolist(),
            "rms_px": fit.rms_px,
        },
        separators=(",", ":"),
    )
    doc.registered_by, doc.registered_at = user.name, utc_now()
    store.update(doc, stored, refresh=True)
    return doc


def _matrix(doc: Any) -> np.ndarray:
    transform = transform_of(doc)
    if transform is None:
        raise NotRegistered(doc.measurement_id)
    return np.asarray(transform["matrix"], dtype=np.float64)


def save_roi(
    store: MetadataStore,
    user: User | None,
    measurement_id: str,
    name: str,
    geometry: Any,
    **options: Any,
) -> Any:
    """Save a ROI drawn on the optical image (GeoJSON in optical image pixel coordinates) as
    the measurement's ``Roi`` in MSI pixel coordinates; ``options`` as ``rois.save``
    (``colour``, ``description``, ``grid``, ``replace``). ``NotRegistered`` before anything
    is written when there is no registered optical image."""
    from em2q_resources import rois

    user = require(user, Action.SAVE_PARAMETER_SET)
    shape = rois.parse_geometry(geometry)
    stored = _stored(store, measurement_id)
    if stored is None:
        store.get(load_schema().Measurement, measurement_id)  # DocumentNotFound first
        raise NotRegistered(measurement_id, has_image=False)
    try:
        mapped = optical.geometry_to_msi(shape, _matrix(stored.doc))
    except optical.OpticalImageError as exc:
        raise SchemaViolation("Roi.geometry", str(exc)) from None
    if options.get("description") is None:
        options["description"] = "drawn on the optical image"
    return rois.save(store, user, measurement_id, name, mapped, **options)


def warped_layer_png(storage: StorageResource, doc: Any, layer_rgba: np.ndarray) -> bytes:
    """The RGBA layer (MSI rows × cols) drawn on the optical image's display pixels,
    transparent outside (the page stacks it over the image and sets its opacity)."""
    matrix = _matrix(doc)
    size = optical.display_rgb(read_bytes(storage, doc.display_url)).shape[1::-1]
    return optical.png(optical.warp_to_optical(layer_rgba, matrix, size, doc.display_scale))


def overlay_png(
    storage: StorageResource, doc: Any, layer_rgba: np.ndarray, opacity: float
) -> bytes:
    """The display image with the layer over it at ``opacity`` (0…1), as a PNG."""
    matrix = _matrix(doc)
    base = optical.display_rgb(read_bytes(storage, doc.display_url))
    warped = optical.warp_to_optical(layer_rgba, matrix, base.shape[1::-1], doc.display_scale)
    try:
        return optical.png(optical.composite(base, warped, opacity))
    except optical.OpticalImageError as exc:
        raise SchemaViolation("opacity", str(exc)) from None


#: the layers that can be drawn over the optical image
LAYERS = ("tic", "ion", "segments")


def layer_for(results: Any, layer: str = "tic", mz: float | None = None) -> np.ndarray:
    """The RGBA image (MSI rows × cols) of a layer of ``results`` (a measurement's results
    reader, ``em2q.results.MeasurementResults``): ``tic``, ``ion`` (the ion image of ``mz``)
    or ``segments`` (the segment map in the segments' colours); the first plane of a 3-D grid."""
    from em2q_msi.spatial import segment_image_rgba

    if layer == "tic":
        image = results.tic_image()
    elif layer == "ion":
        if mz is None:
            raise SchemaViolation("mz", "the ion layer needs an m/z")
        image = results.ion_image(float(mz))
    elif layer == "segments":
        summary = results.segmentation()
        labels = summary["segment_map"]
        return segment_image_rgba(labels if labels.ndim == 2 else labels[0], int(summary["k"]))
    else:
        raise SchemaViolation("layer", f"{layer!r}: choose one of {', '.join(LAYERS)}")
    return optical.layer_rgba(image if image.ndim == 2 else image[0])
