"""The limiter's directory is private to the service user (issue 7 item 5): real files in tmp_path."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from llm_service.errors import ConfigError
from llm_worker.gigachat.limiter import ConcurrencyLimiter

OTHER_UID = 65534  # nobody


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def open_limiter(directory: Path) -> ConcurrencyLimiter:
    return ConcurrencyLimiter(directory=directory, max_concurrency=2)


def test_a_new_directory_and_its_parent_are_created_0700(tmp_path: Path) -> None:
    directory = tmp_path / "base" / "account"
    open_limiter(directory).close()
    assert mode(directory) == 0o700 and mode(directory.parent) == 0o700
    assert directory.stat().st_uid == os.getuid()
    assert {mode(p) for p in directory.iterdir()} == {0o600}


def test_an_existing_directory_of_ours_is_tightened_to_0700(tmp_path: Path) -> None:
    directory = tmp_path / "account"
    directory.mkdir()
    directory.chmod(0o777)
    open_limiter(directory).close()
    assert mode(directory) == 0o700


def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to give a directory to another user")  # CI and the dev box run as root
    directory = tmp_path / "account"
    directory.mkdir(mode=0o700)
    os.chown(directory, OTHER_UID, OTHER_UID)
    with pytest.raises(
        ConfigError, match=r"GIGACHAT_LIMITER_DIR: .* is not a directory of uid 0 \(owner 65534\)"
    ):
        open_limiter(directory)


def test_a_symlink_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (tmp_path / "account").symlink_to(target)
    with pytest.raises(ConfigError, match="is not a directory of uid"):
        open_limiter(tmp_path / "account")


def test_a_parent_others_may_write_to_is_refused_unless_sticky(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    base.chmod(0o777)
    with pytest.raises(ConfigError, match="others may write to it"):
        open_limiter(base / "account")
    base.chmod(0o1777)  # like /tmp: others cannot remove or replace our entries
    open_limiter(base / "account").close()
    assert mode(base / "account") == 0o700
