"""A deterministic synthetic 30Music dataset, written in both on-disk forms (idomaar and CSV).

The generator stands in for the real data when a reader has no copy of 30Music. The ``default``
profile is calibrated against facts measured on real 30Music sessions (``REAL_FACTS``): how many
artists a user plays, how long sessions are and how many artists they hold, how concentrated plays
are on the head of the catalogue, and how hard the study's hold-out task is for most-popular and
for the study's user-kNN (HR@10). ``describe`` computes the same statistics on any data.

The model, in the order it draws:

* artists have a Zipf-like global popularity, weight ``(rank + offset) ** -zipf``, and belong to
  one latent taste community each (three placeholder artists belong to none);
* users have a long-tailed activity (1 + Poisson-gamma sessions), a primary and a secondary
  community and a personal list of favourite artists drawn from those communities and from global
  popularity, sharpened towards the head, with personal Zipf weights (repeat listening: play
  counts per user and artist are skewed);
* a session has a long-tailed length (log-normal with a heavier upper tail, partly a trait of the
  user); it plays runs of tracks by one artist ("album listening") and switches artist with a
  per-session probability that grows with the length (long sessions are shuffles), picking a
  favourite or, now and then, exploring a one-off artist drawn towards the tail;
* timestamps fall in 2014-01-20 .. 2015-01-20 with an evening peak and busier weekends;
* a track belongs to one artist, a few to two or three (a play counts for each of them);
* junk as in real Last.fm data: placeholder artists ("[unknown]", "Unknown Artist",
  "Various Artists") that get plays, duplicate person and track id lines (the second line differs;
  readers keep the first), plays of track ids missing from ``tracks.idomaar`` (dropped and
  counted by readers, so the CSV form omits them; a few sessions hold nothing else and have an
  empty ``ArtistsID``) and artist ids used by tracks but missing from the persons files.

``simulate`` builds the data in memory, ``write_dataset`` writes it, ``generate`` streams the
sessions to disk chunk by chunk in bounded memory (the ``full`` profile is the real scale: about
31M plays, 3.3 GB of ``sessions.idomaar``) and writes both forms atomically; both give
byte-identical files. ``plays_frame`` is what a reader of either form must return. Everything
follows from one ``seed``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote_plus

import numpy as np
import pandas as pd

__all__ = [
    "PROFILES",
    "REAL_FACTS",
    "SyntheticDataset",
    "SyntheticProfile",
    "describe",
    "generate",
    "plays_frame",
    "sessions_frame",
    "simulate",
    "write_dataset",
]

# 2014-01-20 00:00:00 UTC .. 2015-01-20 00:00:00 UTC, the span of the real sessions.
START_TIME = 1390176000
END_TIME = 1421712000
COMPLETE = "COMPLETE"
UNKNOWN_ARTIST_NAMES = ("[unknown]", "Unknown Artist", "Various Artists")
# popularity ranks (as shares of the catalogue) the placeholder artists take
UNKNOWN_ARTIST_RANKS = (0.0002, 0.003, 0.01)


@dataclass(frozen=True)
class SyntheticProfile:
    """Size and shape knobs of the generator (see ``PROFILES``)."""

    name: str
    n_users: int
    n_artists: int
    n_sessions: int  # target; the drawn total is within a fraction of a percent
    n_communities: int
    # global artist popularity: weight of popularity rank r (0-based) is (r + offset) ** -zipf
    artist_zipf: float = 1.0
    artist_zipf_offset: float = 75.0
    # favourites are drawn with popularity weights ** favourite_sharpness, one-off explorations
    # with weights ** explore_sharpness (favourites lean to the head, explorations to the tail)
    favourite_sharpness: float = 1.3
    explore_sharpness: float = 0.7
    community_share: float = 0.55  # a taste draw comes from the user's communities, else global
    second_community_share: float = 0.3  # of community draws, the share from the second one
    # personal favourites: list length ~ lognormal(median, sigma) * sessions ** activity_exp
    favourites_median: float = 30.0
    favourites_sigma: float = 0.8
    favourites_activity_exp: float = 0.5
    favourites_max: int = 2000
    favourite_zipf: float = 0.7  # personal weight of the user's r-th favourite: r ** -zipf
    explore_rate: float = 0.25  # share of artist picks that are not favourites
    # sessions per user: 1 + Poisson(gamma(sessions_shape)) scaled to the target mean
    sessions_shape: float = 0.5
    session_len_median: float = 8.0
    session_len_sigma: float = 0.76
    session_len_tail: float = 0.09  # log length += tail * max(z, 0) ** 2: a heavier upper tail
    session_len_user_share: float = 0.5  # share of the log-length variance due to the user
    # per-session probability to switch artist after a play: logistic(mean + sigma * z) where z
    # correlates with the session's (log) length: long sessions tend to be shuffles
    switch_logit_mean: float = -1.0
    switch_logit_sigma: float = 1.5
    switch_length_corr: float = 0.8
    tracks_per_artist: float = 3.0  # mean catalogue tracks per artist
    track_concentration: float = 2.0  # local track index = floor(n * U ** concentration)
    multi_artist_share: float = 0.03  # share of tracks with more than one artist
    n_duplicate_persons: int = 5
    n_duplicate_tracks: int = 5
    n_missing_persons: int = 3
    n_unknown_tracks: int = 20  # track ids that sessions play but tracks.idomaar lacks
    unknown_track_play_rate: float = 0.0005
    junk_session_rate: float = 0.001  # sessions whose plays are all unknown tracks
    chunk_users: int = 2048


PROFILES: dict[str, SyntheticProfile] = {
    # tests: a few hundred users, generated and written in well under a second
    "tiny": SyntheticProfile(
        name="tiny",
        n_users=300,
        n_artists=600,
        n_sessions=700,
        n_communities=4,
        community_share=0.7,
        artist_zipf_offset=5.0,
        chunk_users=128,
    ),
    # the book: calibrated against the real excerpt (REAL_FACTS); the whole book runs in minutes
    # (fewer, stronger taste communities and favourites more concentrated on the top few: this ranks
    # the calibration methods as the real excerpt does, binary user-kNN above iALS, which 60 weaker
    # communities and favourite_zipf 0.7 did not; the distributional facts stay within their bands)
    "default": SyntheticProfile(
        name="default",
        n_users=12000,
        n_artists=40000,
        n_sessions=25000,
        n_communities=25,
        community_share=0.7,
        favourite_zipf=1.2,
    ),
    # the real dataset's scale: 45,167 users, ~2.76M sessions, ~31M plays, 560,927 artists
    "full": SyntheticProfile(
        name="full",
        n_users=45167,
        n_artists=560927,
        n_sessions=2764474,
        n_communities=400,
        session_len_median=7.4,  # ~31.4M track plays in all, as the real 31,351,945
        tracks_per_artist=8.0,  # ~4.5M tracks, as the real 4,519,105
        # duplicate lines as many as in the real files (595,049 person lines for 560,927 ids,
        # 5,675,143 track lines for 4,519,105 ids)
        n_duplicate_persons=34122,
        n_duplicate_tracks=1156038,
        n_missing_persons=200,
        chunk_users=256,
    ),
}

# Facts measured on real 30Music sessions (a public 4,620-user, 9,519-session, ~118K-play,
# 10,355-artist excerpt), keyed as ``describe`` keys its statistics, plus the HR@10 of the
# study's protocol for several recommenders.
REAL_FACTS: dict[str, float] = {
    "n_users": 4620,
    "n_sessions": 9519,
    "n_plays": 118_000,
    "n_artists": 10355,
    "user_artists_median": 5,
    "user_artists_p75": 13,
    "user_artists_p90": 25,
    "user_artists_p99": 71,
    "share_users_over_10_artists": 0.30,
    "session_plays_median": 8,
    "session_plays_p90": 25,
    "session_plays_p99": 78,
    "session_artists_median": 3,
    "session_artists_p90": 13,
    "top_1pct_artist_share": 0.24,
    "top_10pct_artist_share": 0.69,
    "hr_at_10_popularity": 0.040,
    "hr_at_10_seed": 0.065,
    "hr_at_10_weighted": 0.074,
    "hr_at_10_binary_cosine_k100": 0.135,
    "hr_at_10_ease": 0.146,
    "hr_at_10_als": 0.117,
}


@dataclass
class SyntheticDataset:
    """A simulated dataset in memory: the catalogue, the sessions and the junk bookkeeping.

    Artists are listed in popularity order (``artist_ids[0]`` is the most popular), tracks grouped
    by their first artist. Track ``i`` has the artists
    ``track_artists[track_artist_offsets[i]:track_artist_offsets[i + 1]]`` (ids, first = main).
    Session ``s`` plays ``play_track_ids[session_offsets[s]:session_offsets[s + 1]]`` in order;
    ``play_times`` are seconds listened and ``play_ratios`` hundredths of the track's duration
    (-1 = null). Track ids listed in ``unknown_track_ids`` are absent from the tracks file.
    """

    profile: SyntheticProfile
    seed: int
    artist_ids: np.ndarray
    artist_names: np.ndarray
    artist_mbids: np.ndarray
    track_ids: np.ndarray
    track_artist_offsets: np.ndarray
    track_artists: np.ndarray
    track_durations: np.ndarray
    track_codes: np.ndarray
    session_ids: np.ndarray
    session_user_ids: np.ndarray
    session_timestamps: np.ndarray
    session_offsets: np.ndarray
    play_track_ids: np.ndarray
    play_times: np.ndarray
    play_ratios: np.ndarray
    unknown_artist_ids: np.ndarray
    duplicate_person_ids: np.ndarray
    duplicate_track_ids: np.ndarray
    missing_person_ids: np.ndarray
    unknown_track_ids: np.ndarray

    @property
    def n_sessions(self) -> int:
        return len(self.session_ids)

    @property
    def n_unknown_track_plays(self) -> int:
        """Plays of track ids that the tracks file lacks (readers drop and count them)."""
        return int(np.isin(self.play_track_ids, self.unknown_track_ids).sum())


# ----------------------------------------------------------------------------------------------
# names


_SYLLABLES = (
    "ka ra mo no li ta ve su dan mer bel cor fin gal hol jun kev lor mar nel "
    "ost pri que ros sam tor ul vin wex yor zan bri cla dre fla gro"
).split()
_WORDS = (
    "Love Night Fire Dream Heart Light Rain Sun Moon Stars River City Road Home Blue Red "
    "Black White Gold Silver Wild Lost Young Old Little Big Happy Sad Dark Bright Summer "
    "Winter Ocean Glass Paper Ghost Angel Devil Mirror Shadow Echo Storm Song Dance Time"
).split()
_ODD_WORDS = (
    "Don't",
    "Rock & Roll",
    "(Live)",
    "Café",
    "Niño",
    "Über",
    "Ça Va",
    "C+C",
    "It's",
    "L'Amour",
    "Mädchen",
    "Søn",
    "Любовь",
    "夜",
    "Σήμερα",
    "(Remix)",
    "100%",
    "Q&A",
    "Rock'n'Roll",
    "A/B",
)
_NON_LATIN = (
    "Мумий Тролль",
    "Кино",
    "Сплин",
    "きゃりーぱみゅぱみゅ",
    "東京事変",
    "Σωκράτης",
    "서태지",
    "מוניקה סקס",
    "ציון",
    "Ляпис Трубецкой",
)
_ACCENTS = {"a": "á", "e": "é", "o": "ö", "u": "ü", "n": "ñ", "i": "í"}


def _artist_name(code: int) -> str:
    """A deterministic artist name from a random code (odd characters included on purpose)."""
    n_syl = len(_SYLLABLES)
    style = code % 20
    code //= 20
    parts = []
    for _ in range(2 + code % 2):
        code //= 2
        syl = _SYLLABLES[code % n_syl] + _SYLLABLES[(code // n_syl) % n_syl]
        code //= n_syl * n_syl
        parts.append(syl.capitalize())
    first, last = parts[0], parts[1]
    if style == 0:
        return f"The {first} {last}s"
    if style == 1:
        return f"{first} & the {last}s"
    if style == 2:
        return f"{first[0]}'{last}"  # O'Brien
    if style == 3:
        return f"{first} {last} ({2000 + code % 15})"
    if style == 4:
        vowel = next((c for c in first if c in _ACCENTS), "")
        return f"{first.replace(vowel, _ACCENTS[vowel], 1) if vowel else first} {last}"
    if style == 5:
        return f"{first[0]}+{last[0]} {last}"
    if style == 6:
        return _NON_LATIN[code % len(_NON_LATIN)] + ("" if code % 3 == 0 else f" {last}")
    if style == 7:
        return f"DJ {first}"
    if style == 8:
        return f"{first}'s {last}"
    return " ".join(parts)


N_TITLES = 60_000  # distinct track titles (many real songs share a title too)


def _track_title(key: int) -> str:
    """A deterministic track title from a title key (0 <= key < N_TITLES)."""
    nw, no = len(_WORDS), len(_ODD_WORDS)
    n_words = 1 + key % 3
    words = []
    c = key // 3
    for _ in range(n_words):
        words.append(_WORDS[c % nw])
        c = c // nw + key
    if key % 4 == 0:
        words.insert(key % (n_words + 1), _ODD_WORDS[(key // 4) % no])
    return " ".join(words)


def _tags(key: int) -> str:
    """The linked tags JSON of a tag key: null, an empty list or up to three tags."""
    n_tags = key % 4
    if n_tags == 0 and key % 8 == 0:
        return "null"
    return (
        "["
        + ",".join(f'{{"type":"tag","id":{(key * (7 + t)) % 3001}}}' for t in range(n_tags))
        + "]"
    )


def _mbid(code: int) -> str:
    """A UUID-shaped MusicBrainz id from a code."""
    h = f"{(code * 0x9E3779B97F4A7C15_2545F4914F6CDD1D) % (1 << 128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# ----------------------------------------------------------------------------------------------
# simulation


@dataclass
class _Catalogue:
    """Everything drawn before the sessions: artists, tracks, users' tastes."""

    artist_ids: np.ndarray  # by popularity rank
    artist_names: np.ndarray
    artist_mbids: np.ndarray
    weights: np.ndarray  # global popularity weight by rank
    community: np.ndarray  # community of each artist (by rank)
    track_ids: np.ndarray  # tracks grouped by main artist rank
    track_first: np.ndarray  # first track index of each artist (n_artists + 1)
    track_artist_offsets: np.ndarray
    track_artists: np.ndarray  # artist ids
    track_durations: np.ndarray
    track_codes: np.ndarray
    unknown_artist_ids: np.ndarray
    duplicate_person_ids: np.ndarray
    duplicate_track_ids: np.ndarray
    missing_person_ids: np.ndarray
    unknown_track_ids: np.ndarray
    # users (index u has id u + 1)
    user_sessions: np.ndarray
    user_c1: np.ndarray
    user_c2: np.ndarray
    user_n_fav: np.ndarray
    session_ids: np.ndarray  # in the order sessions are generated


