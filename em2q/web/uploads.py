"""Receiving an upload: the multipart request body streamed straight into a scratch folder.

The imzML/ibd pair can be gigabytes, so file parts are written to their files block by block
as the request arrives (one write, constant memory), rather than spooled to a temporary file
and copied again. Form fields are small and kept in memory, within limits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

#: limits on the non-file fields of the setup form, and on a file name
MAX_FIELDS = 300
MAX_FIELD_BYTES = 64 * 1024
MAX_FILENAME_CHARS = 255


class UploadFormError(ValueError):
    """The request is not a multipart form this page sent (or exceeds the field limits)."""


@dataclass
class ReceivedFile:
    filename: str
    path: Path
    size_bytes: int = 0


@dataclass
class ReceivedForm:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, ReceivedFile] = field(default_factory=dict)


async def receive_multipart(request: Request, folder: Path, file_fields: set[str]) -> ReceivedForm:
    """Parse the request's multipart body; parts named in ``file_fields`` are written to
    ``folder/<field name>`` as they arrive. Other file parts are refused."""
    _, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if not boundary:
        raise UploadFormError("expected a multipart/form-data request (the upload form)")
    form = ReceivedForm()
    events: list[tuple[str, bytes]] = []
    parser = multipart_parser(
        boundary,
        on_part=lambda disposition: events.append(("part", disposition)),
        on_data=lambda data: events.append(("data", data)),
        on_end=lambda: events.append(("end", b"")),
    )
    name: str | None = None
    sink: IO[bytes] | None = None
    value = bytearray()
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            for kind, payload in events:
                if kind == "part":
                    _, disposition = parse_options_header(payload)
                    name = disposition.get(b"name", b"").decode("utf-8", "replace")
                    if name in form.fields or name in form.files:
                        raise UploadFormError(f"the field {name[:40]!r} is sent twice")
                    filename = disposition.get(b"filename")
                    if filename is not None and len(filename) > MAX_FILENAME_CHARS:
                        raise UploadFormError(
                            f"the file name of {name[:40]!r} is longer than "
                            f"{MAX_FILENAME_CHARS} characters; rename the file"
                        )
                    value.clear()
                    if filename is not None:
                        if name not in file_fields:
                            raise UploadFormError(f"unexpected file field {name!r}")
                        target = folder / name
                        sink = target.open("wb")
                        form.files[name] = ReceivedFile(filename.decode("utf-8", "replace"), target)
                    elif len(form.fields) >= MAX_FIELDS:
                        raise UploadFormError(f"more than {MAX_FIELDS} form fields")
                elif kind == "data":
                    if sink is not None:
                        await run_in_threadpool(sink.write, payload)
                        form.files[name].size_bytes += len(payload)
                    else:
                        value += payload
                        if len(value) > MAX_FIELD_BYTES:
                            raise UploadFormError(f"form field {name!r} is too long")
                elif kind == "end":
                    if sink is not None:
                        sink.close()
                        sink = None
                    elif name is not None:
                        form.fields[name] = value.decode("utf-8", "replace")
                    name = None
            events.clear()
        parser.finalize()
    except MultipartParseError as exc:
        raise UploadFormError(f"the form's multipart body is malformed: {exc}") from None
    finally:
        if sink is not None:
            sink.close()
    return form


def multipart_parser(
    boundary: bytes,
    on_part: Callable[[bytes], None],
    on_data: Callable[[bytes], None],
    on_end: Callable[[], None],
) -> MultipartParser:
    """A streaming parser of a multipart body: ``on_part(content-disposition header)`` as a
    part starts, ``on_data(bytes)`` for each piece of its content, ``on_end()`` as it ends.
    What a callback raises leaves ``parser.write``, which stops reading there."""
    headers: dict[bytes, bytes] = {}
    name_buffer: list[bytes] = []

    def on_header_field(data: bytes, start: int, end: int) -> None:
        name_buffer.append(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        key = b"".join(name_buffer).lower()
        headers[key] = headers.get(key, b"") + data[start:end]

    def on_header_end() -> None:
        name_buffer.clear()

    def on_headers_finished() -> None:
        disposition = headers.get(b"content-disposition", b"")
        headers.clear()
        on_part(disposition)

    def on_part_data(data: bytes, start: int, end: int) -> None:
        on_data(data[start:end])

    return MultipartParser(
        boundary,
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_end,
        },
    )
