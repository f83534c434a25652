"""multipart/form-data bodies, parsed with the stdlib (no python-multipart needed)."""

from llmlabel.errors import InputError


def parse_multipart(
    content_type: str, body: bytes
) -> tuple[dict[str, str], tuple[str | None, str | None, bytes] | None]:
    """Form fields and the 'file' part of a multipart/form-data body (stdlib only: no python-multipart needed)."""
    from email import policy
    from email.parser import BytesParser

    head = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\nMIME-Version: 1.0\r\n\r\n"
    try:
        msg = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    except Exception:
        raise InputError("malformed multipart body; send the file with curl -F file=@data.csv") from None
    if not msg.is_multipart() or msg.defects:
        raise InputError(
            "malformed multipart body (no boundary or broken parts); send the file with curl -F file=@data.csv"
        )
    fields: dict[str, str] = {}
    upload = None
    for part in msg.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            continue
        if name == "file":
            upload = (part.get_filename(), part.get_content_type(), data)
        else:
            try:
                fields[name] = data.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise InputError(f"form field '{name[:40]}' is not UTF-8 text") from None
    return fields, upload