@dataclass
class _Sessions:
    """One chunk of sessions (the unit the writer streams)."""

    session_ids: np.ndarray
    user_ids: np.ndarray
    timestamps: np.ndarray
    offsets: np.ndarray  # starts at 0
    track_ids: np.ndarray
    play_times: np.ndarray
    play_ratios: np.ndarray


def _as_profile(profile: str | SyntheticProfile) -> SyntheticProfile:
    if isinstance(profile, SyntheticProfile):
        return profile
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: expected one of {sorted(PROFILES)}")
    return PROFILES[profile]


def _keyed_cumsum(group: np.ndarray, weights: np.ndarray, n_groups: int) -> np.ndarray:
    """Per-group normalised cumulative weights shifted by the group index (sorted by group).

    Searching ``g + U`` (U uniform in [0, 1)) in the result with ``side="right"`` draws an element
    of group ``g`` with probability proportional to its weight.
    """
    cs = np.cumsum(weights, dtype=np.float64)
    totals = np.bincount(group, weights=weights, minlength=n_groups)
    ends = np.cumsum(np.bincount(group, minlength=n_groups))
    before = np.concatenate([[0.0], np.cumsum(totals)[:-1]])
    norm = (cs - before[group]) / np.where(totals > 0, totals, 1.0)[group]
    norm[ends[ends > 0] - 1] = 1.0  # exact ends so that no draw spills into the next group
    return group + norm


