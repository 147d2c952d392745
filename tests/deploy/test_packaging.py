"""A production install (``pip install .``) carries the service only, no development tools.

The kafka-* wrappers would shadow the real Kafka tools on an operator's PATH, and llm-devstack and the
emulator have no place on a server: they come from dev/pyproject.toml, which `make install` adds.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVICE_SCRIPTS = {"llm-supervisor", "llm-worker", "llmctl"}
DEV_SCRIPTS = {"llm-devstack", "llm-gigachat-emulator", "kafka-topics", "kafka-consumer-groups"}
DEV_PACKAGES = ("devstack", "gigachat_emulator")


def _source_copy(dest: Path) -> Path:
    """The repository's packaging inputs in a scratch folder, so the build leaves no build/ in the repo."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("setup.cfg", "setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    for package in ("llm_service", "llm_worker", "supervisor", "llmctl", *DEV_PACKAGES):
        shutil.copytree(REPO / package, dest / package, ignore=ignore)
    return dest


def test_pip_install_puts_only_the_service_commands_on_path(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    source = _source_copy(tmp_path / "src")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", str(source)],
        check=True,
        capture_output=True,
    )
    listed = subprocess.run(
        [str(python), "-c", _LIST_SCRIPTS], check=True, capture_output=True, text=True
    ).stdout.split()
    assert set(listed) == SERVICE_SCRIPTS
    on_path = {p.name for p in (env_dir / "bin").iterdir()}
    assert on_path >= SERVICE_SCRIPTS
    assert not DEV_SCRIPTS & on_path, f"development tools installed: {sorted(DEV_SCRIPTS & on_path)}"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    assert (site / "supervisor" / "cli.py").is_file()
    assert not [p for p in DEV_PACKAGES if (site / p).exists()], "a dev package went into the wheel"


# The console scripts of the installed llm-service distribution, from its own metadata.
_LIST_SCRIPTS = (
    "from importlib.metadata import distribution\n"
    "print(' '.join(e.name for e in distribution('llm-service').entry_points "
    "if e.group == 'console_scripts'))\n"
)


def test_the_dev_install_provides_the_tools_make_uses() -> None:
    bin_dir = Path(sys.executable).parent
    missing = [name for name in DEV_SCRIPTS if not (bin_dir / name).exists()]
    assert not missing, f"`make install` should provide {missing} from dev/pyproject.toml"
