"""What an input object is: text (and in which encoding) or a document for GigaChat's files API.

Pure functions, called from task threads. Text is UTF-8 first; else Windows-1251 when the bytes read
as Russian text in it (the common legacy encoding of Russian documents); else whatever
charset-normalizer finds with confidence. Binary data that is neither text nor a known document
format is a permanent INPUT_NOT_TEXT: retrying cannot change the bytes.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

import charset_normalizer

from llm_service.errors import PermanentTaskError
from llm_worker import error_codes as codes

# Document formats GigaChat's files API accepts (research/gigachat-api.md §3), by file extension.
DOCUMENT_TYPES = {
    ".pdf": "application/pdf",
    ".doc": "application/msword",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".ppt": "application/vnd.ms-powerpoint",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".epub": "application/epub+zip",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".tiff": "image/tiff",
    ".bmp": "image/bmp",
}
_MAGIC = (
    (b"%PDF-", ".pdf"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", ".doc"),  # OLE2 compound file: .doc or .ppt
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
)
_ZIP_MARKERS = (("word/document.xml", ".docx"), ("ppt/presentation.xml", ".pptx"), ("mimetype", ".epub"))
# Control characters other than tab, newlines and form feed hardly ever occur in real text; random
# or binary data has about one in eight. 0.5% tolerates a stray one in a long document.
_CONTROL = frozenset(range(0x20)) - {0x09, 0x0A, 0x0C, 0x0D} | {0x7F}
MAX_CONTROL_RATIO = 0.005
# Non-ASCII characters expected in Russian text decoded as cp1251: letters and typographic marks.
_RUSSIAN = frozenset("абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ«»—–№“”„…\u00a0")
MIN_RUSSIAN_SHARE = 0.9
MAX_MIXED_WORD_SHARE = 0.1
_WORD = re.compile(r"\w+")
MAX_CHAOS = 0.2


@dataclass(frozen=True)
class TextInput:
    text: str
    encoding: str


@dataclass(frozen=True)
class DocumentInput:
    data: bytes
    filename: str
    content_type: str


def classify(data: bytes, key: str) -> TextInput | DocumentInput:
    """Text to put in the prompt, or a document to upload; PermanentTaskError INPUT_NOT_TEXT otherwise."""
    filename = PurePosixPath(key).name or "input"
    extension = PurePosixPath(filename).suffix.lower()
    if extension not in DOCUMENT_TYPES:
        extension = sniff_document(data) or extension
    if extension in DOCUMENT_TYPES:
        if not filename.lower().endswith(extension):
            filename += extension  # the files API goes by the name's extension
        return DocumentInput(data, filename, DOCUMENT_TYPES[extension])
    return decode_text(data)


def sniff_document(data: bytes) -> str | None:
    """The document extension that the leading bytes announce, or None."""
    for magic, extension in _MAGIC:
        if data.startswith(magic):
            return extension
    if data.startswith(b"PK\x03\x04"):
        return _zip_document(data)
    return None


def _zip_document(data: bytes) -> str | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except zipfile.BadZipFile:
        return None
    return next((extension for marker, extension in _ZIP_MARKERS if marker in names), None)


def decode_text(data: bytes) -> TextInput:
    """Decode text as UTF-8, else cp1251 Russian, else a confident guess; raise INPUT_NOT_TEXT."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if looks_binary(data):
        raise PermanentTaskError("the input is binary data, not text", code=codes.INPUT_NOT_TEXT)
    try:
        return TextInput(data.decode("utf-8"), "utf-8")
    except UnicodeDecodeError:
        pass
    russian = _as_cp1251(data)
    if russian is not None:
        return TextInput(russian, "cp1251")
    best = charset_normalizer.from_bytes(data).best()
    if best is None or best.chaos > MAX_CHAOS:
        raise PermanentTaskError(
            "the input is not text in UTF-8 or a recognisable encoding", code=codes.INPUT_NOT_TEXT
        )
    return TextInput(str(best), str(best.encoding))


def looks_binary(data: bytes) -> bool:
    if b"\0" in data:
        return True
    sample = data[:65536]
    controls = sum(1 for byte in sample if byte in _CONTROL)
    return controls > MAX_CONTROL_RATIO * max(len(sample), 1)


def _as_cp1251(data: bytes) -> str | None:
    try:
        text = data.decode("cp1251")
    except UnicodeDecodeError:
        return None
    non_ascii = [ch for ch in text if ord(ch) > 0x7F]
    russian = sum(1 for ch in non_ascii if ch in _RUSSIAN)
    if not non_ascii or russian < MIN_RUSSIAN_SHARE * len(non_ascii):
        return None
    # Western text read as cp1251 also yields Cyrillic letters, but singly inside Latin words
    # ("Café" -> "Cafй"); Russian words are Cyrillic throughout.
    words = [w for w in _WORD.findall(text) if any(ch in _RUSSIAN for ch in w)]
    mixed = sum(1 for w in words if any("a" <= ch.lower() <= "z" for ch in w))
    return text if mixed <= MAX_MIXED_WORD_SHARE * len(words) else None