def _draw_keyed(keys: np.ndarray, ends: np.ndarray, group: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Indices drawn in ``group`` (see ``_keyed_cumsum``); ``ends`` are the groups' ends."""
    idx = np.searchsorted(keys, group + u, side="right")
    return np.minimum(idx, ends[group] - 1)


def _catalogue(p: SyntheticProfile, rng: np.random.Generator) -> _Catalogue:
    """Draw artists, tracks and the users' tastes."""
    n_a = p.n_artists
    ranks = np.arange(n_a, dtype=np.float64)
    weights = (ranks + p.artist_zipf_offset) ** -p.artist_zipf
    artist_ids = rng.permutation(n_a).astype(np.int64)
    name_codes = rng.integers(0, 1 << 62, n_a)
    names = np.array([_artist_name(int(c)) for c in name_codes], dtype=object)
    unknown_rank = np.array([int(r * n_a) + i for i, r in enumerate(UNKNOWN_ARTIST_RANKS)])
    names[unknown_rank] = UNKNOWN_ARTIST_NAMES
    has_mbid = rng.random(n_a) < 0.6
    has_mbid[unknown_rank] = False
    mbids = np.array(
        [_mbid(int(c)) if m else None for c, m in zip(name_codes, has_mbid, strict=True)], object
    )
    community = rng.choice(
        p.n_communities, size=n_a, p=rng.dirichlet(np.full(p.n_communities, 2.0))
    )
    community[unknown_rank] = -1  # placeholders belong to no community: global draws only

    # tracks: main artist by rank; popular artists have more tracks
    rel = weights / weights.mean()
    lam = rel**0.5
    n_tracks = 1 + rng.poisson(np.minimum((p.tracks_per_artist - 1) * lam / lam.mean(), 2000))
    track_first = np.concatenate([[0], np.cumsum(n_tracks)]).astype(np.int64)
    n_t = int(track_first[-1])
    track_ids = rng.permutation(n_t).astype(np.int64)
    main_rank = np.repeat(np.arange(n_a), n_tracks)
    n_extra = np.where(
        rng.random(n_t) < p.multi_artist_share, 1 + (rng.random(n_t) < 0.25), 0
    ).astype(np.int64)
    extra_rank = rng.choice(n_a, size=int(n_extra.sum()), p=weights / weights.sum())
    # no artist twice on one track: compare each extra with the main artist and the first extra
    first_extra = np.repeat(np.cumsum(n_extra) - n_extra, n_extra)
    second = np.arange(len(extra_rank)) > first_extra
    main_of_extra = np.repeat(
        np.arange(n_a), np.bincount(main_rank, weights=n_extra, minlength=n_a).astype(np.int64)
    )
    while True:
        clash = (extra_rank == main_of_extra) | (second & (extra_rank == extra_rank[first_extra]))
        if not clash.any():
            break
        extra_rank[clash] = (extra_rank[clash] + 1) % n_a
    counts = 1 + n_extra
    track_artist_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    track_artists = np.empty(int(track_artist_offsets[-1]), dtype=np.int64)
    track_artists[track_artist_offsets[:-1]] = artist_ids[main_rank]
    extra_pos = np.repeat(track_artist_offsets[:-1], n_extra) + (
        np.arange(len(extra_rank)) - first_extra + 1
    )
    track_artists[extra_pos] = artist_ids[extra_rank]
    track_durations = np.clip(rng.lognormal(np.log(230.0), 0.35, n_t), 30, 1800).astype(np.int32)
    track_codes = rng.integers(0, 1 << 62, n_t)

    # junk bookkeeping
    played = np.arange(min(n_a, max(50, n_a // 10)))  # ranks that surely get plays
    candidates = np.setdiff1d(played, unknown_rank)
    dup_rank = rng.choice(candidates, p.n_duplicate_persons, replace=False)
    dup_persons = np.sort(artist_ids[dup_rank])
    # missing persons: played, but not among the most played
    rest = np.setdiff1d(candidates[len(candidates) // 2 :], dup_rank)
    missing = np.sort(artist_ids[rng.choice(rest, p.n_missing_persons, replace=False)])
    dup_tracks = np.sort(track_ids[rng.choice(n_t, p.n_duplicate_tracks, replace=False)])
    unknown_tracks = n_t + 1000 + np.arange(p.n_unknown_tracks, dtype=np.int64) * 7

    # users
    n_u = p.n_users
    x = rng.gamma(p.sessions_shape, 1.0, n_u)
    user_sessions = 1 + rng.poisson(max(p.n_sessions - n_u, 0) * x / x.sum())
    cw = np.bincount(community[community >= 0], weights=weights[community >= 0])
    cw = cw / cw.sum()
    user_c1 = rng.choice(len(cw), n_u, p=cw)
    user_c2 = rng.choice(len(cw), n_u, p=cw)
    n_fav = rng.lognormal(np.log(p.favourites_median), p.favourites_sigma, n_u)
    n_fav = n_fav * user_sessions**p.favourites_activity_exp
    user_n_fav = np.clip(np.round(n_fav), 1, p.favourites_max).astype(np.int64)
    session_ids = rng.permutation(int(user_sessions.sum())).astype(np.int64)
    return _Catalogue(
        artist_ids=artist_ids,
        artist_names=names,
        artist_mbids=mbids,
        weights=weights,
        community=community,
        track_ids=track_ids,
        track_first=track_first,
        track_artist_offsets=track_artist_offsets,
        track_artists=track_artists,
        track_durations=track_durations,
        track_codes=track_codes,
        unknown_artist_ids=artist_ids[unknown_rank],
        duplicate_person_ids=dup_persons,
        duplicate_track_ids=dup_tracks,
        missing_person_ids=missing,
        unknown_track_ids=unknown_tracks,
        user_sessions=user_sessions,
        user_c1=user_c1,
        user_c2=user_c2,
        user_n_fav=user_n_fav,
        session_ids=session_ids,
    )


_HOUR_WEIGHTS = np.array(
    [4, 3, 2, 1.5, 1, 1, 1.5, 3, 5, 6, 6, 6, 7, 7, 7, 7, 8, 9, 10, 11, 11, 10, 8, 6], dtype=float
)


def _session_chunks(
    cat: _Catalogue, p: SyntheticProfile, rng: np.random.Generator
) -> Iterator[_Sessions]:
    """Simulate the sessions, ``p.chunk_users`` users at a time."""
    n_a = len(cat.weights)
    n_c = int(cat.community.max()) + 1
    # community draws: artists sorted by community; favourites and explorations sharpen the
    # popularity weights differently
    in_comm = np.flatnonzero(cat.community >= 0)
    order = in_comm[np.argsort(cat.community[in_comm], kind="stable")]
    comm_sorted = cat.community[order]
    comm_ends = np.cumsum(np.bincount(comm_sorted, minlength=n_c))
    tables = {}
    for kind, power in [("fav", p.favourite_sharpness), ("explore", p.explore_sharpness)]:
        comm_keys = _keyed_cumsum(comm_sorted, cat.weights[order] ** power, n_c)
        global_cum = np.cumsum(cat.weights**power)
        tables[kind] = (comm_keys, global_cum / global_cum[-1])
    n_tracks = np.diff(cat.track_first)
    day_weights = np.array(
        [1.3 if d % 7 >= 5 else 1.0 for d in range((END_TIME - START_TIME) // 86400)]
    )  # 2014-01-20 is a Monday: d % 7 >= 5 marks Saturdays and Sundays
    day_weights /= day_weights.sum()
    hour_p = _HOUR_WEIGHTS / _HOUR_WEIGHTS.sum()
    first_session = np.concatenate([[0], np.cumsum(cat.user_sessions)])

    def taste(users: np.ndarray, kind: str) -> np.ndarray:
        """Artists (ranks) drawn from the users' communities or from global popularity."""
        comm_keys, global_cum = tables[kind]
        m = len(users)
        from_comm = rng.random(m) < p.community_share
        second = rng.random(m) < p.second_community_share
        comm = np.where(second, cat.user_c2[users], cat.user_c1[users])
        out = np.searchsorted(global_cum, rng.random(m), side="right")
        ci = np.flatnonzero(from_comm)
        if len(ci):
            idx = _draw_keyed(comm_keys, comm_ends, comm[ci], rng.random(len(ci)))
            out[ci] = order[idx]
        return np.minimum(out, n_a - 1)

    for u0 in range(0, p.n_users, p.chunk_users):
        users = np.arange(u0, min(u0 + p.chunk_users, p.n_users))
        n_u = len(users)
        # favourites: n_fav draws per user, personal Zipf weights by draw order
        nf = cat.user_n_fav[users]
        fav_owner = np.repeat(np.arange(n_u), nf)
        fav_start = np.concatenate([[0], np.cumsum(nf)])
        fav_rank = np.arange(len(fav_owner)) - fav_start[fav_owner] + 1
        fav_artist = taste(users[fav_owner], "fav")
        fav_keys = _keyed_cumsum(fav_owner, fav_rank**-p.favourite_zipf, n_u)
        fav_ends = fav_start[1:]

        # sessions of these users, their lengths and timestamps
        ns = cat.user_sessions[users]
        z_user = rng.standard_normal(n_u)
        s_user = np.repeat(np.arange(n_u), ns)
        n_s = len(s_user)
        days = rng.choice(len(day_weights), n_s, p=day_weights)
        hours = rng.choice(24, n_s, p=hour_p)
        ts = START_TIME + days * 86400 + hours * 3600 + rng.integers(0, 3600, n_s)
        ts_order = np.lexsort((ts, s_user))
        ts = ts[ts_order]
        f = p.session_len_user_share
        z_len = np.sqrt(f) * z_user[s_user] + np.sqrt(1 - f) * rng.standard_normal(n_s)
        length = np.maximum(
            1,
            np.round(
                p.session_len_median
                * np.exp(
                    p.session_len_sigma * z_len + p.session_len_tail * np.maximum(z_len, 0) ** 2
                )
            ),
        ).astype(np.int64)
        rho = p.switch_length_corr
        z_switch = rho * z_len + np.sqrt(1 - rho * rho) * rng.standard_normal(n_s)
        switch_p = 1 / (1 + np.exp(-(p.switch_logit_mean + p.switch_logit_sigma * z_switch)))
        offsets = np.concatenate([[0], np.cumsum(length)])
        n_p = int(offsets[-1])
        p_user = np.repeat(s_user, length)
        p_session = np.repeat(np.arange(n_s), length)
        new_seg = rng.random(n_p) < switch_p[p_session]
        new_seg[offsets[:-1]] = True
        seg_start = np.flatnonzero(new_seg)
        seg_user = p_user[seg_start]
        n_seg = len(seg_start)
        explore = rng.random(n_seg) < p.explore_rate
        seg_artist = fav_artist[_draw_keyed(fav_keys, fav_ends, seg_user, rng.random(n_seg))]
        ei = np.flatnonzero(explore)
        seg_artist[ei] = taste(users[seg_user[ei]], "explore")
        play_artist = seg_artist[np.cumsum(new_seg) - 1]
        # a track of the artist, the first ones more often
        local = np.floor(n_tracks[play_artist] * rng.random(n_p) ** p.track_concentration)
        track_idx = cat.track_first[play_artist] + np.minimum(
            local.astype(np.int64), n_tracks[play_artist] - 1
        )
        track_ids = cat.track_ids[track_idx]
        durations = cat.track_durations[track_idx].astype(np.float64)
        # junk: stray unknown tracks and whole sessions of them
        stray = rng.random(n_p) < p.unknown_track_play_rate
        junk_session = rng.random(n_s) < p.junk_session_rate
        stray |= junk_session[p_session]
        pick = rng.integers(0, len(cat.unknown_track_ids), n_p)
        track_ids = np.where(stray, cat.unknown_track_ids[pick], track_ids)
        # listening: most plays run to the end, some are skipped, a few ratios are unknown
        skipped = rng.random(n_p) < 0.2
        ratio = np.where(skipped, rng.uniform(0.03, 0.8, n_p), rng.uniform(0.95, 1.03, n_p))
        play_times = np.maximum(1, np.round(durations * ratio)).astype(np.int64)
        play_ratios = np.round(ratio * 100).astype(np.int64)
        play_ratios[rng.random(n_p) < 0.12] = -1
        g0 = first_session[u0]
        yield _Sessions(
            session_ids=cat.session_ids[g0 : g0 + n_s],
            user_ids=(users[s_user] + 1).astype(np.int64),
            timestamps=ts.astype(np.int64),
            offsets=offsets.astype(np.int64),
            track_ids=track_ids.astype(np.int64),
            play_times=play_times,
            play_ratios=play_ratios,
        )


def simulate(profile: str | SyntheticProfile = "default", seed: int = 0) -> SyntheticDataset:
    """Simulate a dataset in memory (deterministic in ``profile`` and ``seed``)."""
    p = _as_profile(profile)
    rng = np.random.default_rng(seed)
    cat = _catalogue(p, rng)
    chunks = list(_session_chunks(cat, p, rng))
    offsets = [np.zeros(1, dtype=np.int64)]
    base = 0
    for c in chunks:
        offsets.append(c.offsets[1:] + base)
        base += int(c.offsets[-1])
    return SyntheticDataset(
        profile=p,
        seed=seed,
        artist_ids=cat.artist_ids,
        artist_names=cat.artist_names,
        artist_mbids=cat.artist_mbids,
        track_ids=cat.track_ids,
        track_artist_offsets=cat.track_artist_offsets,
        track_artists=cat.track_artists,
        track_durations=cat.track_durations,
        track_codes=cat.track_codes,
        session_ids=np.concatenate([c.session_ids for c in chunks]),
        session_user_ids=np.concatenate([c.user_ids for c in chunks]),
        session_timestamps=np.concatenate([c.timestamps for c in chunks]),
        session_offsets=np.concatenate(offsets),
        play_track_ids=np.concatenate([c.track_ids for c in chunks]),
        play_times=np.concatenate([c.play_times for c in chunks]),
        play_ratios=np.concatenate([c.play_ratios for c in chunks]),
        unknown_artist_ids=cat.unknown_artist_ids,
        duplicate_person_ids=cat.duplicate_person_ids,
        duplicate_track_ids=cat.duplicate_track_ids,
        missing_person_ids=cat.missing_person_ids,
        unknown_track_ids=cat.unknown_track_ids,
    )


def _chunks_of(ds: SyntheticDataset, max_plays: int = 1_000_000) -> Iterator[_Sessions]:
    """Cut an in-memory dataset back into session chunks of bounded size."""
    off = ds.session_offsets
    s0 = 0
    while s0 < ds.n_sessions:
        s1 = int(np.searchsorted(off, off[s0] + max_plays, side="right")) - 1
        s1 = min(max(s1, s0 + 1), ds.n_sessions)
        a, b = int(off[s0]), int(off[s1])
        yield _Sessions(
            session_ids=ds.session_ids[s0:s1],
            user_ids=ds.session_user_ids[s0:s1],
            timestamps=ds.session_timestamps[s0:s1],
            offsets=off[s0 : s1 + 1] - a,
            track_ids=ds.play_track_ids[a:b],
            play_times=ds.play_times[a:b],
            play_ratios=ds.play_ratios[a:b],
        )
        s0 = s1


# ----------------------------------------------------------------------------------------------
# writing


class _TrackIndex:
    """Maps track ids to catalogue positions (-1 for ids the catalogue lacks)."""

    def __init__(self, track_ids: np.ndarray) -> None:
        self.order = np.argsort(track_ids, kind="stable")
        self.sorted = track_ids[self.order]

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.sorted, ids)
        pos_c = np.minimum(pos, len(self.sorted) - 1)
        ok = (pos < len(self.sorted)) & (self.sorted[pos_c] == ids)
        return np.where(ok, self.order[pos_c], -1)


def _play_artists(
    track_pos: np.ndarray, track_artist_offsets: np.ndarray, track_artists: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Expand plays into (play index, artist id) pairs, one per artist; unknown tracks give none."""
    known = track_pos >= 0
    n_art = np.where(known, np.diff(track_artist_offsets)[np.maximum(track_pos, 0)], 0)
    play = np.repeat(np.arange(len(track_pos)), n_art)
    first = np.repeat(np.cumsum(n_art) - n_art, n_art)
    within = np.arange(len(play)) - first
    artists = track_artists[track_artist_offsets[track_pos[play]] + within]
    return play, artists


_RATIO_TEXT = {r: f"{r // 100}.{r % 100:02d}" for r in range(0, 1000)} | {-1: "null"}


class _Writer:
    """Writes both forms into ``out``: sessions streamed chunk by chunk, then the entities."""

    def __init__(self, out: Path, catalogue: _Catalogue | SyntheticDataset) -> None:
        self.out = out
        self.cat = catalogue
        (out / "entities").mkdir(parents=True, exist_ok=True)
        (out / "relations").mkdir(parents=True, exist_ok=True)
        self.idomaar = open(out / "relations" / "sessions.idomaar", "w", encoding="utf-8")
        self.csv = open(out / "relations" / "sessions_short.csv", "w", encoding="utf-8")
        self.csv.write("ID;UserId;Type;Timestamp;ArtistsID\n")
        self.index = _TrackIndex(catalogue.track_ids)
        self.track_plays = np.zeros(len(catalogue.track_ids), dtype=np.int64)
        self.n_sessions = 0
        self.n_plays = 0
        self.n_unknown = 0
        self.quoted = dict(
            zip(
                catalogue.artist_ids.tolist(),
                map(quote_plus, catalogue.artist_names.tolist()),
                strict=True,
            )
        )

    def sessions(self, c: _Sessions) -> None:
        """Append one chunk of sessions to both session files."""
        pos = self.index(c.track_ids)
        known = pos >= 0
        self.track_plays += np.bincount(pos[known], minlength=len(self.track_plays))
        self.n_sessions += len(c.session_ids)
        self.n_plays += len(pos)
        self.n_unknown += int((~known).sum())
        off = c.offsets
        starts = np.zeros(len(pos), dtype=np.int64)
        cum = np.cumsum(c.play_times)
        starts[1:] = cum[:-1]
        starts -= np.repeat(starts[off[:-1]], np.diff(off))
        ratio_text = [_RATIO_TEXT[r] for r in c.play_ratios.tolist()]
        objects = [
            f'{{"type":"track","id":{t},"playstart":{s},"playtime":{d},"playratio":{r},'
            f'"action":"play"}}'
            for t, s, d, r in zip(
                c.track_ids.tolist(),
                starts.tolist(),
                c.play_times.tolist(),
                ratio_text,
                strict=True,
            )
        ]
        for i in (off[1:] - 1).tolist():  # the last object of a session: playtime -1, action null
            objects[i] = objects[i].replace(f'"playtime":{c.play_times[i]},', '"playtime":-1,', 1)
            objects[i] = objects[i][: -len('"play"}')] + "null}"
        play, artists = _play_artists(pos, self.cat.track_artist_offsets, self.cat.track_artists)
        art_text = list(map(str, artists.tolist()))
        art_off = np.searchsorted(play, off).tolist()
        lines_i, lines_c = [], []
        offl = off.tolist()
        for k, (sid, uid, ts) in enumerate(
            zip(c.session_ids.tolist(), c.user_ids.tolist(), c.timestamps.tolist(), strict=True)
        ):
            a, b = offl[k], offl[k + 1]
            total = starts[b - 1] if b > a else 0
            lines_i.append(
                f'event.session\t{sid}\t{ts}\t{{"numtracks":{b - a},"playtime":{total}}} '
                f'{{"subjects":[{{"type":"user","id":{uid}}}],"objects":[{",".join(objects[a:b])}]}}\n'
            )
            lines_c.append(
                f"{sid};{uid};event.session;{ts};{','.join(art_text[art_off[k] : art_off[k + 1]])}\n"
            )
        self.idomaar.write("".join(lines_i))
        self.csv.write("".join(lines_c))

    def _persons(self) -> None:
        cat = self.cat
        missing = set(cat.missing_person_ids.tolist())
        order = np.argsort(cat.artist_ids, kind="stable")
        sorted_ids = cat.artist_ids[order]
        ids = sorted_ids.tolist()
        names = cat.artist_names[order].tolist()
        quoted = [self.quoted[a] for a in ids]
        mbids = cat.artist_mbids[order].tolist()
        dup_at = _later_positions(cat.artist_ids[order], cat.duplicate_person_ids)
        lines_i, lines_c = [], []
        for k, (aid, q, mbid) in enumerate(zip(ids, quoted, mbids, strict=True)):
            if aid not in missing:
                m = "null" if mbid is None else f'"{mbid}"'
                lines_i.append(f'person\t{aid}\t-1\t{{"MBID":{m}, "name":"{q}"}}\t{{}}\n')
                lines_c.append(f"{aid};{q}\n")
            for dup in dup_at.get(k, ()):  # a second, different line for an id seen before
                q = quote_plus(_variant(names[int(np.searchsorted(sorted_ids, dup))]))
                lines_i.append(f'person\t{dup}\t-1\t{{"MBID":null, "name":"{q}"}}\t{{}}\n')
                lines_c.append(f"{dup};{q}\n")
        with open(self.out / "entities" / "persons.idomaar", "w", encoding="utf-8") as f:
            f.write("".join(lines_i))
        with open(self.out / "entities" / "persons.csv", "w", encoding="utf-8") as f:
            f.write("ID;Name\n" + "".join(lines_c))

    def _tracks(self, block: int = 100_000) -> None:
        cat = self.cat
        quoted = self.quoted
        order = np.argsort(cat.track_ids, kind="stable")
        sorted_ids = cat.track_ids[order]
        dup_at = _later_positions(sorted_ids, cat.duplicate_track_ids)
        off, arts = cat.track_artist_offsets, cat.track_artists
        titles: dict[int, str] = {}
        tags: dict[int, str] = {}
        with open(self.out / "entities" / "tracks.idomaar", "w", encoding="utf-8") as f:
            for b0 in range(0, len(order), block):
                idx = order[b0 : b0 + block]
                lines = self._track_lines(idx, quoted, titles, tags)
                after = [k for k in range(b0, b0 + len(idx)) for _ in dup_at.get(k, ())]
                dups = [d for k in range(b0, b0 + len(idx)) for d in dup_at.get(k, ())]
                if dups:
                    # a second, different line for an id seen before: another title, another
                    # artist (that of the line it follows), no playcount
                    j = order[np.searchsorted(sorted_ids, dups)]
                    extra = self._track_lines(j, quoted, titles, tags, duplicate=True)
                    for n, (line, k) in enumerate(zip(extra, after, strict=True)):
                        own = f'"artists":[{{"type":"person","id":{int(arts[off[j[n]]])}}}'
                        other = f'"artists":[{{"type":"person","id":{int(arts[off[order[k]]])}}}'
                        extra[n] = line.replace(own, other, 1)
                    keys = np.concatenate(
                        [2 * np.arange(len(lines)), 2 * (np.array(after) - b0) + 1]
                    )
                    both = lines + extra
                    lines = [both[i] for i in np.argsort(keys, kind="stable").tolist()]
                f.write("".join(lines))

    def _track_lines(
        self,
        idx: np.ndarray,
        quoted: dict[int, str],
        titles: dict[int, str],
        tags: dict[int, str],
        duplicate: bool = False,
    ) -> list[str]:
        """The tracks.idomaar lines of catalogue tracks ``idx`` (properties derived from codes)."""
        cat = self.cat
        codes = cat.track_codes[idx]
        off = cat.track_artist_offsets
        duration = np.where((codes >> 40) % 10 < 6, cat.track_durations[idx], -1).tolist()
        plays = (np.zeros(len(idx), np.int64) if duplicate else self.track_plays[idx]).tolist()
        ids = cat.track_ids[idx].tolist()
        starts, ends = off[idx], off[idx + 1]
        mains = cat.track_artists[starts].tolist()
        multi = set(np.flatnonzero(ends - starts > 1).tolist())
        title_keys = (codes % N_TITLES).tolist()
        tag_keys = ((codes >> 20) % 4096).tolist()
        with_mbid = ((codes >> 44) % 10 < 2).tolist()
        no_album = ((codes >> 48) % 10 == 0).tolist()
        albums = (codes % 499_979).tolist()
        out = []
        for k, code in enumerate(codes.tolist()):
            title = titles.get(title_keys[k])
            if title is None:
                title = titles[title_keys[k]] = quote_plus(_track_title(title_keys[k]))
            if duplicate:
                title = quote_plus(_variant(_track_title(title_keys[k])))
            mbid = f'"{_mbid(code)}"' if with_mbid[k] and not duplicate else "null"
            album = "null" if no_album[k] else f'[{{"type":"album","id":{albums[k]}}}]'
            tag = tags.get(tag_keys[k])
            if tag is None:
                tag = tags[tag_keys[k]] = _tags(tag_keys[k])
            if k in multi:
                art = ",".join(
                    f'{{"type":"person","id":{a}}}'
                    for a in cat.track_artists[starts[k] : ends[k]].tolist()
                )
            else:
                art = f'{{"type":"person","id":{mains[k]}}}'
            out.append(
                f'track\t{ids[k]}\t-1\t{{"duration":{duration[k]},"playcount":{plays[k]},'
                f'"MBID":{mbid},"name":"{quoted[mains[k]]}/_/{title}"}}\t'
                f'{{"artists":[{art}],"albums":{album},"tags":{tag}}}\n'
            )
        return out

    def close(self) -> None:
        """Close the session files."""
        self.idomaar.close()
        self.csv.close()

    def finish(self, profile: str, seed: int) -> None:
        """Close the session files, write the entities and, last, the COMPLETE marker."""
        self.close()
        self._persons()
        self._tracks()
        marker = (
            f'{{"profile": "{profile}", "seed": {seed}, "n_sessions": {self.n_sessions}, '
            f'"n_track_plays": {self.n_plays}, "n_unknown_track_plays": {self.n_unknown}}}\n'
        )
        (self.out / COMPLETE).write_text(marker)


def _later_positions(sorted_ids: np.ndarray, dup_ids: np.ndarray) -> dict[int, list[int]]:
    """Where to write the second line of each duplicated id: a few lines after its first one."""
    out: dict[int, list[int]] = {}
    n = len(sorted_ids)
    for d in dup_ids.tolist():
        k = int(np.searchsorted(sorted_ids, d))
        out.setdefault(min(n - 1, k + 1 + (d * 7919) % 997), []).append(d)
    return out


def _variant(name: str) -> str:
    """A visibly different spelling of a name, for the second line of a duplicated id."""
    upper = name.upper()
    return upper if upper != name else name + " (2)"


def write_dataset(ds: SyntheticDataset, out_dir: str | Path, *, progress: bool = False) -> Path:
    """Write ``ds`` in both forms into ``out_dir``; the ``COMPLETE`` marker is written last."""
    from tqdm import tqdm

    out = Path(out_dir)
    writer = _Writer(out, ds)
    n_chunks = max(1, int(np.ceil(len(ds.play_track_ids) / 1_000_000)))
    try:
        for chunk in tqdm(_chunks_of(ds), total=n_chunks, disable=not progress, desc="sessions"):
            writer.sessions(chunk)
        writer.finish(ds.profile.name, ds.seed)
    finally:
        writer.close()
    return out


def generate(
    out_dir: str | Path,
    profile: str | SyntheticProfile = "default",
    seed: int = 0,
    *,
    progress: bool = False,
) -> Path:
    """Simulate and write a dataset, streaming the sessions in bounded memory, atomically.

    Writes into ``<out_dir>.tmp`` and renames it to ``out_dir`` at the end; returns at once when
    ``out_dir/COMPLETE`` already exists. The files are byte-identical to
    ``write_dataset(simulate(profile, seed), ...)``.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    if (out / COMPLETE).exists():
        return out
    p = _as_profile(profile)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    rng = np.random.default_rng(seed)
    cat = _catalogue(p, rng)
    writer = _Writer(tmp, cat)
    n_chunks = -(-p.n_users // p.chunk_users)
    try:
        for chunk in tqdm(
            _session_chunks(cat, p, rng), total=n_chunks, disable=not progress, desc="sessions"
        ):
            writer.sessions(chunk)
        writer.finish(p.name, seed)
    except BaseException:
        writer.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


# ----------------------------------------------------------------------------------------------
# frames and statistics


def plays_frame(ds: SyntheticDataset) -> pd.DataFrame:
    """Plays per user and artist (int64 ``user_id, artist_id, plays``), sorted by user and artist.

    Exactly what a reader of the written files returns: plays of unknown tracks are dropped and a
    play of a multi-artist track counts once for each of its artists.
    """
    pos = _TrackIndex(ds.track_ids)(ds.play_track_ids)
    play, artists = _play_artists(pos, ds.track_artist_offsets, ds.track_artists)
    session = np.repeat(np.arange(ds.n_sessions), np.diff(ds.session_offsets))
    users = ds.session_user_ids[session[play]]
    width = int(artists.max()) + 1 if len(artists) else 1
    keys, counts = np.unique(users * width + artists, return_counts=True)
    return pd.DataFrame(
        {
            "user_id": (keys // width).astype(np.int64),
            "artist_id": (keys % width).astype(np.int64),
            "plays": counts.astype(np.int64),
        }
    )


def sessions_frame(ds: SyntheticDataset) -> pd.DataFrame:
    """One row per session: ``session_id, user_id, timestamp, n_plays, n_artists``.

    ``n_plays`` counts artist entries (one per artist of each known track played, as in the CSV
    ``ArtistsID`` list), ``n_artists`` the distinct artists among them.
    """
    pos = _TrackIndex(ds.track_ids)(ds.play_track_ids)
    play, artists = _play_artists(pos, ds.track_artist_offsets, ds.track_artists)
    session = np.repeat(np.arange(ds.n_sessions), np.diff(ds.session_offsets))[play]
    n_plays = np.bincount(session, minlength=ds.n_sessions)
    width = int(artists.max()) + 1 if len(artists) else 1
    distinct = np.unique(session * width + artists) // width
    return pd.DataFrame(
        {
            "session_id": ds.session_ids.astype(np.int64),
            "user_id": ds.session_user_ids.astype(np.int64),
            "timestamp": ds.session_timestamps.astype(np.int64),
            "n_plays": n_plays.astype(np.int64),
            "n_artists": np.bincount(distinct, minlength=ds.n_sessions).astype(np.int64),
        }
    )


def describe(plays: pd.DataFrame, sessions: pd.DataFrame | None = None) -> dict[str, float]:
    """The calibration statistics (keys as in ``REAL_FACTS``) of any plays and sessions frames.

    ``plays`` has ``user_id, artist_id, plays``; ``sessions`` (optional) has ``n_plays`` and
    ``n_artists`` per session (``sessions_frame``, or a reader's per-session frame; every row
    counts, empty sessions included). Percentiles interpolate linearly (``np.percentile``); the
    top p% of artists are the ``ceil(p% * n_artists)`` artists with the most plays.
    """
    missing = {"user_id", "artist_id", "plays"} - set(plays.columns)
    if missing:
        raise ValueError(f"plays lacks columns {sorted(missing)}")
    per_user = plays.groupby("user_id").size().to_numpy()
    per_artist = np.sort(plays.groupby("artist_id")["plays"].sum().to_numpy())[::-1]
    total = per_artist.sum()
    out: dict[str, float] = {
        "n_users": float(len(per_user)),
        "n_plays": float(total),
        "n_artists": float(len(per_artist)),
    }
    for key, q in [("median", 50), ("p75", 75), ("p90", 90), ("p99", 99)]:
        out[f"user_artists_{key}"] = float(np.percentile(per_user, q))
    out["share_users_over_10_artists"] = float(np.mean(per_user > 10))
    for key, frac in [("top_1pct_artist_share", 0.01), ("top_10pct_artist_share", 0.10)]:
        k = int(np.ceil(frac * len(per_artist)))
        out[key] = float(per_artist[:k].sum() / total) if total else float("nan")
    if sessions is not None:
        missing = {"n_plays", "n_artists"} - set(sessions.columns)
        if missing:
            raise ValueError(f"sessions lacks columns {sorted(missing)}")
        out["n_sessions"] = float(len(sessions))
        n_plays = sessions["n_plays"].to_numpy()
        n_art = sessions["n_artists"].to_numpy()
        for key, q in [("median", 50), ("p90", 90), ("p99", 99)]:
            out[f"session_plays_{key}"] = float(np.percentile(n_plays, q))
        for key, q in [("median", 50), ("p90", 90)]:
            out[f"session_artists_{key}"] = float(np.percentile(n_art, q))
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m thirtymusic_utils.data.synthetic --profile default --out DIR``."""
    parser = argparse.ArgumentParser(description="Generate a synthetic 30Music dataset.")
    parser.add_argument("--profile", default="default", choices=sorted(PROFILES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output folder (both forms)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    out = generate(args.out, args.profile, args.seed, progress=args.progress)
    print(f"{out} ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
