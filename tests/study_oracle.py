"""A literal transcription of the study's notebook cells (``../shared/study/study_notebook.txt``).

The oracle the tests hold ``thirtymusic_utils.study`` against, on small data: pandas and
scikit-learn, dense, as the study wrote it. Cells transcribed:

* ``In [24]`` the per-user ``Counter`` of artists, ``In [25]`` the ``json_normalize`` matrix,
  ``In [26]`` the indexes;
* ``In [27]`` ``select_test`` (the split), ``In [28]`` MinMax scaling and cosine similarity,
  ``In [29]`` ``find_n_neighbours``, ``In [30]`` ``recommend_to_user``, ``In [31]`` ``test_CF_model``,
  ``In [32]`` the kNN subsamples of the t-test;
* ``In [15]`` ``create_sample`` (the embedding sample), ``In [20]`` the 1% slice, ``In [21]`` decoding
  ids, ``In [23]``/``In [24]`` ``Dataset.get_posisve_samples_idx`` and ``split_data``, ``In [26]``
  ``array_to_dict``, ``In [28]`` ``validate``.

Only changes needed to run, or to make an order the study left to chance deterministic, each marked
``# CHANGE:``. The rules match those stated in ``thirtymusic_utils.study.cf``:

* every ``sort_values`` / ``argsort`` is stable (the study's quicksort was not, on ties);
* the candidate artists of ``recommend_to_user`` keep column order (the study iterated a ``set`` of
  strings, whose order varies between Python processes);
* the ``random`` module is seeded once, before ``In [27]``.
"""

from __future__ import annotations

import random
from collections import Counter
from itertools import chain

import numpy as np
import pandas as pd
from pandas import json_normalize  # CHANGE: pandas.io.json.json_normalize moved to pandas
from sklearn.metrics.pairwise import cosine_similarity
from sklearn.preprocessing import MinMaxScaler

# --------------------------------------------------------------------------------------------------
# In [24], In [25], In [26]: the matrix


def cell_24(sessions: pd.DataFrame) -> pd.DataFrame:
    """``g``: one row per user (id order), ``ArtistsID`` a Counter of the user's artist plays."""
    s = sessions.sort_values(by="UserId", kind="stable")  # CHANGE: stable (file order of sessions)
    s.drop(columns=["Type", "Timestamp", "ID"], inplace=True)
    s.set_index("UserId", inplace=True)
    g = (
        s.groupby(["UserId"])["ArtistsID"]
        .apply(lambda x: [a.split(",") for a in x.tolist() if not pd.isna(a)])
        .reset_index()
    )
    g["ArtistsID"] = g["ArtistsID"].apply(lambda x: Counter(list(chain(*x))))
    return g


def hetrec_g(user_artists: pd.DataFrame) -> pd.DataFrame:
    """CHANGE: HetRec has no sessions: ``g`` built from ``user_artists.dat``, each user's Counter in
    file order (the same dictionary ``In [24]`` makes from sessions listing those plays)."""
    rows = []
    for user, part in user_artists.groupby("userID", sort=True):
        rows.append(
            {
                "UserId": user,
                "ArtistsID": Counter(
                    dict(zip(part["artistID"].astype(str), part["weight"].astype(int), strict=True))
                ),
            }
        )
    return pd.DataFrame(rows)


def cell_25(g: pd.DataFrame, n_users: int = 10000) -> pd.DataFrame:
    g = g.head(n_users)
    matrix = json_normalize(list(g["ArtistsID"]))  # CHANGE: a list (pandas 3 rejects a Series)
    matrix.set_index(g["UserId"], inplace=True)
    matrix.fillna(0, inplace=True)
    return matrix


# --------------------------------------------------------------------------------------------------
# In [27]: the split


def cell_27(matrix: pd.DataFrame, seed: int):
    """The split. Returns (matrix after the split, test_user_idxs, test_artist_idxs, test_val)."""
    random.seed(seed)  # CHANGE: the study's random module was not seeded
    randrange = random.randrange
    test_user_idxs = []
    test_artist_idxs = []
    test_val = []

    def select_test(user, test_size, topk=6, n_listened=10):
        rated_artists = user[user > 0]
        if rated_artists.shape[0] > n_listened and len(test_user_idxs) < test_size:
            artist_ind_num = randrange(1, topk)
            # CHANGE: kind="stable" (the study's quicksort left ties to chance)
            rated_artists.sort_values(ascending=False, inplace=True, kind="stable")
            artist_idx = rated_artists.index[artist_ind_num]
            test_user_idxs.append(int(user.name))
            test_artist_idxs.append(int(artist_idx))
            test_val.append(rated_artists.loc[artist_idx])
            user[artist_idx] = 0
        return user

    test_size = int(matrix.shape[0] * 0.3)
    matrix = matrix.apply(lambda x: select_test(x, test_size=test_size), axis=1)
    return matrix, test_user_idxs, test_artist_idxs, test_val


