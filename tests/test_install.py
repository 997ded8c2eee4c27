"""orchard as a user installs it, offline: the sdist and the wheel built from a copy of the project with the build
backend from the wheelhouse, what they hold, the wheel installed into a fresh venv running `orchard demo`,
`make install PREFIX=…` and `make uninstall`, and the Makefile's two installs into .venv (`make demo`'s runtime-only
one, everything else's with the test tools)."""

from __future__ import annotations

import email.parser
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / ".tools" / "wheels"
WHEEL_LIST = ROOT / "tools" / "wheels-orchard.txt"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
VERSION = PROJECT["version"]


@dataclass(frozen=True)
class Dists:
    sdist: Path
    wheel: Path


def _normalized(name: str) -> str:
    """A distribution name as wheel file names spell it (PEP 427/503)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _pins() -> list[tuple[str, str]]:
    """(name, version) of each wheel tools/wheels-orchard.txt pins."""
    pins = []
    for line in WHEEL_LIST.read_text(encoding="utf-8").splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            name, _, version = requirement.partition("==")
            pins.append((name.strip(), version.strip()))
    return pins


def offline_env(**extra: str) -> dict[str, str]:
    """The environment with pip kept off every index and every configuration file: what it installs comes from the
    wheelhouse or not at all."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PIP_", "VIRTUAL_ENV"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_CACHE_DIR="1", **extra)
    return env


def pip_offline() -> dict[str, str]:
    """`offline_env` with pip told to install from the wheelhouse only."""
    return offline_env(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(WHEELS))


def run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A child process with its output captured; the caller checks the exit code."""
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a process that must have succeeded (its output in the failure otherwise)."""
    assert proc.returncode == 0, f"{proc.args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    """The wheels tools/wheels-orchard.txt pins (`make wheels`); a clear failure without them."""
    present = {path.name.lower() for path in WHEELS.glob("*.whl")}
    missing = [f"{name}=={version}" for name, version in _pins()
               if not any(file.startswith(f"{_normalized(name)}-{version}-") for file in present)]
    assert not missing, f"missing from {WHEELS}: {', '.join(missing)}: run `make wheels` (or `make test`) first"
    return WHEELS


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project as a clone would have it once the working tree is committed: the tracked files and the
    untracked ones git does not ignore (no .venv, .tools, caches or build output)."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            check=True, capture_output=True).stdout.decode().split("\0")
    copy = tmp_path_factory.mktemp("project")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is not a clone's
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    return copy


@pytest.fixture(scope="module")
def dists(project: Path, wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Dists:
    """The sdist, and the wheel built from it (so the sdist is known to be complete), by `python -m build` in
    isolated environments whose setuptools comes from the wheelhouse."""
    out = tmp_path_factory.mktemp("dist")
    ok(run([sys.executable, "-m", "build", "--outdir", str(out), str(project)], cwd=project, env=pip_offline()))
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Dists(sdist, wheel)


@pytest.fixture(scope="module")
def fresh_venv(dists: Dists, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A new venv (not the project's .venv) with the built wheel and its dependencies installed from the wheelhouse."""
    venv = tmp_path_factory.mktemp("venv") / "orchard"
    ok(run([sys.executable, "-m", "venv", str(venv)], cwd=venv.parent, env=offline_env()))
    ok(run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(dists.wheel)], cwd=venv.parent,
           env=pip_offline()))
    yield venv


def test_the_wheel_holds_the_package_its_metadata_and_license(dists: Dists) -> None:
    assert dists.wheel.name == f"orchard-{VERSION}-py3-none-any.whl"
    info = f"orchard-{VERSION}.dist-info"
    with zipfile.ZipFile(dists.wheel) as wheel:
        names = set(wheel.namelist())
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
        metadata = email.parser.Parser().parsestr(wheel.read(f"{info}/METADATA").decode())
    assert "[console_scripts]\norchard = orchard.cli:main" in entry_points
    assert {"orchard/py.typed", "orchard/cli/__init__.py", "orchard/demo/agent.py", f"{info}/licenses/LICENSE"} <= names
    assert {name.split("/")[0] for name in names} == {"orchard", info}, "only the package and its metadata"
    data = {path.relative_to(ROOT / "src").as_posix() for path in (ROOT / "src" / "orchard").rglob("*")
            if path.is_file() and path.suffix not in (".py", ".pyc")}
    assert data <= names, f"files under src/orchard missing from [tool.setuptools.package-data]: {data - names}"
    assert metadata["Name"] == "orchard" and metadata["Version"] == VERSION
    assert metadata["License-Expression"] == "MIT" and metadata["Requires-Python"] == PROJECT["requires-python"]
    assert metadata["Summary"] == PROJECT["description"]
    runtime = {re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower()
               for req in metadata.get_all("Requires-Dist", []) if "extra ==" not in req}
    declared = {re.split(r"[\s<>=!~;\[]", dep, maxsplit=1)[0].lower() for dep in PROJECT["dependencies"]}
    assert runtime == declared == {"click", "rich", "pyyaml", "psutil", "starlette", "uvicorn"}


