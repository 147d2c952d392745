"""deploy/backup/: back up .env and the logs, restore them, and refuse a damaged archive."""

from __future__ import annotations

import gzip
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BACKUP = REPO / "deploy" / "backup" / "llm-service-backup"
RESTORE = REPO / "deploy" / "backup" / "llm-service-restore"
ENV_TEXT = "GIGACHAT_AUTH_KEY=c2VjcmV0\nWORKER_PROCESSES=3\n"
CAPTURED = (
    "0.1.0 - llm_worker.pipeline - run - 2026-12-01T10:00:00.000Z - llm-worker[0] - INFO - "
    "Task a processed in 5ms"
)


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=60, check=False)


class Host:
    """A service's files as an operator has them: the env file and a log dir with a rotated log."""

    def __init__(self, root: Path) -> None:
        self.env_file = root / "etc" / "llm-service.env"
        self.log_dir = root / "log"
        self.backups = root / "backup"
        self.env_file.parent.mkdir()
        self.env_file.write_text(ENV_TEXT)
        self.env_file.chmod(0o600)
        self.log_dir.mkdir()
        (self.log_dir / "llm-service.log").write_text("today's line\n")
        (self.log_dir / "llm-service.log-20261130.gz").write_bytes(gzip.compress(b"yesterday's line\n"))

    def backup(self, *extra: str) -> Path:
        done = run(
            BACKUP,
            "--env-file",
            self.env_file,
            "--log-dir",
            self.log_dir,
            "--logs-cmd",
            f"printf '%s\\n' '{CAPTURED}'",
            "--dest",
            self.backups,
            *extra,
        )
        assert done.returncode == 0, done.stderr
        return Path(done.stdout.strip())

    def restore(self, archive: Path) -> subprocess.CompletedProcess[str]:
        return run(RESTORE, archive, "--env-file", self.env_file, "--log-dir", self.log_dir)


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def test_backup_then_restore_brings_back_env_and_logs(host: Host) -> None:
    archive = host.backup()
    assert archive.name.startswith("llm-service-") and archive.name.endswith("Z.tar.gz")
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600, "the archive holds secrets"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"SHA256SUMS", "config/.env", "logs/llm-service.log", "logs/service.log"} <= names

    # The disaster: the env file is lost, a log is overwritten, the rotated one deleted.
    host.env_file.unlink()
    (host.log_dir / "llm-service.log").write_text("written after the backup\n")
    (host.log_dir / "llm-service.log-20261130.gz").unlink()

    done = host.restore(archive)
    assert done.returncode == 0, done.stderr
    assert host.env_file.read_text() == ENV_TEXT
    assert stat.S_IMODE(host.env_file.stat().st_mode) == 0o600
    assert (host.log_dir / "llm-service.log").read_text() == "today's line\n"
    rotated = (host.log_dir / "llm-service.log-20261130.gz").read_bytes()
    assert gzip.decompress(rotated) == b"yesterday's line\n"
    kept = list(host.log_dir.glob("llm-service.log.before-restore-*"))
    assert [p.read_text() for p in kept] == ["written after the backup\n"], "newer content is kept aside"
    captured = list(host.log_dir.glob("restored-*/service.log"))
    assert [p.read_text().strip() for p in captured] == [CAPTURED]


def test_a_damaged_archive_is_refused_and_nothing_is_written(host: Host, tmp_path: Path) -> None:
    archive = host.backup()
    assert run(RESTORE, "--verify", archive).returncode == 0
    unpacked = tmp_path / "unpacked"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    (unpacked / "config" / ".env").write_text("GIGACHAT_AUTH_KEY=tampered\n")
    damaged = tmp_path / "damaged.tar.gz"
    with tarfile.open(damaged, "w:gz") as tar:
        for name in ("SHA256SUMS", "config", "logs"):
            tar.add(unpacked / name, arcname=name)
    host.env_file.unlink()

    verify = run(RESTORE, "--verify", damaged)
    assert verify.returncode == 1 and "damaged" in verify.stderr
    done = host.restore(damaged)
    assert done.returncode == 1 and "nothing restored" in done.stderr
    assert not host.env_file.exists()


def test_keep_prunes_the_oldest_archives(host: Host) -> None:
    made = [host.backup("--keep", "2") for _ in range(3)]
    left = sorted(host.backups.glob("llm-service-*.tar.gz"))
    assert left == sorted(made[1:]), "the two newest archives stay"


def test_a_failing_logs_command_fails_the_backup(host: Host) -> None:
    done = run(BACKUP, "--env-file", host.env_file, "--logs-cmd", "exit 3", "--dest", host.backups)
    assert done.returncode != 0
    assert not list(host.backups.glob("*.tar.gz"))
