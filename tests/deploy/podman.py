"""Podman for the image tests: a Debian bookworm base made with debootstrap, cached outside the repository.

No Docker engine and no registry exist on the machines the suite runs on, so the image is built from a
base made locally: ``debootstrap --variant=minbase bookworm`` from the Debian mirror apt is configured
with, packed once into ``<cache>/images/`` (reused by every later run) and ``podman import``-ed as
``localhost/debian:bookworm``. Bookworm's python3 is 3.11, the version the image's default base has.

Podman runs with its own ``containers.conf`` (``CONTAINERS_CONF``), never an edited ``/etc``: runc and
explicit ulimits, because crun cannot raise the open-files limit here and fails on hybrid cgroups.
"""

from __future__ import annotations

import fcntl
import os
import re
import resource
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from devstack.paths import cache_dir

BASE_IMAGE = "localhost/debian:bookworm"
SUITE = "bookworm"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile={nofile}:{nofile}", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""


def podman_env(workdir: Path) -> dict[str, str]:
    """The environment for every podman call: our containers.conf, sized to this machine's file limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    conf = workdir / "containers.conf"
    conf.write_text(CONTAINERS_CONF.format(nofile=nofile))
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def apt_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt uses (deb822 ``URIs:`` or one-line ``deb``), else deb.debian.org."""
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for uri in re.findall(r"^\s*(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", text, re.MULTILINE):
            if re.search(r"/debian/?$", uri):
                return uri.rstrip("/")
    return FALLBACK_MIRROR


def base_tarball() -> Path:
    return cache_dir() / "images" / f"debian-{SUITE}-minbase.tar"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_base_tarball() -> Path:
    """The cached root filesystem tarball; made with debootstrap on first use (about a minute)."""
    tarball = base_tarball()
    with _locked(tarball.with_suffix(".lock")):
        if tarball.is_file():
            return tarball
        with tempfile.TemporaryDirectory(prefix="debootstrap-", dir=tarball.parent) as tmp:
            rootfs = Path(tmp) / "rootfs"
            subprocess.run(
                ["debootstrap", "--variant=minbase", SUITE, str(rootfs), apt_mirror()],
                check=True,
                capture_output=True,
            )
            # apt's caches are 20+ MB the image does not need; the build runs `apt-get update` itself.
            for cached in ("var/cache/apt/archives", "var/lib/apt/lists"):
                subprocess.run(["find", str(rootfs / cached), "-type", "f", "-delete"], check=True)
            partial = tarball.with_suffix(".partial")
            subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
            partial.rename(tarball)
    return tarball


def ensure_base_image(env: dict[str, str]) -> str:
    """``localhost/debian:bookworm`` in podman's store, imported from the cached tarball when missing."""
    exists = subprocess.run(["podman", "image", "exists", BASE_IMAGE], env=env, check=False)
    if exists.returncode != 0:
        tarball = ensure_base_tarball()
        subprocess.run(
            ["podman", "import", "--change", 'CMD ["/bin/bash"]', str(tarball), BASE_IMAGE],
            env=env,
            check=True,
            capture_output=True,
        )
    return BASE_IMAGE


def build_image(env: dict[str, str], *, context: Path, tag: str, base: str) -> str:
    """``podman build`` of the repository's Dockerfile on ``base``; layers are cached between runs.

    ``--format docker`` keeps HEALTHCHECK (the OCI format drops it). Outbound HTTPS here may pass a
    proxy with its own CA, so the host's bundle is lent to pip for the build only (PIP_CERT).
    """
    argv = ["podman", "build", "--format", "docker", "--build-arg", f"BASE={base}", "-t", tag]
    if CA_BUNDLE.is_file():
        argv += ["-v", f"{CA_BUNDLE}:/run/host-ca.crt:ro", "--build-arg", "PIP_CERT=/run/host-ca.crt"]
    done = subprocess.run([*argv, str(context)], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"podman build failed ({done.returncode}):\n{done.stdout[-4000:]}{done.stderr}")
    return tag


def podman(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
