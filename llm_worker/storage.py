"""S3 access of a worker: read task inputs, read and write result objects (the ``minio`` client).

Created inside the worker process (never before a fork: the client holds a connection pool).
Called from task threads; the minio client is thread-safe. S3 failures become TaskErrors here, so
the pipeline only decides "permanent" or "transient":

* a missing object or bucket (NoSuchKey, NoSuchBucket) → permanent INPUT_NOT_FOUND;
* a refusal (AccessDenied and other 4xx codes) → permanent STORAGE_ERROR;
* 5xx, SlowDown, connection errors and timeouts → transient STORAGE_UNAVAILABLE.
"""

from __future__ import annotations

import functools
import io
import json
import logging
from collections.abc import Callable
from typing import Any

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error, ServerError

from llm_service.clients import minio_client
from llm_service.config import Settings
from llm_service.errors import PermanentTaskError, TaskError, TransientTaskError
from llm_worker import error_codes as codes
from llm_worker.task_message import ObjectRef

log = logging.getLogger(__name__)

_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject"})
_TRANSIENT_CODES = frozenset({"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout"})
READ_CHUNK_BYTES = 256 * 1024
# Result objects and final-status markers are the service's own and small; a bigger one is not ours.
MAX_JSON_OBJECT_BYTES = 64 * 1024 * 1024


def make_client(settings: Settings, *, pool_size: int) -> Minio:
    """A minio client with bounded timeouts, TLS settings, and a pool big enough for every task thread."""
    return minio_client(settings, pool_size=pool_size)


class Storage:
    """Task inputs and result objects in S3. ``on_health(up)`` reports reachability for the status table."""

    def __init__(self, *, client: Minio, max_input_bytes: int, on_health: Callable[[bool], None]) -> None:
        self._client = client
        self._max_input_bytes = max_input_bytes
        self._on_health = on_health

    def check(self, buckets: list[str]) -> None:
        """Bootstrap probe: every bucket exists. Raises TaskError (transient when S3 is unreachable)."""
        for bucket in buckets:
            exists = self._call(
                functools.partial(self._client.bucket_exists, bucket), f"check bucket {bucket}"
            )
            if not exists:
                raise PermanentTaskError(f"bucket {bucket!r} does not exist", code=codes.STORAGE_ERROR)

    def read_input(self, ref: ObjectRef) -> bytes:
        """The input object's bytes, at most INPUT_MAX_BYTES of them, else INPUT_TOO_LARGE.

        One GET: the size its response states is checked before any of the body is read (an object
        known too large is not downloaded: the connection is closed instead), and the read itself is
        capped too, for a response that states no size or a wrong one. A HEAD first cost a second
        round trip on every task for the same check.
        """

        def get() -> tuple[int | None, bytes]:
            response = self._client.get_object(ref.bucket, ref.key)
            try:
                size = _stated_size(response)
                if size is not None and size > self._max_input_bytes:
                    return size, b""
                return size, _read_capped(response, self._max_input_bytes + 1)
            finally:
                response.close()
                response.release_conn()

        read: tuple[int | None, bytes] = self._call(get, f"read {_where(ref)}", ref)
        size, data = read
        if (size is None or size <= self._max_input_bytes) and len(data) <= self._max_input_bytes:
            return data
        # Over the limit as stated, or longer than the response stated (no size, a wrong one).
        stated_over = size is not None and size > self._max_input_bytes
        shown = f"{size} bytes" if stated_over else "longer than stated"
        raise PermanentTaskError(
            f"input {_where(ref)} is {shown}, over the limit of {self._max_input_bytes} bytes",
            code=codes.INPUT_TOO_LARGE,
        )

    def read_json(self, ref: ObjectRef) -> dict[str, Any] | None:
        """A JSON object stored at ``ref``; None when there is none (or it is not a JSON object).

        Asked on every task for objects that are almost never there (the redelivery checks), so a
        HEAD goes first: its "not found" is a bodiless 404, where a GET's is an XML error document
        the client parses. Only an object that exists costs the GET as well.
        """
        try:
            stat = self._call(
                lambda: self._client.stat_object(ref.bucket, ref.key), f"stat {_where(ref)}", ref
            )
            too_large = (stat.size or 0) > MAX_JSON_OBJECT_BYTES  # not worth a download
            data = b"" if too_large else self._read(ref, MAX_JSON_OBJECT_BYTES)
        except PermanentTaskError as exc:
            if exc.code == codes.INPUT_NOT_FOUND:
                return None
            raise
        if too_large or len(data) > MAX_JSON_OBJECT_BYTES:
            log.warning(
                "object %s is over %d bytes; treating it as absent", _where(ref), MAX_JSON_OBJECT_BYTES
            )
            return None
        try:
            body = json.loads(data)
        except (ValueError, RecursionError):  # a task may point its output at anyone's object
            log.warning("object %s is not JSON we can read; treating it as absent", _where(ref))
            return None
        return body if isinstance(body, dict) else None

    def write_json(self, ref: ObjectRef, body: dict[str, Any]) -> None:
        data = json.dumps(body, ensure_ascii=False, indent=1).encode("utf-8")
        self._call(
            lambda: self._client.put_object(
                ref.bucket,
                ref.key,
                io.BytesIO(data),
                len(data),
                content_type="application/json; charset=utf-8",
            ),
            f"write {_where(ref)}",
        )

    def _read(self, ref: ObjectRef, cap: int) -> bytes:
        """At most ``cap + 1`` bytes of the object: more than ``cap`` means "too large"; the rest of
        the body is never read (the connection is closed instead of drained)."""

        def get() -> bytes:
            response = self._client.get_object(ref.bucket, ref.key)
            try:
                return _read_capped(response, cap + 1)
            finally:
                response.close()
                response.release_conn()

        data: bytes = self._call(get, f"read {_where(ref)}", ref)
        return data

    def _call(self, operation: Callable[[], Any], what: str, missing: ObjectRef | None = None) -> Any:
        try:
            result = operation()
        except S3Error as exc:
            error = _s3_error(exc, what, missing)
            self._on_health(not error.transient)
            raise error from exc
        except (ServerError, MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            self._on_health(False)
            raise TransientTaskError(f"S3 {what} failed: {exc}", code=codes.STORAGE_UNAVAILABLE) from exc
        self._on_health(True)
        return result


def _stated_size(response: Any) -> int | None:
    """The body size a response states (Content-Length), or None when it states none we can read."""
    try:
        return int(response.headers["Content-Length"])
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def _read_capped(response: Any, most: int) -> bytes:
    chunks: list[bytes] = []
    left = most
    while left > 0:
        chunk = response.read(min(READ_CHUNK_BYTES, left))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _s3_error(exc: S3Error, what: str, missing: ObjectRef | None) -> TaskError:
    if exc.code in _NOT_FOUND and missing is not None:
        return PermanentTaskError(
            f"input {_where(missing)} does not exist ({exc.code})", code=codes.INPUT_NOT_FOUND
        )
    if exc.code in _TRANSIENT_CODES:
        return TransientTaskError(
            f"S3 {what} failed: {exc.code}: {exc.message}", code=codes.STORAGE_UNAVAILABLE
        )
    return PermanentTaskError(f"S3 {what} refused: {exc.code}: {exc.message}", code=codes.STORAGE_ERROR)


def _where(ref: ObjectRef) -> str:
    return f"s3://{ref.bucket}/{ref.key}"
