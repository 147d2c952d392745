"""The ``error.code`` values a worker puts in FAILED statuses and DLQ headers (besides the model codes
of ``llm_worker.gigachat.models``). Each is documented in docs/reference.md; a test keeps the two in step.
"""

from __future__ import annotations

from llm_worker.gigachat import models as model_codes  # the model codes live with the client raising them

# The message itself
INVALID_JSON = "INVALID_JSON"  # not UTF-8 JSON
INVALID_TASK = "INVALID_TASK"  # JSON, but not a task: missing or ill-typed fields
INVALID_TASK_ID = "INVALID_TASK_ID"  # task_id is not 1-128 chars of [A-Za-z0-9._:-]
MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"  # over TASK_MAX_MESSAGE_BYTES
BUCKET_NOT_ALLOWED = "BUCKET_NOT_ALLOWED"  # input outside MINIO_ALLOWED_INPUT_BUCKETS, or a foreign output
KEY_NOT_ALLOWED = "KEY_NOT_ALLOWED"  # an input or output key with '.'/'..' segments or under '.llm-service/'

# The input object
INPUT_NOT_FOUND = "INPUT_NOT_FOUND"
INPUT_TOO_LARGE = "INPUT_TOO_LARGE"  # over INPUT_MAX_BYTES
INPUT_NOT_TEXT = "INPUT_NOT_TEXT"  # neither UTF-8 nor a detectable single-byte text, nor a document
STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"  # S3 unreachable or 5xx after retries (transient)
STORAGE_ERROR = "STORAGE_ERROR"  # S3 refused the request (permanent, e.g. access denied)

# The worker
INTERNAL = "INTERNAL"  # a bug: an unexpected exception in the pipeline (traceback in the log)
TIMED_OUT = "TIMED_OUT"  # TASK_TIMEOUT_S passed before the task could finish
POISON = "POISON"  # the message killed POISON_DEATHS workers that ran it; quarantined, not run again

OTHER = "OTHER"  # not an error.code: the metrics' bucket for any code missing from COUNTED


def _counted() -> tuple[str, ...]:
    own = [v for k, v in globals().items() if k.isupper() and isinstance(v, str) and v != OTHER]
    model = [v for k, v in vars(model_codes).items() if k.isupper() and isinstance(v, str)]
    return (*dict.fromkeys([*own, *model]), OTHER)


# The codes a worker counts one by one in its status-table slot (FAILURE_CODE_COUNTERS of
# llm_service/status_table.py); the supervisor exports them as llm_service_tasks_total{code=...}.
COUNTED: tuple[str, ...] = _counted()


def counted_index(code: str) -> int:
    """The status-table counter of ``code``: its place in COUNTED, or OTHER's."""
    try:
        return COUNTED.index(code)
    except ValueError:
        return len(COUNTED) - 1
