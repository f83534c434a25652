"""multipart/form-data bodies, parsed as they arrive (stdlib only: no python-multipart needed).

The 'file' part goes straight to disk, so an upload of any size holds only a chunk or two in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import BinaryIO

from llmlabel.errors import InputError

MAX_PART_HEADERS = 16 << 10  # a part's header block
MAX_FIELD = 64 << 10  # a form field's value (mode, label_column): small strings
MALFORMED = "malformed multipart body ({}); send the file with curl -F file=@data.csv"


@dataclass
class Upload:
    """The 'file' part: its name and type as the client sent them, and where its bytes were written."""

    filename: str | None
    content_type: str | None
    path: Path
    size: int


def _boundary(content_type: str) -> bytes:
    m = Message()
    m["content-type"] = content_type
    b = m.get_param("boundary")
    if not isinstance(b, str) or not 0 < len(b) <= 200:
        raise InputError(MALFORMED.format("no boundary"))
    return b.encode("latin-1", "replace")


class _Reader:
    """A byte buffer over the body's chunks."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self.chunks, self.buf = chunks, bytearray()

    async def more(self, why: str) -> None:
        async for chunk in self.chunks:
            if chunk:
                self.buf += chunk
                return
        raise InputError(MALFORMED.format(why))

    async def until(self, marker: bytes, why: str, limit: int) -> bytes:
        """The bytes before `marker` (consumed with it), at most `limit` of them."""
        while (i := self.buf.find(marker)) < 0:
            if len(self.buf) > limit:
                raise InputError(MALFORMED.format(why))
            await self.more(why)
        out = bytes(self.buf[:i])
        del self.buf[: i + len(marker)]
        return out

    async def copy_until(self, marker: bytes, sink: BinaryIO | bytearray | None, limit: int | None) -> int:
        """Pass the bytes before `marker` to `sink` as they arrive (None: drop them); returns their count."""
        n, keep = 0, len(marker) - 1  # a marker may straddle two chunks
        while (i := self.buf.find(marker)) < 0:
            if len(self.buf) > keep:
                n += self._emit(len(self.buf) - keep, sink)
                if limit is not None and n > limit:
                    raise InputError("a form field is too long; send the corpus as the field 'file'")
            await self.more("a part never ends")
        n += self._emit(i, sink)
        del self.buf[: len(marker)]
        return n

    def _emit(self, n: int, sink: BinaryIO | bytearray | None) -> int:
        if sink is not None:
            sink.write(self.buf[:n]) if not isinstance(sink, bytearray) else sink.extend(self.buf[:n])
        del self.buf[:n]
        return n


async def read_multipart(
    content_type: str, chunks: AsyncIterator[bytes], file_path: Path
) -> tuple[dict[str, str], Upload | None]:
    """Form fields and the 'file' part of a multipart/form-data body; the file's bytes go to `file_path`."""
    delim = b"--" + _boundary(content_type)
    r = _Reader(chunks)
    await r.until(delim, "no boundary line", 1 << 20)  # the preamble
    fields: dict[str, str] = {}
    upload = None
    while True:
        while len(r.buf) < 2:
            await r.more("no closing boundary")
        if r.buf[:2] == b"--":
            return fields, upload
        if r.buf[:2] != b"\r\n":
            raise InputError(MALFORMED.format("broken boundary line"))
        del r.buf[:2]
        head = BytesHeaderParser(policy=policy.HTTP).parsebytes(
            await r.until(b"\r\n\r\n", "broken part headers", MAX_PART_HEADERS) + b"\r\n\r\n"
        )
        name = head.get_param("name", header="content-disposition")
        end = b"\r\n" + delim
        if name == "file" and upload is None:
            with open(file_path, "wb") as fh:
                size = await r.copy_until(end, fh, None)
            upload = Upload(head.get_filename(), head.get_content_type(), file_path, size)
        elif isinstance(name, str):
            value = bytearray()
            await r.copy_until(end, value, MAX_FIELD)
            try:
                fields[name] = value.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise InputError(f"form field '{name[:40]}' is not UTF-8 text") from None
        else:
            await r.copy_until(end, None, None)
