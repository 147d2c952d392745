"""Uploaded files: the in-memory store and the ``multipart/form-data`` parser (fact sheet §3).

Size limits per kind follow the sheet (image 15 MB, audio 35 MB, text/other 40 MB). Text-like files count
into a chat prompt by their decoded text; other files by size (an invented rate, see ``prompt_tokens``).
"""

from __future__ import annotations

import hashlib
import math
import threading
import uuid
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP

from gigachat_emulator.tokenizer import count_tokens

MB = 1024 * 1024
_IMAGE = frozenset({"jpeg", "jpg", "png", "tiff", "bmp"})
_AUDIO = frozenset({"mp4", "mp3", "m4a", "wav", "weba", "ogg", "opus"})
_TEXT = frozenset({"txt", "md", "csv", "json", "xml", "html", "htm", "yaml", "yml", "log"})
_BYTES_PER_TOKEN_BINARY = 256


@dataclass(frozen=True)
class StoredFile:
    """One uploaded file."""

    id: str
    filename: str
    purpose: str
    content_type: str
    data: bytes
    created_at: int
    access_policy: str = "private"

    @property
    def extension(self) -> str:
        """Lower-case extension without the dot, or ``""``."""
        _, dot, ext = self.filename.rpartition(".")
        return ext.lower() if dot else ""

    def is_text(self) -> bool:
        """Whether the content is plain text that a prompt includes verbatim."""
        return self.extension in _TEXT or self.content_type.startswith("text/")

    def prompt_tokens(self) -> int:
        """Tokens this file adds to a prompt: counted text, or one token per 256 bytes for binaries."""
        if self.is_text():
            return count_tokens(self.data.decode("utf-8", errors="replace"))
        return math.ceil(len(self.data) / _BYTES_PER_TOKEN_BINARY)

    def digest(self) -> str:
        """SHA-256 of the content, so answers change when an attached file changes."""
        return hashlib.sha256(self.data).hexdigest()

    def to_json(self) -> dict[str, object]:
        """Return the ``File`` object shape (SPEC ``File``)."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "access_policy": self.access_policy,
        }


def size_limit(filename: str) -> int:
    """Return the largest accepted upload in bytes for this file name."""
    ext = filename.rpartition(".")[2].lower()
    if ext in _IMAGE:
        return 15 * MB
    if ext in _AUDIO:
        return 35 * MB
    return 40 * MB


class FileStore:
    """Uploaded files by id; thread-safe. Deleted files disappear from every endpoint."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, StoredFile] = {}

    def add(self, *, filename: str, purpose: str, content_type: str, data: bytes, now: float) -> StoredFile:
        """Store a new file and return it."""
        stored = StoredFile(str(uuid.uuid4()), filename, purpose, content_type, data, int(now))
        with self._lock:
            self._files[stored.id] = stored
        return stored

    def get(self, file_id: str) -> StoredFile | None:
        """Return the file, or ``None`` when unknown or deleted."""
        with self._lock:
            return self._files.get(file_id)

    def list(self) -> list[StoredFile]:
        """Return all files, oldest first."""
        with self._lock:
            return list(self._files.values())

    def delete(self, file_id: str) -> StoredFile | None:
        """Remove the file and return it, or ``None`` when it was not there."""
        with self._lock:
            return self._files.pop(file_id, None)

    def clear(self) -> None:
        """Remove every file."""
        with self._lock:
            self._files.clear()


@dataclass(frozen=True)
class Part:
    """One ``multipart/form-data`` part."""

    name: str
    filename: str | None
    content_type: str
    data: bytes


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    """Parse a ``multipart/form-data`` body with the stdlib ``email`` parser.

    Raises ``ValueError`` when the content type is not multipart or has no boundary.
    """
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type:
        raise ValueError("expected multipart/form-data with a boundary")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ValueError("malformed multipart body")
    return [_to_part(part) for part in message.iter_parts()]


def _to_part(part: Message) -> Part:
    name = part.get_param("name", header="content-disposition")
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    return Part(
        name=name if isinstance(name, str) else "",
        filename=part.get_filename(),
        content_type=part.get_content_type(),
        data=data,
    )
