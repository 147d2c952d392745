"""The S3 server: versitygw over a local folder (its posix backend), on 127.0.0.1."""

from __future__ import annotations

import os
from pathlib import Path

import requests
import urllib3
from minio import Minio

from devstack.procs import ManagedProcess, port_open, wait_until
from devstack.provision import versitygw
from llm_service.errors import StackError

# Development credentials of a server that listens on loopback only; not a secret.
ACCESS_KEY = "llm-dev"
SECRET_KEY = "llm-dev-secret"
HEALTH_PATH = "/health"


class S3Server:
    """versitygw on 127.0.0.1; with ``tls=(cert, key)`` it serves HTTPS (``ca_file``: the CA to trust);
    with ``access_log`` it logs every request there."""

    def __init__(
        self,
        *,
        cache: Path,
        run_dir: Path,
        port: int,
        tls: tuple[Path, Path] | None = None,
        ca_file: Path | None = None,
        access_log: Path | None = None,
    ) -> None:
        self.cache = cache
        self.data_dir = run_dir / "s3-data"
        self.port = port
        self.tls = tls
        self.ca_file = ca_file
        self.access_log = access_log  # one line per request (operation, key, status): tests count them
        self.proc = ManagedProcess("s3", run_dir)

    @property
    def secure(self) -> bool:
        return self.tls is not None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.proc.process() is not None

    def start(self, *, timeout: float = 30.0) -> None:
        binary = versitygw(self.cache)
        if port_open(self.port):
            raise StackError(f"port {self.port} (S3) is already in use by another process")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Keys go through the environment, not argv, so `ps` does not show them.
        env = dict(os.environ, ROOT_ACCESS_KEY=ACCESS_KEY, ROOT_SECRET_KEY=SECRET_KEY)
        self.proc.start(
            [
                str(binary),
                "--port",
                self.endpoint,
                "--health",
                HEALTH_PATH,
                "--quiet",
                # As MinIO and AWS do; versitygw closes every connection after one request otherwise,
                # and each client request then pays a TCP connect (measured: one per S3 call).
                "--keep-alive",
                *(["--cert", str(self.tls[0]), "--key", str(self.tls[1])] if self.tls else []),
                *(["--access-log", str(self.access_log)] if self.access_log else []),
                "posix",
                str(self.data_dir),
            ],
            env=env,
        )
        wait_until(self.healthy, proc=self.proc, timeout=timeout, what="S3 server (versitygw)")

    def healthy(self) -> bool:
        try:
            scheme, verify = ("https", str(self.ca_file or True)) if self.secure else ("http", True)
            url = f"{scheme}://{self.endpoint}{HEALTH_PATH}"
            return requests.get(url, timeout=1, verify=verify).status_code == 200
        except requests.RequestException:
            return False

    def client(self) -> Minio:
        http = urllib3.PoolManager(ca_certs=str(self.ca_file)) if self.ca_file else None
        return Minio(
            self.endpoint,
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            secure=self.secure,
            region="us-east-1",
            http_client=http,
        )

    def create_buckets(self, *names: str) -> None:
        client = self.client()
        for name in names:
            if not client.bucket_exists(name):
                client.make_bucket(name)

    def stop(self) -> None:
        self.proc.stop(timeout=10)