# --------------------------------------------------------------------------------------------------
# In [28], In [29]: similarities and neighbours


def cell_28(matrix: pd.DataFrame) -> pd.DataFrame:
    scaler = MinMaxScaler()
    scaled_matrix = scaler.fit_transform(matrix)
    cosine_sim = cosine_similarity(scaled_matrix)
    np.fill_diagonal(cosine_sim, 0)
    cosine_sim = pd.DataFrame(cosine_sim, index=matrix.index, columns=matrix.index)
    return cosine_sim


def find_n_neighbours(df: pd.DataFrame, n: int) -> pd.DataFrame:
    # CHANGE: the unused line ``order = np.argsort(df.values, axis=1)[:, :n]`` is left out (a full
    # argsort of the users x users matrix whose result the study never used)
    df = df.apply(
        lambda x: pd.Series(
            x.sort_values(ascending=False, kind="stable")  # CHANGE: kind="stable"
            .iloc[:n]
            .index,
            index=[f"top{i}" for i in range(1, n + 1)],
        ),
        axis=1,
    )
    return df


def cell_29(cosine_sim: pd.DataFrame, rows=None, n: int = 30) -> pd.DataFrame:
    """``sim_user_top_30``; CHANGE: optionally only for ``rows`` (the test users; others unused)."""
    part = cosine_sim if rows is None else cosine_sim.loc[list(rows)]
    return find_n_neighbours(part, n)


# --------------------------------------------------------------------------------------------------
# In [30], In [31], In [32]: recommendations, HR@10, subsamples


def recommend_to_user(user_id, matrix, sim_users, cosine_sim, k=10, as_written=False):
    """CHANGE: ``cosine_sim`` is a parameter (the study read a global), ``artists`` and the names
    are left out, ``as_written=True`` uses the weighting line's result (the study discarded it)."""
    listened_artitsts = matrix.loc[user_id]
    listened_artitsts = listened_artitsts[listened_artitsts > 0]

    knn = sim_users.loc[user_id].tolist()

    cos_distances = cosine_sim[knn].loc[user_id]

    # normalizing distances to make coefficients
    norm_cos_distances = (cos_distances - cos_distances.min()) / (
        cos_distances.max() - cos_distances.min()
    )
    coef = norm_cos_distances.apply(lambda x: 1 - x).sort_index()

    knn_matrix = matrix.loc[knn]
    weighted = knn_matrix.sort_index().mul(coef, axis=0)
    if as_written:  # CHANGE: the as-written variant
        knn_matrix = weighted
    top_artists = knn_matrix.sum()
    top_artists = top_artists[top_artists > 0]

    # removing artists that user knows
    # CHANGE: column order instead of ``list(set(top_artists.index) - set(listened.index))``
    listened = set(listened_artitsts.index)
    consider_artists = [a for a in top_artists.index if a not in listened]

    top_artists = top_artists.loc[consider_artists].sort_values(ascending=False, kind="stable")[:k]
    return top_artists


def test_CF_model(test_user_idxs, test_artist_idxs, matrix, sim_user_top_30, cosine_sim, k=10):
    """CHANGE: ``test_artist_idxs`` and ``cosine_sim`` are parameters (the study read globals)."""
    n_relevant = 0
    for i, user_id in enumerate(test_user_idxs):
        res = recommend_to_user(user_id, matrix, sim_user_top_30, cosine_sim)
        top_artists_ids = list(map(int, res.index))[:k]
        if test_artist_idxs[i] in top_artists_ids:
            n_relevant += 1
    n_test_samples = len(test_user_idxs)
    return n_relevant / n_test_samples


