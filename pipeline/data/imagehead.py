"""File-level checks on raw image bytes, before any decoding: empty or cut files, and the
pixel count the header declares.

A 1.6 MB PNG can declare 40,000 x 40,000 pixels; decoding it would allocate gigabytes (or
hit OpenCV's own limit as an exception), so the size is read from the header first."""

from __future__ import annotations

import io

from PIL import JpegImagePlugin, PngImagePlugin, TiffImagePlugin

DEFAULT_MAX_PIXELS = 50_000_000  # configs/base.yaml data.max_pixels

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
# By content, not extension. Pillow's format classes are used directly because
# Image.open adds its own decompression-bomb check (an exception or a warning, by a
# process-wide limit) before we could read the size.
_HEADER_READERS = (
    (PNG_SIGNATURE, PngImagePlugin.PngImageFile),
    (_JPEG_SOI, JpegImagePlugin.JpegImageFile),
    (b"II*\x00", TiffImagePlugin.TiffImageFile),
    (b"MM\x00*", TiffImagePlugin.TiffImageFile),
)


def _png_problem(raw: bytes) -> str | None:
    # libpng may hand back the rows it got from a cut file, so walk the
    # chunk lengths instead of trusting the decoder to notice.
    pos, size = len(PNG_SIGNATURE), len(raw)
    while pos + 8 <= size:
        length = int.from_bytes(raw[pos : pos + 4], "big")
        kind = raw[pos + 4 : pos + 8].decode("latin-1")
        end = pos + 12 + length
        if end > size:
            return f"truncated PNG ({kind} chunk ends at byte {end}, file has {size})"
        if kind == "IEND":
            return None
        pos = end
    return "truncated PNG (no IEND chunk)"


def integrity_problem(raw: bytes) -> str | None:
    """File-level check by content (not extension): empty, cut PNG or JPEG."""
    if not raw:
        return "empty file (0 bytes)"
    if raw.startswith(PNG_SIGNATURE):
        return _png_problem(raw)
    # Some writers pad after EOI; tolerate NULs and whitespace only.
    if raw.startswith(_JPEG_SOI) and not raw.rstrip(b"\0\r\n ").endswith(_JPEG_EOI):
        return "truncated JPEG (no EOI marker)"
    return None


def header_size(raw: bytes) -> tuple[int, int] | None:
    """(width, height) declared by a PNG, JPEG or TIFF header, read without decoding any
    pixels; None when the format is another or the header is unreadable (the decoder then
    reports the file)."""
    for magic, reader in _HEADER_READERS:
        if raw.startswith(magic):
            try:
                return reader(io.BytesIO(raw)).size
            except Exception:  # noqa: BLE001  (any header Pillow cannot parse: leave it to OpenCV)
                return None
    return None


def size_problem(raw: bytes, max_pixels: int) -> str | None:
    """A problem line when the header declares more than `max_pixels` pixels."""
    size = header_size(raw)
    if size is None or size[0] * size[1] <= max_pixels:
        return None
    width, height = size
    return f"header declares {width}x{height} (WxH) = {width * height} pixels, more than data.max_pixels={max_pixels}"
