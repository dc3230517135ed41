"""The run budget: a user's folder at 30Music's scale read with ``default`` runs on the ``full`` budget."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from hypothesis import given
from hypothesis import strategies as st

from thirtymusic_utils.book.budget import SCALE_USERS, budget_profile, run_profile
from thirtymusic_utils.book.paths import save_results
from thirtymusic_utils.data.synthetic import PROFILES
from thirtymusic_utils.models import baselines
from thirtymusic_utils.models.training import TRAIN_PROFILES

CH01 = "01_user_artist_matrix"
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def test_a_whole_30music_copy_read_with_default_runs_on_the_full_budget():
    assert run_profile("default", PROFILES["full"].n_users, user_data=True) == "full"
    # the synthetic stand-in always runs on its own profile's budget, whatever its size
    assert run_profile("default", PROFILES["full"].n_users, user_data=False) == "default"
    # the real excerpt, HetRec and the default stand-in's size keep the default budget
    for users in (1892, 4620, PROFILES["default"].n_users, SCALE_USERS):
        assert run_profile("default", users, user_data=True) == "default"
    assert PROFILES["default"].n_users <= SCALE_USERS < PROFILES["full"].n_users


@given(
    profile=st.sampled_from(["tiny", "default", "full"]),
    users=st.integers(0, 200_000),
    user_data=st.booleans(),
)
def test_run_profile_only_ever_scales_default_up_and_names_a_known_budget(
    profile, users, user_data
):
    run = run_profile(profile, users, user_data)
    assert run in TRAIN_PROFILES and run in baselines.GRIDS  # a budget every chapter knows
    if run != profile:
        assert (profile, run) == ("default", "full") and user_data and users > SCALE_USERS


def test_later_chapters_read_the_budget_chapter_01_chose(tmp_path):
    save_results(tmp_path, CH01, {"profile_asked": "default", "run_profile": "full"})
    assert budget_profile(tmp_path, "default") == "full"
    with pytest.raises(ValueError, match="chapter 01 of this build ran with profile 'default'"):
        budget_profile(tmp_path, "tiny")
    older = tmp_path / "older"
    save_results(older, CH01, {"n_users": 10})  # a chapter 01 result from before the budget keys
    assert budget_profile(older, "tiny") == "tiny"
    with pytest.raises(FileNotFoundError, match="01_user_artist_matrix"):
        budget_profile(tmp_path / "empty", "default")


def _code_lines(notebook: Path) -> list[str]:
    """The code lines of a notebook's cells after its parameters cell, in order."""
    cells = nbformat.read(notebook, as_version=4).cells
    return [
        line
        for cell in cells
        if cell.cell_type == "code" and "parameters" not in cell.metadata.get("tags", [])
        for line in cell.source.splitlines()
    ]


@pytest.mark.parametrize(
    "notebook", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb") if not p.name.startswith("01_"))
)
def test_a_chapter_that_uses_the_profile_reads_chapter_01s_budget_first(notebook):
    lines = _code_lines(NOTEBOOKS / notebook)
    uses = [
        i
        for i, line in enumerate(lines)
        if re.search(r"\bprofile\b", line.split("#")[0]) and "import" not in line
    ]
    if not uses:
        return  # the chapter's budget does not depend on the profile
    first = lines[uses[0]]
    assert first.strip() == "profile = budget_profile(build_dir, profile)", (notebook, first)