def cell_32(test_user_idxs, test_artist_idxs, matrix, sim_user_top_30, cosine_sim, n=30):
    """The kNN side of the t-test: ``n`` subsamples of ``len // 10`` test users, each scored by
    ``test_CF_model`` (whose ``test_artist_idxs[i]`` is then misaligned). Continues the random
    stream seeded in ``cell_27``. Returns (test_samples, CF_model_sample)."""
    sample = random.sample
    test_samples = [sample(test_user_idxs, len(test_user_idxs) // 10) for i in range(n)]
    CF_model_sample = [
        test_CF_model(s, test_artist_idxs, matrix, sim_user_top_30, cosine_sim)
        for s in test_samples
    ]
    return test_samples, CF_model_sample


# --------------------------------------------------------------------------------------------------
# In [15], In [20], In [21], In [22], In [23], In [24], In [26], In [28]: the embedding model


def create_sample(session_dict, all_artist_ids, negative=1e-5, positive=0.1):
    """``In [15]``, verbatim; the caller seeds ``random`` (CHANGE: the study did not)."""
    sample = []
    for i, (user, session) in enumerate(session_dict.items()):  # noqa: B007 - as the study
        factor = 1.0 / sum(session.values())
        for artist in session:
            if session[artist] * factor >= positive:
                sample.append([user, artist, 1])
        not_listened_artists = list(set(all_artist_ids) - set(session.keys()))
        perc = int(len(not_listened_artists) * negative)
        indices = random.sample(range(len(not_listened_artists)), perc)
        for i in indices:  # noqa: B020 - as the study
            sample.append([user, not_listened_artists[i], -1])
    return sample


def cell_20_21_22(sample):
    """The 1% slice, id decoding and tensors. Returns (X, y, idx_2_user, idx_2_artist)."""
    import torch

    sample = sample[: len(sample) // 100]
    sample = np.asarray(sample)
    # CHANGE: dict.fromkeys (first appearance) instead of set() (an order that changes per process)
    idx_2_user = dict(enumerate(dict.fromkeys(sample[:, 0])))
    user_2_idx = {value: key for key, value in idx_2_user.items()}
    idx_2_artist = dict(enumerate(dict.fromkeys(sample[:, 1])))
    artist_2_idx = {value: key for key, value in idx_2_artist.items()}

    a = np.array([user_2_idx[user] for user in sample[:, 0]])
    b = np.array([artist_2_idx[artist] for artist in sample[:, 1]])
    sample[:, 0] = a
    sample[:, 1] = b
    # CHANGE: astype; torch.Tensor of the string array np.asarray made raises TypeError
    X = torch.Tensor(sample[:, :2].astype(np.int64)).to(torch.int64)
    y = torch.Tensor(sample[:, 2:].astype(np.float32))
    return X, y, idx_2_user, idx_2_artist


def get_posisve_samples_idx(y):
    """``Dataset.get_posisve_samples_idx`` of ``In [23]`` (CHANGE: a function of ``y``)."""
    positive_samples_idx = []
    for i, t in enumerate(y):
        if t:
            positive_samples_idx.append(i)
    return positive_samples_idx


def split_data(y, val_split_size=0.15, test_split_size=0.15):
    """``In [24]`` without the DataLoader (CHANGE: returns the three index lists); the caller seeds
    ``np.random`` (CHANGE: the study did not)."""
    data_size = len(y)
    positive_idx = get_posisve_samples_idx(y)
    indices = list(range(data_size))
    positive_data_size = len(positive_idx)

    val_split = int(np.floor(val_split_size * positive_data_size))
    test_split = int(np.floor((test_split_size + val_split_size) * positive_data_size))

    np.random.shuffle(positive_idx)  # noqa: NPY002 - as the study

    val_indices = positive_idx[:val_split]
    test_indices = positive_idx[val_split:test_split]
    train_indices = positive_idx[test_split:] + list(set(indices) - set(positive_idx))
    return train_indices, val_indices, test_indices


def array_to_dict(array):
    from collections import defaultdict

    d = defaultdict(list)
    for i in array:
        d[int(i[0])].append(int(i[1]))
    return d


def validate(all_user_embed, all_artist_embed, X_val, X, n_unique_users, k=10, batch_size=1000):
    """``In [28]``, verbatim."""
    import torch
    from torch.utils.data.sampler import SubsetRandomSampler

    cosine = torch.nn.CosineSimilarity()
    artists_embed_sampler = SubsetRandomSampler(list(range(all_artist_embed.shape[0])))
    embed_loader = torch.utils.data.DataLoader(
        all_artist_embed, batch_size=batch_size, sampler=artists_embed_sampler
    )
    total_relevant = 0
    for user_id, artists in X_val.items():
        relevant_artists = np.array(artists)
        listened_artists = np.array(X[user_id])

        topk = torch.Tensor()
        topk_indices = torch.Tensor()
        current_user_tensor = all_user_embed[user_id].view(1, all_user_embed.shape[1])

        # calculate cosine similarity in batches
        for batch_artist in embed_loader:
            cos_dist = cosine(current_user_tensor, batch_artist)
            topk_b, topk_indices_b = torch.sort(cos_dist, descending=True)
            topk = torch.cat([topk, topk_b[:k]], dim=0)
            topk_indices = torch.cat(
                [topk_indices, topk_indices_b[:k].type(torch.FloatTensor)], dim=0
            )

        topk_all = np.transpose(torch.stack([topk, topk_indices], dim=0).detach().numpy())
        topk_all = topk_all[topk_all[:, 0].argsort()]
        topk_indices = topk_all[:, 1]

        # deleting listened_artists
        topk_artists_recommendation = np.setdiff1d(
            topk_indices, listened_artists, assume_unique=True
        )[:k]
        n_relevant = len(relevant_artists)

        # looking for intersection in topk recomendations and relevant artists
        n_relevant_recommendations = np.intersect1d(
            relevant_artists, topk_artists_recommendation
        ).shape[0] / min(k, n_relevant)
        total_relevant += n_relevant_recommendations

    return total_relevant / n_unique_users
