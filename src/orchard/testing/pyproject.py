"""A Python project to run orchard against, made offline: a PEP 517 / 660 build backend in stdlib Python that the
generated packages carry in their own tree (`pip install --no-index --no-build-isolation` needs nothing from the
network, not even setuptools), the files of such a package, and wheels built from generated packages.

Used by the environment tests (a real venv with an editable install and a console script) and by benchmark B7.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

PIP_QUIET = ("-q", "--no-index", "--no-cache-dir", "--disable-pip-version-check")

# The build backend: a wheel of the package named like the project, or an editable wheel whose .pth puts the
# source directory on sys.path; `[project.scripts]` become console scripts (pip writes them from entry_points.txt).
BACKEND = '''"""Build backend of the generated packages (PEP 517 and 660), stdlib only."""
import base64
import hashlib
import os
import pathlib
import tomllib
import zipfile


def _project():
    return tomllib.loads(pathlib.Path("pyproject.toml").read_text())["project"]


def _wheel(directory, files):
    project = _project()
    name = project["name"].replace("-", "_") + "-" + project["version"]
    info = name + ".dist-info"
    requires = "".join("Requires-Dist: " + d + "\\n" for d in project.get("dependencies", []))
    files[info + "/METADATA"] = ("Metadata-Version: 2.1\\nName: " + project["name"] + "\\nVersion: "
                                 + project["version"] + "\\n" + requires)
    files[info + "/WHEEL"] = "Wheel-Version: 1.0\\nGenerator: orchard\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    scripts = project.get("scripts", {})
    if scripts:
        files[info + "/entry_points.txt"] = "[console_scripts]\\n" + "".join(
            k + " = " + v + "\\n" for k, v in scripts.items())
    record = []
    for path, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(path + ",sha256=" + digest + "," + str(len(data)))
    files[info + "/RECORD"] = "\\n".join(record + [info + "/RECORD,,"]) + "\\n"
    filename = name + "-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(directory, filename), "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return filename


def get_requires_for_build_wheel(config_settings=None):
    return []


get_requires_for_build_editable = get_requires_for_build_wheel


def _base():
    """Where the package lives: `src/` in a src layout, else the project's root."""
    package = _project()["name"].replace("-", "_")
    return pathlib.Path("src") if pathlib.Path("src", package).is_dir() else pathlib.Path(".")


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    base, package = _base(), _project()["name"].replace("-", "_")
    files = sorted((base / package).rglob("*.py"))
    return _wheel(wheel_directory, {p.relative_to(base).as_posix(): p.read_text() for p in files})


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    where = os.path.abspath(str(_base()))
    return _wheel(wheel_directory, {"__editable__." + _project()["name"] + ".pth": where + "\\n"})
'''



def pyproject(name: str, dependencies: Iterable[str] = (), scripts: Mapping[str, str] | None = None) -> str:
    """A pyproject.toml building through the in-tree backend (no build requirements, so nothing to download)."""
    deps = ", ".join(f'"{d}"' for d in dependencies)
    entries = "".join(f'{script} = "{target}"\n' for script, target in (scripts or {}).items())
    return (f'[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["_build"]\n\n'
            f'[project]\nname = "{name}"\nversion = "1.0"\ndependencies = [{deps}]\n'
            + (f"\n[project.scripts]\n{entries}" if entries else ""))


def package_files(name: str, body: str, dependencies: Iterable[str] = (),
                  scripts: Mapping[str, str] | None = None, *, src_layout: bool = False) -> dict[str, str]:
    """The files of one buildable package: pyproject.toml, the backend and `<name>/__init__.py` (under `src/` in a
    src layout, where an editable install puts `src/` on sys.path)."""
    module = name.replace("-", "_")
    return {"pyproject.toml": pyproject(name, dependencies, scripts), "_build/backend.py": BACKEND,
            f"{'src/' if src_layout else ''}{module}/__init__.py": body}


def write_files(root: Path, files: Mapping[str, str]) -> None:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)


def build_wheels(sources: Path, into: Path, names: Iterable[str], python: str = sys.executable) -> list[str]:
    """A wheel per name, each generated as a package under `sources` and built by `pip wheel` offline."""
    into.mkdir(parents=True, exist_ok=True)
    for dist in names:
        write_files(sources / dist, package_files(dist, f"NAME = {dist!r}\n"))
        subprocess.run([python, "-m", "pip", "wheel", *PIP_QUIET, "--no-deps", "--no-build-isolation",
                        "-w", str(into), str(sources / dist)], check=True, capture_output=True)
    return sorted(p.name for p in into.glob("*.whl"))
