"""What a task sends to the model and what it stores: the chat messages and the result object."""

from __future__ import annotations

from typing import Any

from llm_worker.decoding import DocumentInput, TextInput
from llm_worker.gigachat.models import ChatResult
from llm_worker.task_message import TaskSpec


def build_messages(
    spec: TaskSpec, content: TextInput | DocumentInput | None, file_id: str | None
) -> list[dict[str, Any]]:
    """The chat messages of a task: its messages, then its prompt, the input text joined to the prompt."""
    messages: list[dict[str, Any]] = [dict(m) for m in spec.messages]
    if spec.prompt is not None:
        messages.append({"role": "user", "content": spec.prompt})
    last_user = next((m for m in reversed(messages) if m["role"] == "user"), None)
    if last_user is None:
        last_user = {"role": "user", "content": ""}
        messages.append(last_user)
    if isinstance(content, TextInput):
        last_user["content"] = f"{last_user['content']}\n\n{content.text}".lstrip("\n")
    if file_id is not None:
        last_user["attachments"] = [file_id]
    return messages


def result_object(
    spec: TaskSpec, chat: ChatResult, *, worker_id: str, processing_ms: float, created_at: str
) -> dict[str, Any]:
    """The JSON object stored at the task's output for the user to read."""
    return {
        "task_id": spec.task_id,
        "model": chat.model,
        "content": chat.content,
        "finish_reason": chat.finish_reason,
        "usage": {
            "prompt_tokens": chat.prompt_tokens,
            "completion_tokens": chat.completion_tokens,
            "total_tokens": chat.total_tokens,
        },
        "worker_id": worker_id,
        "created_at": created_at,
        "processing_ms": round(processing_ms, 1),
        "metadata": spec.metadata,
    }
