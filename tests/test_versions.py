"""The versions `make test-lowest` installs (tests/constraints-lowest.txt) are the lowest that
setup.cfg allows: each satisfies its requirement and lies in the release series of its lower bound,
so a bound cannot move without the lowest environment (README, "Versions") moving with it."""

import configparser
import os

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from benchmarks.common import REPO_ROOT as ROOT


def _requirements():
    """{name: Requirement} of install_requires and the optional parts (not the test tools)."""
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    lines = config["options"]["install_requires"].splitlines()
    for extra in ("serving", "jax", "torch"):
        lines += config["options.extras_require"][extra].splitlines()
    requirements = [Requirement(line) for line in lines if line and not line.startswith("#")]
    return {canonicalize_name(r.name): r for r in requirements}


def _constraints():
    """{name: Version} pinned in tests/constraints-lowest.txt."""
    pins = {}
    with open(os.path.join(ROOT, "tests", "constraints-lowest.txt"), encoding="utf-8") as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line:
                name, version = line.split("==")
                pins[canonicalize_name(name)] = Version(version)
    return pins


def test_lowest_versions_are_setup_cfg_lower_bounds():
    requirements, pins = _requirements(), _constraints()
    bounded = {name: r for name, r in requirements.items()
               if any(spec.operator in (">=", "==") for spec in r.specifier)}
    assert {"keras", "tensorflow", "jax"} <= set(bounded)
    # Every pin of a package setup.cfg names satisfies it (bounded, capped or unbounded alike).
    for name, pin in pins.items():
        if name in requirements:
            assert requirements[name].specifier.contains(pin), (
                f"{name}=={pin} violates {requirements[name]}")
    for name, requirement in bounded.items():
        assert name in pins, f"tests/constraints-lowest.txt pins no version of {name}"
        lower = Version(next(spec.version for spec in requirement.specifier
                             if spec.operator in (">=", "==")))
        assert pins[name].release[:len(lower.release)] == lower.release, (
            f"{name}: the lowest tested version {pins[name]} is not in the release series of the "
            f"lower bound {lower}; test the bound (make test-lowest) or raise it")
