"""``make test-min``: the lowest versions pyproject.toml allows, proven by running their tests.

    python tests/min_versions.py --venv .venv-min google-genai pydicom diffusers kaggle   # build
    .venv-min/bin/python tests/min_versions.py --check google-genai pydicom diffusers kaggle   # verify

``--venv DIR`` reads each package's floor (``>=X``) from pyproject.toml (dependencies and every extra; they
must agree), creates DIR as a venv of the running interpreter that sees the running environment's packages
(a ``.pth`` file in DIR runs ``site.addsitedir`` on its site-packages, so torch and the rest are not
installed twice) and installs exactly the floors, without dependencies, into DIR's own site-packages, which
come first on ``sys.path``: the floors shadow the newer versions. Run it with the main venv's Python
(``.venv/bin/python`` on a fresh clone). ``--check`` (run with DIR's Python) prints the version each package
imports from and fails when it is not the floor.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
MODULES = {"google-genai": "google.genai"}  # import names that differ from the distribution's


def _toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        from pip._vendor import tomli as tomllib
    return tomllib.loads(path.read_text())


def floors(packages: list[str], pyproject: Path = PYPROJECT) -> dict[str, str]:
    """Each package's ``>=`` floor in pyproject.toml; one line naming the problem when missing or not unique."""
    project = _toml(pyproject)["project"]
    requirements = [*project.get("dependencies", [])]
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    found: dict[str, set[str]] = {package: set() for package in packages}
    for requirement in requirements:
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*>=\s*([0-9][^,;\s]*)", requirement)
        if match and match.group(1).lower() in found:
            found[match.group(1).lower()].add(match.group(2))
    for package, versions in found.items():
        if len(versions) != 1:
            sys.exit(
                f"pyproject.toml: {package} needs exactly one '>=' floor, found {sorted(versions) or 'none'}"
            )
    return {package: versions.pop() for package, versions in found.items()}


def build(target: Path, packages: list[str]) -> None:
    pins = floors(packages)
    venv.EnvBuilder(clear=True, symlinks=True, with_pip=False).create(target)
    python = target / "bin" / "python"
    own = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    shared = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    lines = [f"import site; site.addsitedir({path!r})" for path in shared]
    (Path(own) / "_cxrsyn_shared_env.pth").write_text("\n".join(lines) + "\n")
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps"]
    command += ["--target", own, *(f"{package}=={version}" for package, version in pins.items())]
    print(f"test-min: {target} sees {', '.join(shared)}; installing {' '.join(command[-len(pins) :])}")
    subprocess.run(command, check=True)


def check(packages: list[str]) -> None:
    pins = floors(packages)
    own = Path(sysconfig.get_paths()["purelib"]).resolve()
    wrong = []
    from packaging.version import Version

    for package, version in pins.items():
        installed = importlib.metadata.version(package)
        # found, not imported: kaggle 1.8 to 2.1 log in (and exit without credentials) on import
        spec = importlib.util.find_spec(MODULES.get(package, package.replace("-", "_")))
        where = Path(spec.origin).resolve() if spec and spec.origin else Path("/nowhere")
        print(f"test-min: {package} {installed} (floor {version}) from {where.parent}")
        if Version(installed) != Version(version) or own not in where.parents:
            wrong.append(package)
    if wrong:
        sys.exit(f"test-min: {', '.join(wrong)} not at the floor in {sys.prefix}; rebuild with make test-min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="+")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--venv", type=Path, help="create this venv with the floors")
    mode.add_argument("--check", action="store_true", help="verify the running environment has the floors")
    args = parser.parse_args()
    if args.check:
        check(args.packages)
    else:
        build(args.venv, args.packages)


if __name__ == "__main__":
    main()
