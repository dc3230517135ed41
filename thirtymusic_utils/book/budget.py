"""Which run budget a build uses: the profile asked for, or ``full`` for a user's data at 30Music's scale.

A profile is two things: the size of the synthetic stand-in, and the budget of the runs on it (chapter
02's tie orders, chapter 03's grids and validation users, chapter 05's epochs and embedding sizes). On a
user's own folder only the budget matters, and the ``default`` budget, sized for 12,000 users, would
take many hours on a whole 30Music copy (45,167 users, 560K artists). So a user's folder of more than
:data:`SCALE_USERS` users read with the ``default`` profile runs on the ``full`` budget, whose whole book
ran in under an hour on 2 cores at that size (54 minutes on the slower host measured); every page's
banner says so. ``tiny`` and ``full`` asked for explicitly are kept, and the synthetic stand-in always
runs on its own profile's budget.

Chapter 01 decides (:func:`run_profile`) and records it as ``run_profile``; later chapters read it back
with :func:`budget_profile`.
"""

from __future__ import annotations

import os

from .paths import load_results

__all__ = ["SCALE_USERS", "budget_profile", "run_profile"]

#: users above which a user-supplied folder read with the ``default`` profile runs on the ``full`` budget
#: (the default stand-in has 12,000 users; chapter 01's calibration check stops at the same size)
SCALE_USERS = 15_000


def run_profile(profile: str, n_users: int, user_data: bool) -> str:
    """The budget to run: ``full`` for a user's folder of more than :data:`SCALE_USERS` users read
    with the ``default`` profile, else ``profile`` itself."""
    if user_data and profile == "default" and n_users > SCALE_USERS:
        return "full"
    return profile


def budget_profile(build_dir: str | os.PathLike | None, profile: str) -> str:
    """The budget chapter 01 chose for this build (its ``run_profile``), for the profile parameter.

    A chapter 01 result without the key (an older build) means ``profile`` itself. A recorded
    ``profile_asked`` that differs from ``profile`` means chapter 01 ran with other parameters: that is
    an error naming both, not a silent mix of budgets.
    """
    facts = load_results(build_dir, "01_user_artist_matrix")
    asked = facts.get("profile_asked", profile)
    if asked != profile:
        raise ValueError(
            f"chapter 01 of this build ran with profile {asked!r}, this chapter with {profile!r}: "
            "re-run the notebooks in order with one profile (make book does)"
        )
    return str(facts.get("run_profile", profile))
