"""The project's set-up files agree with each other and with the design's pins."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + project["optional-dependencies"]["dev"]
    pins = {}
    for spec in specs:
        name, _, version = spec.partition("==")
        assert version, f"pyproject.toml: {spec!r} is not pinned with =="
        pins[name.strip().lower()] = version.strip()
    return pins


def _environment_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        match = re.match(r"^\s+-\s+([A-Za-z0-9_.\-]+)==(\S+)\s*$", line)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def test_environment_yml_mirrors_pyproject():
    assert _environment_pins() == _pyproject_pins()


def test_offline_capable_pins():
    pins = _pyproject_pins()
    assert pins["jupyter-book"] == "1.0.4.post1"  # JB 2 fetches its theme at build time
    assert pins["torch"] == "2.13.0"  # the CPU wheel; an unpinned torch pulls a CUDA build


def test_notebooks_committed_without_outputs_and_with_parameters():
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks, "no notebooks found"
    for path in notebooks:
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), path
        tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
        source = "".join(tagged[0]["source"])
        for name in ("data_dir", "build_dir", "seed", "profile"):
            assert re.search(rf"^{name}\s*=", source, re.M), (
                f"{path.name}: parameter {name} missing"
            )
        assert nb["metadata"]["kernelspec"]["name"] == "thirtymusic", path.name


def test_no_function_definitions_in_notebooks():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                source = "".join(cell["source"])
                assert not re.search(r"^\s*(def|class)\s", source, re.M), (
                    f"{path.name}: logic belongs in thirtymusic_utils, not in notebooks"
                )


def test_toc_lists_every_notebook():
    toc = (ROOT / "book" / "_toc.yml").read_text()
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        listed = f"file: {path.stem}" in toc or f"root: {path.stem}" in toc
        assert listed, f"{path.stem} is not in book/_toc.yml"
