"""Objects someone else wrote, read on the real S3 server. The input object is read with one GET and a
byte cap: one stated too large is refused before any of its body is read, and one whose response
states no size still costs at most INPUT_MAX_BYTES + 1 bytes of reading; both fail INPUT_TOO_LARGE.
An unreadable object at an output key counts as absent."""

from __future__ import annotations

import io
from typing import Any

import pytest
from minio import Minio

from devstack.stack import Stack
from llm_service.errors import PermanentTaskError
from llm_worker.storage import Storage
from llm_worker.task_message import ObjectRef

pytestmark = pytest.mark.stack

CAP = 64 * 1024
BUCKET = "llm-input"


class CountingResponse:
    """The minio response, counting the bytes the storage reads from it; ``hide_size`` drops its
    Content-Length, as a chunked response (or a proxy) would."""

    def __init__(self, response: Any, counter: list[int], *, hide_size: bool) -> None:
        self._response = response
        self._counter = counter
        self.headers = {
            k: v for k, v in response.headers.items() if k.lower() != "content-length" or not hide_size
        }

    def read(self, amt: int | None = None) -> bytes:
        data: bytes = self._response.read(amt)
        self._counter[0] += len(data)
        return data

    def close(self) -> None:
        self._response.close()

    def release_conn(self) -> None:
        self._response.release_conn()


class CountingClient(Minio):
    """A real client that counts the requests and body bytes of the storage's reads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hide_size = False
        self.bytes_read = [0]
        self.requests: list[str] = []

    def stat_object(self, bucket_name: str, object_name: str, *args: Any, **kwargs: Any) -> Any:
        self.requests.append("HEAD")
        return super().stat_object(bucket_name, object_name, *args, **kwargs)

    def get_object(self, bucket_name: str, object_name: str, *args: Any, **kwargs: Any) -> Any:
        self.requests.append("GET")
        response = super().get_object(bucket_name, object_name, *args, **kwargs)
        return CountingResponse(response, self.bytes_read, hide_size=self.hide_size)


def _client(stack: Stack) -> CountingClient:
    client = CountingClient(
        stack.s3_endpoint,
        access_key=stack.s3_access_key,
        secret_key=stack.s3_secret_key,
        secure=False,
        region="us-east-1",
    )
    return client


def _put(client: Minio, key: str, size: int) -> ObjectRef:
    client.put_object(BUCKET, key, io.BytesIO(b"a" * size), size)
    return ObjectRef(BUCKET, key)


def test_an_input_stated_too_large_is_refused_by_one_get_before_its_body_is_read(
    stack: Stack, unique_name: str
) -> None:
    client = _client(stack)
    ref = _put(client, f"{unique_name}/large.txt", 4 * CAP)
    storage = Storage(client=client, max_input_bytes=CAP, on_health=lambda up: None)
    client.requests.clear()
    with pytest.raises(PermanentTaskError) as raised:
        storage.read_input(ref)
    assert raised.value.code == "INPUT_TOO_LARGE" and f"{4 * CAP} bytes" in str(raised.value)
    assert client.requests == ["GET"] and client.bytes_read[0] == 0


def test_an_input_whose_response_states_no_size_is_read_no_further_than_the_cap(
    stack: Stack, unique_name: str
) -> None:
    client = _client(stack)
    ref = _put(client, f"{unique_name}/unstated.txt", 8 * 1024 * 1024)
    client.hide_size = True
    storage = Storage(client=client, max_input_bytes=CAP, on_health=lambda up: None)
    with pytest.raises(PermanentTaskError) as raised:
        storage.read_input(ref)
    assert raised.value.code == "INPUT_TOO_LARGE"
    assert 0 < client.bytes_read[0] <= CAP + 1


@pytest.mark.parametrize("size", [0, 1, CAP])
def test_objects_up_to_the_cap_are_read_whole(stack: Stack, unique_name: str, size: int) -> None:
    client = _client(stack)
    ref = _put(client, f"{unique_name}/fits-{size}.txt", size)
    storage = Storage(client=client, max_input_bytes=CAP, on_health=lambda up: None)
    client.requests.clear()
    assert storage.read_input(ref) == b"a" * size
    assert client.requests == ["GET"]


@pytest.mark.parametrize("data", [b"[" * 100_000, b"9" * 5000, b"\xff{}", b"[1, 2]"])
def test_an_unreadable_object_at_an_output_key_counts_as_absent(
    stack: Stack, unique_name: str, data: bytes
) -> None:
    client = _client(stack)
    client.put_object(BUCKET, f"{unique_name}/odd.json", io.BytesIO(data), len(data))
    storage = Storage(client=client, max_input_bytes=CAP, on_health=lambda up: None)
    assert storage.read_json(ObjectRef(BUCKET, f"{unique_name}/odd.json")) is None


def test_a_missing_json_object_costs_a_head_and_no_get(stack: Stack, unique_name: str) -> None:
    client = _client(stack)
    gets: list[str] = []
    real_get = client.get_object

    def counted_get(bucket_name: str, object_name: str, *args: Any, **kwargs: Any) -> Any:
        gets.append(object_name)
        return real_get(bucket_name, object_name, *args, **kwargs)

    client.get_object = counted_get  # type: ignore[method-assign]
    storage = Storage(client=client, max_input_bytes=CAP, on_health=lambda up: None)
    assert storage.read_json(ObjectRef(BUCKET, f"{unique_name}/absent.json")) is None
    assert gets == []  # the redelivery checks of a first delivery: a bodiless 404 only
    body = b'{"task_id": "t-1"}'
    client.put_object(BUCKET, f"{unique_name}/there.json", io.BytesIO(body), len(body))
    assert storage.read_json(ObjectRef(BUCKET, f"{unique_name}/there.json")) == {"task_id": "t-1"}
    assert gets == [f"{unique_name}/there.json"]