def test_the_sdist_holds_the_whole_project(dists: Dists) -> None:
    assert dists.sdist.name == f"orchard-{VERSION}.tar.gz"
    top = f"orchard-{VERSION}/"
    with tarfile.open(dists.sdist) as sdist:
        names = {name.removeprefix(top) for name in sdist.getnames()}
    assert {"LICENSE", "README.md", "pyproject.toml", "PKG-INFO", "Makefile", "src/orchard/py.typed",
            "src/orchard/demo/agent.py", "tests/conftest.py", "tools/fetch-wheels.sh", "tools/wheels-orchard.txt",
            "examples/command-agent/agent.py", "docs/development.md"} <= names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_the_wheel_in_a_fresh_venv_runs_the_demo(fresh_venv: Path, tmp_path: Path) -> None:
    orchard = fresh_venv / "bin" / "orchard"
    where = ok(run([str(fresh_venv / "bin" / "python"), "-c", "import orchard; print(orchard.__file__)"],
                   cwd=tmp_path, env=offline_env()))
    assert Path(where.strip()).is_relative_to(fresh_venv), "orchard must import from the fresh venv"
    version = ok(run([str(orchard), "--version"], cwd=tmp_path, env=offline_env()))
    assert version.strip() == f"orchard, version {VERSION}"
    demo = ok(run([str(orchard), "demo", "--dir", str(tmp_path / "demo")], cwd=tmp_path, env=offline_env()))
    assert "tasks: 6/6 merged" in demo
    assert f"look around: cd {tmp_path / 'demo' / 'sample'} && git log" in demo


def make(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`make ARGS` in the project copy."""
    return run(["make", "--no-print-directory", "-C", str(project), *args], cwd=project, env=env or offline_env(),
               timeout=180)


def test_make_install_into_a_prefix_then_uninstall(project: Path, wheelhouse: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "opt"
    pip_args = f"PIP_ARGS=--no-index --find-links {wheelhouse}"
    out = ok(make(project, "install", f"PREFIX={prefix}", f"PYTHON={sys.executable}", pip_args))
    link, venv = prefix / "bin" / "orchard", prefix / "share" / "orchard" / "venv"
    assert link.is_symlink() and link.resolve() == (venv / "bin" / "orchard").resolve()
    assert (venv / "pyvenv.cfg").is_file() and venv.resolve() != (ROOT / ".venv").resolve()
    assert f"installed: {link}" in out and f"{prefix / 'bin'} is not on your PATH" in out
    assert ok(run([str(link), "--version"], cwd=tmp_path, env=offline_env())).strip() == f"orchard, version {VERSION}"
    where = ok(run([str(venv / "bin" / "python"), "-c", "import orchard; print(orchard.__file__)"], cwd=tmp_path,
                   env=offline_env()))
    assert Path(where.strip()).is_relative_to(venv), "a copy in its own venv, not an editable link to the checkout"

    ok(make(project, "uninstall", f"PREFIX={prefix}"))
    assert not link.exists() and not link.is_symlink() and not (prefix / "share" / "orchard").exists()


def test_make_install_leaves_an_orchard_it_did_not_put_there(project: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "bin" / "orchard"
    foreign.parent.mkdir()
    foreign.write_text("#!/bin/sh\necho pipx's orchard\n")
    proc = make(project, "install", f"PREFIX={tmp_path}")
    assert proc.returncode != 0 and "is not this install's link" in proc.stderr
    assert foreign.read_text() == "#!/bin/sh\necho pipx's orchard\n" and not (tmp_path / "share").exists()


@pytest.fixture
def makefile_only(tmp_path: Path) -> Path:
    """A directory with the project's Makefile and pyproject.toml and a stand-in .venv/bin/python, for `make -n`."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").touch()
    return tmp_path


def _touch_newer(stamp: Path, than: Path) -> None:
    """Make `stamp` exist and be newer than `than`."""
    stamp.touch()
    mtime = than.stat().st_mtime + 10
    os.utime(stamp, (mtime, mtime))


def test_make_demo_installs_the_runtime_only(makefile_only: Path) -> None:
    demo = ok(make(makefile_only, "-n", "-B", "demo"))
    assert "pip install --quiet -e .\n" in demo and "[test]" not in demo
    assert "orchard demo --dir" in demo
    assert "pip install --quiet -e '.[test,ray]'" in ok(make(makefile_only, "-n", "-B", "test"))


def test_make_demo_then_make_test_and_the_reverse(makefile_only: Path) -> None:
    venv, pyproject = makefile_only / ".venv", makefile_only / "pyproject.toml"
    _touch_newer(venv / ".installed-runtime", pyproject)  # what `make demo` leaves
    assert "pip install" not in ok(make(makefile_only, "-n", "demo"))
    test = ok(make(makefile_only, "-n", "test"))
    assert "pip install --quiet -e '.[test,ray]'\ntouch .venv/.installed .venv/.installed-runtime\n" in test
    _touch_newer(venv / ".installed", pyproject)  # what `make test` leaves: both stamps
    assert "pip install" not in ok(make(makefile_only, "-n", "test"))
    assert "pip install" not in ok(make(makefile_only, "-n", "demo"))
    _touch_newer(pyproject, venv / ".installed")  # pyproject.toml changed: each reinstalls what it needs
    assert "pip install --quiet -e .\n" in ok(make(makefile_only, "-n", "demo"))
    assert "pip install --quiet -e '.[test,ray]'" in ok(make(makefile_only, "-n", "test"))
