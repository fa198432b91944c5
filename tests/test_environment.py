"""environment.yml, the Makefile and pyproject.toml describe one environment."""

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]


def _makefile_torch():
    m = re.search(r"^TORCH_VERSION\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert m, "Makefile has no TORCH_VERSION"
    return m.group(1)


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _env_pip():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = [d for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1, "environment.yml needs exactly one pip section"
    return env, pip[0]["pip"]


def test_torch_pin_is_the_same_everywhere():
    torch_version = _makefile_torch()
    _, pip = _env_pip()
    assert f"torch=={torch_version}" in pip
    torch_req = [Requirement(d) for d in _pyproject()["dependencies"] if d.startswith("torch") and not d.startswith("torch_")]
    assert len(torch_req) == 1
    assert torch_version in torch_req[0].specifier, "pyproject's torch range must admit the pinned torch"


def test_environment_installs_the_package_with_dev_extras():
    _, pip = _env_pip()
    assert "-e .[dev]" in pip
    assert "dev" in _pyproject()["optional-dependencies"]


def test_python_version_is_allowed():
    env, _ = _env_pip()
    py = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python=")]
    assert len(py) == 1
    version = py[0].split("=", 1)[1]
    assert version in SpecifierSet(_pyproject()["requires-python"])


def test_every_dependency_has_an_upper_bound():
    # numpy 2.4 and pandas 3 are new majors on the registry: every runtime pin is bounded above.
    for dep in _pyproject()["dependencies"]:
        req = Requirement(dep)
        assert any(s.operator in ("<", "<=", "==", "~=") for s in req.specifier), dep


def test_ruff_pin_matches_dev_extras_and_runs_in_make_test():
    _, pip = _env_pip()
    ruff = [d for d in _pyproject()["optional-dependencies"]["dev"] if d.startswith("ruff")]
    assert len(ruff) == 1 and ruff[0] in pip
    makefile = (ROOT / "Makefile").read_text()
    test_rule = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "ruff check dango_nb tests" in test_rule


def test_environment_pins_agree_with_pyproject():
    # a package environment.yml names (besides torch, pinned exactly above) has pyproject's range
    _, pip = _env_pip()
    declared = _pyproject()["dependencies"] + _pyproject()["optional-dependencies"]["dev"]
    project = {Requirement(d).name: Requirement(d).specifier for d in declared}
    named = [Requirement(d) for d in pip if not d.startswith("-") and not d.startswith("torch==")]
    assert named, "environment.yml names no package besides torch"
    for req in named:
        assert req.name in project, f"{req.name} is in environment.yml but not in pyproject's dependencies or dev extras"
        assert req.specifier == project[req.name], req.name
