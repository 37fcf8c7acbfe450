"""pyproject.toml, environment.yml and binder/environment.yml must list the same packages."""

import re
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]

# conda-forge names that differ from the PyPI names used in pyproject.toml
CONDA_TO_PYPI = {"pytorch": "torch", "pytorch-cpu": "torch", "matplotlib-base": "matplotlib"}
NOT_PACKAGES = {"python", "pip"}


def _name(spec: str) -> str:
    """'scikit-learn>=1.3' -> 'scikit-learn'; 'umap_learn' -> 'umap-learn'."""
    name = re.split(r"[\s<>=!~\[;]", spec.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_names() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_name(spec) for spec in project["dependencies"]}


def conda_env_names(path: Path) -> set[str]:
    env = yaml.safe_load(path.read_text())
    names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):  # the pip: section
            names |= {_name(s) for s in dep["pip"] if not s.startswith(("-", "."))}
        else:
            name = _name(dep)
            names.add(CONDA_TO_PYPI.get(name, name))
    return names - NOT_PACKAGES


def test_name_normalisation():
    assert _name("scikit-learn>=1.3") == "scikit-learn"
    assert _name("umap_learn") == "umap-learn"
    assert _name("torch ==2.13.0") == "torch"
    assert _name("nbval[extra]>=0.11") == "nbval"


@pytest.mark.parametrize("env_file", ["environment.yml", "binder/environment.yml"])
def test_environment_file_agrees_with_pyproject(env_file):
    declared = pyproject_names()
    listed = conda_env_names(ROOT / env_file)
    assert listed - declared == set(), f"{env_file} lists packages missing from pyproject.toml"
    assert declared - listed == set(), f"{env_file} misses packages declared in pyproject.toml"


def test_core_dependencies_are_declared():
    core = {"torch", "torchio", "nilearn", "nibabel", "umap-learn", "matplotlib", "ipywidgets"}
    assert core | {"jupyterlab"} <= pyproject_names()


def test_binder_installs_cpu_torch():
    text = (ROOT / "binder/environment.yml").read_text()
    assert "download.pytorch.org/whl/cpu" in text, "Binder must not pull a multi-GB CUDA torch"
