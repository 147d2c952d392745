"""Reload scope: what ``compare`` says of a change follows each setting's declared ``reload=``."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest

from llm_service.config import Reload, Settings, load_settings, reload_scope
from supervisor.reconfig import compare

FIELDS = dataclasses.fields(Settings)


def _other(value: Any, kind: Any) -> Any:
    """A value of the field's type that differs from ``value`` (checks are not run by replace)."""
    if kind is bool:
        return not value
    if kind in (int, float):
        return value + 1
    if typing.get_origin(kind) is tuple:
        return (*value, "other-bucket")
    return f"{value}-other"


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name.upper())
def test_a_change_is_handled_as_its_setting_declares(field: dataclasses.Field[Any]) -> None:
    old = load_settings({}, env_file=None)
    kind = typing.get_type_hints(Settings)[field.name]
    new = dataclasses.replace(old, **{field.name: _other(getattr(old, field.name), kind)})
    change = compare(old, new)
    name = field.name.upper()
    scope = reload_scope(field)
    assert change.changed == (name,)
    assert (name in change.refused) == (scope is Reload.REFUSED)
    assert (name in change.needs_supervisor_restart) == (scope is Reload.AT_RESTART)
    assert change.needs_rolling_restart == (scope in (Reload.ROLLING, Reload.REFUSED))


def test_the_scopes_keep_the_supervisor_safe() -> None:
    scope = {f.name: reload_scope(f) for f in FIELDS}
    # Two groups or topics consuming side by side during a roll could process a task twice.
    assert scope["kafka_group_id"] is scope["kafka_tasks_topic"] is Reload.REFUSED
    # Sizes of things made once at start: the status table, the socket, the metrics listener.
    assert scope["worker_max_processes"] is scope["supervisor_socket"] is Reload.AT_RESTART
    assert scope["metrics_port"] is Reload.AT_RESTART
    # Pool size is the supervisor's own: `llmctl scale` and a reload change it without a roll.
    assert scope["worker_processes"] is Reload.IN_PLACE
    assert scope["gigachat_auth_key"] is Reload.ROLLING
