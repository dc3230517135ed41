"""The whole-data two-tower trainer (``models/batched.py``): equivalence with the per-pair computation,
planted structure, determinism, checkpoints, block scoring and a memory cap."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from thirtymusic_utils.models.batched import (
    BatchedConfig,
    RowAdam,
    _batch_loss,
    _cosine,
    _draw_negatives,
    _epoch_batches,
    _positive_hits,
    _sampler,
    auto_batch_pairs,
    available_cores,
    busy_cores,
    configure_threads,
    fit_batched,
    keep_freed_memory,
    pair_table,
    pair_user_vectors,
    rank_hidden_blocks,
    sampled_softmax_loss,
    score_top_k,
)
from thirtymusic_utils.models.training import (
    ID_TOWER,
    IMPROVED_TOWER,
    IMPROVED_TRAIN,
    SEED_TOWER,
    load_checkpoint,
    new_model,
    run_improved,
    save_checkpoint,
    top_n,
)

ROOT = Path(__file__).resolve().parent.parent


def random_counts(seed: int, n_users: int, n_artists: int, density: float) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_artists)) < density) * rng.integers(1, 50, (n_users, n_artists))
    return sp.csr_matrix(dense.astype(np.int64))


def planted(n_per_group: int = 40, n_artists_per_group: int = 12, seed: int = 0) -> sp.csr_matrix:
    """Three user groups, each listening only to (a random half of) its own group of artists."""
    rng = np.random.default_rng(seed)
    n_groups = 3
    dense = np.zeros((n_groups * n_per_group, n_groups * n_artists_per_group), dtype=np.int64)
    for u in range(dense.shape[0]):
        g = u // n_per_group
        own = np.arange(g * n_artists_per_group, (g + 1) * n_artists_per_group)
        heard = rng.choice(own, size=n_artists_per_group // 2, replace=False)
        dense[u, heard] = rng.integers(1, 20, size=len(heard))
    return sp.csr_matrix(dense)


def history_model(counts: sp.csr_matrix, seed: int = 0, **tower):
    return new_model(*counts.shape, {**IMPROVED_TOWER, **tower}, seed).set_history(counts)


@pytest.fixture(autouse=True)
def one_thread():
    """Small batches: one thread is faster (and the two cores are shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SMALL = BatchedConfig(epochs=3, batch_pairs=32, n_negatives=8, patience=0)


# --------------------------------------------------------------------------------------------------
# leave-one-out by subtraction == the per-pair computation


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.integers(1, 9),
    st.integers(1, 15),
    st.floats(0.05, 1.0),
    st.sampled_from([0, 1, 3]),
    st.sampled_from(["history", "id+history"]),
)
def test_leave_one_out_equals_the_per_pair_history(seed, n_users, n_artists, density, cap, inp):
    counts = random_counts(seed, n_users, n_artists, density)
    model = history_model(counts, seed % 7, max_history=cap, user_input=inp).eval()
    pairs = pair_table(counts, model)
    rng = np.random.default_rng(seed)
    users = torch.as_tensor(rng.permutation(n_users)[: rng.integers(1, n_users + 1)])
    with torch.no_grad():
        x, artists, weights, local = pair_user_vectors(model, users, pairs)
        # the pair trainer's path: the user's history with the pair's artist dropped, pair by pair
        want = model._history_sum(users[local], artists)
        if inp == "id+history":
            want = want + model.user_tower[0](users[local])
    assert torch.allclose(x, want, atol=1e-6)
    # the pairs are exactly the users' stored cells, with the pair trainer's log weights
    rows = counts[users.numpy()]
    assert artists.tolist() == rows.indices.tolist()
    assert len(weights) == rows.nnz


@pytest.mark.parametrize("chunk", [0, 1, 3])
def test_an_epoch_holds_every_pair_once_and_chunks_keep_the_leave_one_out(chunk):
    counts = random_counts(21, 17, 13, 0.4)
    model = history_model(counts, 1, max_history=4).eval()
    pairs = pair_table(counts, model)
    lens = pairs.indptr[1:] - pairs.indptr[:-1]
    active = torch.nonzero(lens > 0).squeeze(1)
    cfg = SMALL.replace(user_chunk=chunk)
    seen = []
    with torch.no_grad():
        for users, chunks in _epoch_batches(pairs, lens, active, cfg, 10, torch.Generator()):
            x, artists, _, local = pair_user_vectors(model, users, pairs, chunks=chunks)
            assert torch.allclose(x, model._history_sum(users[local], artists), atol=1e-6)
            if chunks is not None:
                assert int(chunks[2].max()) <= chunk
            seen += list(zip(users[local].tolist(), artists.tolist(), strict=True))
    coo = counts.tocoo()
    assert sorted(seen) == sorted(zip(coo.row.tolist(), coo.col.tolist(), strict=True))


def test_leave_one_out_with_dropout_matches_the_same_mask():
    """In training, the pair's own term is subtracted with the weight it had in the dropped-out bag:
    the result is the bag of the user's *kept* artists other than the pair's."""
    counts = random_counts(3, 6, 20, 0.5)
    model = history_model(counts, history_dropout=0.5).train()
    pairs = pair_table(counts, model)
    users = torch.arange(6)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        x, artists, _, local = pair_user_vectors(model, users, pairs, gen)
    # replay the mask: the same generator state draws the same keep mask
    gen = torch.Generator().manual_seed(5)
    ind = model.hist_indptr
    n_hist = int(ind[-1])
    keep = (torch.rand(n_hist, generator=gen) >= 0.5).float() / 0.5
    emb = model.user_history.weight.detach()
    for p in range(len(artists)):
        u = int(users[local[p]])
        lo, hi = int(ind[u]), int(ind[u + 1])
        items = model.hist_indices[lo:hi]
        w = model.hist_weights[lo:hi] * keep[lo:hi] * (items != artists[p]).float()
        want = (w.unsqueeze(1) * emb[items]).sum(0)
        assert torch.allclose(x[p], want, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# training


def test_recovers_planted_groups():
    counts = planted(seed=3)
    model = history_model(counts, seed=1, history_dropout=0.3)
    cfg = BatchedConfig(epochs=25, batch_pairs=64, lr=0.02, n_negatives=16, negative_mix=0.5,
                        patience=0)  # fmt: skip
    res = fit_batched(model, counts, cfg, seed=0, progress=False)
    assert res.history["loss"].iloc[-1] < 0.8 * res.history["loss"].iloc[0]
    users = np.arange(counts.shape[0])
    top = score_top_k(model, users, counts, k=3)
    assert (top // 12 == (users // 40)[:, None]).mean() > 0.95


@pytest.mark.parametrize("tower", [SEED_TOWER, ID_TOWER])
def test_id_towers_and_the_study_loss_train(tower):
    counts = planted(seed=4)
    for loss in ("softmax", "cosine_embedding"):
        model = new_model(*counts.shape, tower, 0)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        res = fit_batched(model, counts, SMALL.replace(loss=loss, epochs=4), progress=False)
        assert np.isfinite(res.history["loss"]).all()
        after = model.state_dict()
        assert all(not torch.equal(before[k], after[k]) for k in before), loss  # every layer learns
        if tower is ID_TOWER:  # the study's sigmoid towers barely move the loss (chapter 04)
            assert res.history["loss"].iloc[-1] < res.history["loss"].iloc[0]


def test_deterministic_on_cpu_for_a_seed():
    counts = random_counts(11, 30, 40, 0.2)
    cfg = SMALL.replace(negative_mix=0.5)
    states = []
    for seed in (0, 0, 1):
        model = history_model(counts, seed=2, history_dropout=0.5)
        fit_batched(model, counts, cfg, seed=seed, progress=False)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not torch.equal(states[0]["user_history.weight"], states[2]["user_history.weight"])


@pytest.mark.parametrize("deterministic", [True, False])
def test_training_and_scoring_do_not_depend_on_the_thread_count(deterministic):
    """One and two CPU threads train identical weights and rank identically, in torch's deterministic
    mode or not. Batches of about 1,030 pairs (blocks of 512 and a few rows) and 512 negatives reach
    what differed before: MKL's GEMM on a block of 5 to 11 rows (``MKL_CBWR``) and, outside
    deterministic mode, the backward pass of indexing the history sums by pair."""
    counts = random_counts(5, 240, 300, 0.12)
    cfg = SMALL.replace(epochs=2, batch_pairs=1030, n_negatives=512, negative_mix=0.5)
    rows = np.arange(0, 240, 3)
    cols = np.asarray(counts[rows].argmax(axis=1)).ravel()
    states, ranks = [], []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        model = history_model(counts, seed=4, history_dropout=0.5)
        fit_batched(model, counts, cfg, seed=6, progress=False, deterministic=deterministic)
        states.append(model.state_dict())
        ranks.append(rank_hidden_blocks(model, rows, cols, counts))
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    assert np.array_equal(ranks[0], ranks[1])
    assert os.environ.get("MKL_CBWR") == "AUTO,STRICT"


@pytest.mark.parametrize("before", [(False, False, True), (True, True, True), (True, False, False)])
def test_deterministic_mode_is_restored_and_changes_nothing_on_cpu(before):
    """fit_batched trains in deterministic mode without its NaN fill (and RowAdam copies to distinct
    rows outside it), then leaves torch's flags as it found them; with or without the mode, the
    same weights."""
    import torch.utils.deterministic as det

    flags = lambda: (  # noqa: E731
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        det.fill_uninitialized_memory,
    )
    saved = flags()
    counts = random_counts(11, 30, 40, 0.2)
    states, seen = [], []
    try:
        for deterministic in (True, False):
            torch.use_deterministic_algorithms(before[0], warn_only=before[1])
            det.fill_uninitialized_memory = before[2]
            model = history_model(counts, seed=2, history_dropout=0.5)

            def validate(m):
                seen.append(flags())
                return 0.0

            fit_batched(model, counts, SMALL.replace(epochs=2), validate=validate, seed=3,
                        progress=False, deterministic=deterministic)  # fmt: skip
            assert flags() == before
            states.append(model.state_dict())
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        det.fill_uninitialized_memory = saved[2]
    assert seen[0] == (True, True, False)  # during training, deterministic, no fill
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_early_stopping_keeps_the_best_state():
    counts = random_counts(12, 20, 30, 0.3)
    model = history_model(counts)
    metrics = iter([0.1, 0.5, 0.2, 0.3, 0.4])
    seen = {}

    def validate(m):
        v = next(metrics)
        seen[v] = {k: t.clone() for k, t in m.state_dict().items()}
        return v

    res = fit_batched(model, counts, SMALL.replace(epochs=5, patience=2), validate=validate,
                      progress=False)  # fmt: skip
    assert res.best_epoch == 2 and res.stopped_early and len(res.history) == 4
    assert torch.equal(model.state_dict()["user_history.weight"], seen[0.5]["user_history.weight"])


def test_checkpoint_round_trip(tmp_path):
    counts = random_counts(13, 12, 25, 0.3)
    model = history_model(counts, seed=4, history_dropout=0.5)
    fit_batched(model, counts, SMALL, progress=False)
    folder = save_checkpoint(tmp_path / "ck", model, SMALL, {"best_epoch": 3})
    loaded, meta = load_checkpoint(folder, device="cpu")
    assert BatchedConfig.from_dict(meta["train"]) == SMALL
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    rows = np.arange(12)
    assert np.array_equal(score_top_k(loaded, rows, counts, 5), score_top_k(model, rows, counts, 5))


def test_sampler_and_logq():
    counts = random_counts(14, 10, 30, 0.3)
    model = history_model(counts)
    pairs = pair_table(counts, model)
    q, logq = _sampler(pairs, 30, SMALL, torch.device("cpu"))
    assert q is None and torch.equal(logq, torch.zeros(30))  # uniform: no correction
    q, logq = _sampler(pairs, 30, SMALL.replace(negative_mix=0.5), torch.device("cpu"))
    assert float(q.sum()) == pytest.approx(1.0)
    assert torch.allclose(logq.double(), torch.log(q * 30), atol=1e-6)
    assert (q >= 0.5 / 30 - 1e-12).all()  # the uniform half keeps every artist drawable


def test_negatives_follow_the_sampler():
    counts = random_counts(16, 10, 30, 0.3)
    pairs = pair_table(counts, history_model(counts))
    cfg = SMALL.replace(negative_mix=0.8, n_negatives=200_000)
    q, _ = _sampler(pairs, 30, cfg, torch.device("cpu"))
    neg = _draw_negatives(cfg, 30, 5, q, torch.Generator().manual_seed(1), torch.device("cpu"))
    assert neg.min() >= 0 and neg.max() < 30
    freq = torch.bincount(neg, minlength=30).double() / len(neg)
    assert torch.allclose(freq, q, atol=4 * float(q.max().sqrt()) / len(neg) ** 0.5)
    zero = q.clone()
    zero[[0, 7, 29]] = 0.0  # an artist of probability 0 is never drawn, at either end or inside
    neg = _draw_negatives(cfg, 30, 5, zero / zero.sum(), torch.Generator(), torch.device("cpu"))
    assert not torch.isin(neg, torch.tensor([0, 7, 29])).any()


def test_batch_loss_matches_a_brute_force_sampled_softmax():
    counts = random_counts(15, 6, 9, 0.5)
    model = history_model(counts, seed=3).eval()  # eval: no dropout, so the loss is reproducible
    pairs = pair_table(counts, model)
    cfg = SMALL.replace(n_negatives=20, negative_mix=0.5)
    q, logq = _sampler(pairs, 9, cfg, torch.device("cpu"))
    users = torch.arange(6)
    with torch.no_grad():
        got, n, _ = _batch_loss(model, users, pairs, cfg, q, logq, torch.Generator().manual_seed(7))
        neg = _draw_negatives(cfg, 9, n, q, torch.Generator().manual_seed(7), torch.device("cpu"))
        x, artists, w, _ = pair_user_vectors(model, users, pairs)
        u = torch.nn.functional.normalize(x, dim=-1)
        a = torch.nn.functional.normalize(model.artist_vectors(), dim=-1)
        total = 0.0
        for p in range(n):
            pos = float(u[p] @ a[artists[p]]) / cfg.temperature
            negs = [float(u[p] @ a[j]) / cfg.temperature - float(logq[j]) for j in neg
                    if int(j) != int(artists[p])]  # fmt: skip
            total += float(w[p]) * (float(torch.logsumexp(torch.tensor([pos, *negs]), 0)) - pos)
        want = total / float(w.sum())
    assert n == counts.nnz
    assert float(got) == pytest.approx(want, rel=1e-5)


@settings(max_examples=30, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.integers(1, 40),
    st.integers(1, 12),
    st.sampled_from([1, 3, 64]),
    st.sampled_from([0.2, 1.0, 20.0]),
)
def test_blocked_sampled_softmax_matches_autograd(seed, n, m, block, scale):
    """The fused loss (gradient computed in the forward pass, rows in blocks) against the plain
    formula through autograd, in float64, with positives among the shared negatives masked. Small
    vectors take the one shift for the batch, large ones (``scale`` 20: logits spread over
    hundreds) each row's maximum."""
    g = torch.Generator().manual_seed(seed)
    artists = torch.randint(0, 6, (n,), generator=g)
    neg = torch.randint(0, 6, (m,), generator=g)
    u, ap = (
        scale * torch.randn(n, 5, generator=g, dtype=torch.float64),
        torch.randn(n, 5, generator=g, dtype=torch.float64),
    )
    an = torch.randn(m, 5, generator=g, dtype=torch.float64)
    bias = torch.randn(m, generator=g, dtype=torch.float64)
    c = torch.rand(n, generator=g, dtype=torch.float64)
    r, col = _positive_hits(neg, artists)
    assert sorted(zip(r.tolist(), col.tolist(), strict=True)) == [
        (i, j) for i in range(n) for j in range(m) if int(neg[j]) == int(artists[i])
    ]
    leaves = [t.clone().requires_grad_() for t in (u, ap, an)]
    got = sampled_softmax_loss(*leaves, bias, c, 2.5, r, col, block=block)
    got.backward()
    ref = [t.clone().requires_grad_() for t in (u, ap, an)]
    s_neg = 2.5 * ref[0] @ ref[2].T + bias
    s_neg = s_neg.masked_fill(neg.unsqueeze(0) == artists.unsqueeze(1), -math.inf)
    s_pos = 2.5 * (ref[0] * ref[1]).sum(-1)
    want = (c * (torch.logsumexp(torch.cat([s_pos[:, None], s_neg], 1), 1) - s_pos)).sum()
    want.backward()
    assert got.item() == pytest.approx(want.item(), rel=1e-10)
    for a, b in zip(leaves, ref, strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-10)


@pytest.mark.parametrize("shift_range", [0.0, math.inf])
def test_sampled_softmax_each_shift_path_matches_autograd(monkeypatch, shift_range):
    """Each way of shifting the logsumexp, forced (0: each row's maximum; inf: one shift for the
    batch), in float32 as the trainer runs it, against the plain formula in float64."""
    import thirtymusic_utils.models.batched as batched

    monkeypatch.setattr(batched, "_SHIFT_RANGE", shift_range)
    g = torch.Generator().manual_seed(5)
    n, m, d = 300, 64, 16
    u, ap, an = (F.normalize(torch.randn(k, d, generator=g), dim=1) for k in (n, n, m))
    bias, c = torch.randn(m, generator=g), torch.rand(n, generator=g)
    artists, neg = torch.randint(0, 40, (n,), generator=g), torch.randint(0, 40, (m,), generator=g)
    r, col = _positive_hits(neg, artists)
    leaves = [t.clone().requires_grad_() for t in (u, ap, an)]
    got = sampled_softmax_loss(*leaves, bias, c, 1 / 0.15, r, col, block=128)
    got.backward()
    ref = [t.double().requires_grad_() for t in (u, ap, an)]
    s_neg = ref[0] @ ref[2].T / 0.15 + bias.double()
    s_neg = s_neg.masked_fill(neg.unsqueeze(0) == artists.unsqueeze(1), -math.inf)
    s_pos = (ref[0] * ref[1]).sum(-1) / 0.15
    want = (c.double() * (torch.logsumexp(torch.cat([s_pos[:, None], s_neg], 1), 1) - s_pos)).sum()
    want.backward()
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    for a, b in zip(leaves, ref, strict=True):
        torch.testing.assert_close(a.grad, b.grad.float(), rtol=1e-4, atol=1e-6)


def test_row_adam_is_sparse_adam_on_the_rows_read():
    """RowAdam given the gathered rows' gradient makes SparseAdam's steps (lazy moments, one step
    count per table; ``eps`` enters as in Adam, a difference far below the tolerance), rows never
    read untouched."""
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(20, 4, generator=g)
    a, b = torch.nn.Parameter(w0.clone()), w0.clone()
    sparse_adam, row_adam = torch.optim.SparseAdam([a], lr=0.05), RowAdam(lr=0.05)
    for _ in range(6):
        idx = torch.randint(0, 12, (15,), generator=g)  # rows 12.. are never read
        target = torch.randn(15, 4, generator=g)
        sparse_adam.zero_grad()
        (torch.nn.functional.embedding(idx, a, sparse=True) * target).sum().backward()
        sparse_adam.step()
        rows, inv = torch.unique(idx, return_inverse=True)
        sub = b.index_select(0, rows).requires_grad_()
        (torch.nn.functional.embedding(inv, sub) * target).sum().backward()
        row_adam.step(b, rows, sub.grad)
    assert torch.allclose(a.detach(), b, atol=1e-6)
    assert torch.equal(b[12:], w0[12:])


def test_auto_batch_pairs_and_threads():
    assert auto_batch_pairs(10) == 1024 and auto_batch_pairs(10**9) == 8192
    assert auto_batch_pairs(4096 * 256) == 4096
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        assert configure_threads(0) >= 1
    finally:
        torch.set_num_threads(before)


def test_threads_spin_briefly_and_gemm_is_strict_unless_told_and_freed_memory_is_kept():
    code = (
        "import os, thirtymusic_utils; "
        "print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'), "
        "os.environ.get('MKL_CBWR'))"
    )
    cases = (
        ({}, "10000 None AUTO,STRICT"),
        ({"OMP_WAIT_POLICY": "PASSIVE"}, "None PASSIVE AUTO,STRICT"),
        ({"GOMP_SPINCOUNT": "7", "MKL_CBWR": "AVX2"}, "7 None AVX2"),
    )
    for env, want in cases:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **env},
                             check=True)  # fmt: skip
        assert out.stdout.strip() == want
    assert keep_freed_memory() is (sys.platform == "linux")


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux /proc/stat")
def test_busy_cores_sees_another_process_and_not_this_one():
    t0 = time.process_time()
    while time.process_time() - t0 < 0.3:  # this process busy before: not counted
        pass
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        busy = busy_cores(0.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert 0.3 < busy <= available_cores() + 0.5


def test_run_improved_uses_the_batched_trainer():
    counts = planted(n_per_group=60, n_artists_per_group=24, seed=5)
    from thirtymusic_utils.evaluation.protocol import holdout_split

    split = holdout_split(counts, 0)
    cfg = IMPROVED_TRAIN.replace(epochs=6, n_negatives=16, lr=0.02, val_max_users=20)
    run = run_improved(split.train, split.test_rows, 0, config=cfg, progress=False,
                       val=None)  # fmt: skip
    h = run.result.history
    assert list(h["epoch"]) == list(range(1, len(h) + 1))
    assert {"epoch_seconds", "pairs_per_second", "val_seconds"} <= set(h.columns)
    ranks = rank_hidden_blocks(run.model, split.test_rows, split.hidden_cols, split.train)
    assert (ranks > 0).mean() > 0.5  # the hidden artist is among 12 unheard artists of the group


# --------------------------------------------------------------------------------------------------
# scoring in blocks


@pytest.mark.parametrize("block_bytes", [1, 4 * 17 * 3, 2**30])
def test_score_top_k_matches_the_unblocked_top_n(block_bytes):
    counts = random_counts(16, 23, 17, 0.4)
    model = history_model(counts, seed=5).eval()
    rows = np.array([5, 0, 22, 7, 7, 13])
    got = score_top_k(model, rows, counts, 6, block_bytes=block_bytes)
    assert np.array_equal(got, top_n(model, rows, counts, 6))
    # brute force: every unheard artist by cosine, ties to the lower column
    with torch.no_grad():
        s = model.score_matrix(model.user_vectors(torch.as_tensor(rows)), model.artist_vectors())
    dense = counts.toarray()
    for i, r in enumerate(rows):
        unheard = np.flatnonzero(dense[r] == 0)
        want = unheard[np.argsort(-s[i, unheard].numpy(), kind="stable")][:6]
        assert set(got[i][got[i] >= 0]) == set(want)
        assert (got[i] >= 0).sum() == min(6, len(unheard))


@pytest.mark.parametrize("early_exit", [True, False])
@pytest.mark.parametrize("tiles", [(1, 1), (3, 5), (128, 4096)])
def test_rank_hidden_blocks_is_the_rank_in_the_top_k(tiles, early_exit):
    """The counted rank equals the position of the hidden artist in the top k of the unheard artists
    (``hit_ranks`` of ``score_top_k``), for any tiling; a hidden artist that is heard is a miss."""
    from thirtymusic_utils.evaluation.metrics import hit_ranks

    counts = random_counts(17, 30, 23, 0.3)
    model = history_model(counts, seed=6).eval()
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 30, 40)
    hidden = rng.integers(0, 23, 40)
    for k in (1, 5, 23):
        got = rank_hidden_blocks(model, rows, hidden, counts, k, block_rows=tiles[0],
                                 block_cols=tiles[1], early_exit=early_exit)  # fmt: skip
        want = hit_ranks(score_top_k(model, rows, counts, k), hidden)
        assert np.array_equal(got, want), k
    heard = counts[rows, hidden].A1 > 0
    assert heard.any() and (got[heard] == 0).all()
    # the rank of a hit is one plus the unheard artists that score above it (brute force)
    with torch.no_grad():
        s = model.score_matrix(model.user_vectors(torch.as_tensor(rows)), model.artist_vectors())
    dense = counts.toarray()
    for i, (r, h) in enumerate(zip(rows, hidden, strict=True)):
        if not heard[i]:
            n_above = int(((s[i] > s[i, h]).numpy() & (dense[r] == 0)).sum())
            assert got[i] == (n_above + 1 if n_above < 23 else 0)


# --------------------------------------------------------------------------------------------------
# memory: a cap that a users x artists array would break, the batch fits well within


def test_training_and_scoring_fit_a_memory_cap(tmp_path):
    """20,000 users x 5,000 artists: a dense float32 users x artists array alone is 400 MB. With the
    address space capped at 250 MB above what the interpreter and torch hold after import, the trainer
    (one epoch) and block scoring of every user must run; allocating the dense array must not."""
    script = textwrap.dedent(
        """
        import json, resource, sys
        import numpy as np, scipy.sparse as sp, torch
        torch.set_num_threads(1)
        from thirtymusic_utils.models.batched import BatchedConfig, fit_batched, score_top_k
        from thirtymusic_utils.models.training import IMPROVED_TOWER, new_model
        rng = np.random.default_rng(0)
        n_users, n_artists, nnz = 20_000, 5_000, 200_000
        keys = np.unique(rng.integers(0, n_users * n_artists, nnz))
        counts = sp.csr_matrix((rng.integers(1, 30, len(keys)), np.divmod(keys, n_artists)),
                               shape=(n_users, n_artists))
        model = new_model(n_users, n_artists, IMPROVED_TOWER, 0).set_history(counts)
        def vm():
            for line in open("/proc/self/status"):
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
        cap = vm() + 250 * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        try:
            np.ones((n_users, n_artists), dtype=np.float32)
            dense_fits = True
        except MemoryError:
            dense_fits = False
        cfg = BatchedConfig(epochs=1, batch_pairs=4096, n_negatives=256, patience=0)
        res = fit_batched(model, counts, cfg, progress=False)
        top = score_top_k(model, np.arange(n_users), counts, 10, block_bytes=8 * 2**20)
        print(json.dumps({"dense_fits": dense_fits, "pairs": res.n_examples,
                          "filled": float((top >= 0).mean())}))
        """
    )
    env = {"PYTHONPATH": str(ROOT), "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1",
           "PATH": "/usr/bin:/bin"}  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["dense_fits"] is False
    assert out["pairs"] > 150_000 and out["filled"] == 1.0


def test_bench_trainer_stages_on_small_data():
    from thirtymusic_utils.bench_stages import bench_score_all_test_users, bench_train_full

    counts = random_counts(22, 60, 40, 0.4)
    s = bench_score_all_test_users(counts, 0)
    assert s["n_test_users"] > 0 and s["seconds"] > 0 and s["train_threads"] >= 1
    t = bench_train_full(counts, 0)
    assert 1 <= t["best_epoch"] <= t["epochs_run"] and 0.0 <= t["hr_at_10_embedding"] <= 1.0
    assert t["train_device"] in ("cpu", "cuda") and t["n_test_users"] == s["n_test_users"]


@pytest.mark.parametrize("profile", ["tiny", "default", "full"])
def test_improved_train_config_takes_the_profiles_budget_and_patience(profile):
    from thirtymusic_utils.models.training import (
        IMPROVED_TRAIN,
        TRAIN_PROFILES,
        improved_train_config,
    )

    cfg = improved_train_config(profile)
    assert cfg.epochs == TRAIN_PROFILES[profile]["improved_epochs"]
    assert cfg.patience == TRAIN_PROFILES[profile]["improved_patience"]
    assert (
        cfg.replace(epochs=IMPROVED_TRAIN.epochs, patience=IMPROVED_TRAIN.patience)
        == IMPROVED_TRAIN
    )
    assert improved_train_config(profile, 3).epochs == 3
    with pytest.raises(ValueError, match="unknown profile"):
        improved_train_config("huge")


def test_bench_trainer_threads_are_the_machines_cores_not_the_loads_share(monkeypatch):
    from thirtymusic_utils.bench_stages import _trainer_facts

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        # a machine that looks fully busy: configure_threads(0) would take one thread
        monkeypatch.setattr("thirtymusic_utils.models.batched.busy_cores", lambda *a: 64.0)
        facts = _trainer_facts()
        assert facts["train_threads"] == available_cores() == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert _trainer_facts()["train_threads"] == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@given(st.integers(1, 40), st.integers(1, 9), st.integers(0, 2**31 - 1))
@settings(max_examples=40, deadline=None)
def test_cosine_and_its_gradient_equal_f_normalize(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    x[0] = 0.0  # a zero row: the clamped norm, where autograd's gradient is g / eps
    grad = torch.randn(n, d, generator=g, dtype=torch.float64)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = torch.nn.functional.normalize(x1, dim=-1), _cosine(x2)
    (y1 * grad).sum().backward()
    (y2 * grad).sum().backward()
    torch.testing.assert_close(y2, y1)
    torch.testing.assert_close(x2.grad, x1.grad)


# --------------------------------------------------------------------------------------------------
# the embedding size, chosen on validation


@given(
    st.lists(st.sampled_from([8, 16, 32, 64, 128, 256]), min_size=1, max_size=4, unique=True),
    st.data(),
)
def test_next_dims_extends_only_a_best_size_at_an_edge(dims, data):
    from thirtymusic_utils.models.training import _next_dims

    grid = tuple(sorted(dims))
    best = data.draw(st.sampled_from(grid))
    nxt = _next_dims(grid, best, 256)
    if len(grid) == 1 or grid[0] < best < grid[-1]:
        assert nxt == grid
    elif best == grid[0] and grid[0] >= 16:
        assert nxt == (grid[0] // 2, *grid)
    elif best == grid[-1] and grid[-1] <= 128:
        assert nxt == (*grid, 2 * grid[-1])
    else:
        assert nxt == grid  # at the floor of 8 or the cap


def _tuning_case():
    from thirtymusic_utils.evaluation.protocol import holdout_split
    from thirtymusic_utils.models.training import validation_split

    counts = planted(n_per_group=30, n_artists_per_group=26, seed=3)
    split = holdout_split(counts, 0)
    val = validation_split(split.train, split.test_rows, 0)
    cfg = IMPROVED_TRAIN.replace(epochs=3, n_negatives=8, lr=0.02, patience=2)
    return split, val, cfg


def test_tune_improved_keeps_the_best_size_and_extends_past_an_edge(monkeypatch):
    from thirtymusic_utils.models import training as T

    split, val, cfg = _tuning_case()
    tuning = T.tune_improved(
        split.train, split.test_rows, 0, dims=(8, 16), max_dim=64, config=cfg, val=val,
        progress=False,
    )  # fmt: skip
    t = tuning.table
    assert list(t["embedding_dim"]) == sorted(t["embedding_dim"]) and {8, 16} <= set(
        t["embedding_dim"]
    )
    best = t.loc[t["val_metric"] == t["val_metric"].max(), "embedding_dim"].min()
    assert tuning.embedding_dim == best == tuning.run.model.config.embedding_dim
    assert tuning.run.result.best_metric == t.set_index("embedding_dim").loc[best, "val_metric"]
    dims = tuple(t["embedding_dim"])
    # the grid grows until the best is inside it, at the floor of 8 or at the cap of 64
    assert tuning.at_edge == (best in (dims[0], dims[-1]))
    assert not tuning.at_edge or best in (8, 64)
    # the kept run is the run of that size on its own (training is deterministic per seed)
    alone = T.run_improved(
        split.train, split.test_rows, 0, config=cfg, tower={**IMPROVED_TOWER, "embedding_dim": best},
        val=val, progress=False,
    )  # fmt: skip
    for a, b in zip(
        alone.model.state_dict().values(), tuning.run.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    # a best size at the top edge adds the next size; the grid then stops at the cap
    scores = {8: 0.1, 16: 0.2, 32: 0.3, 64: 0.25}
    real = T.run_improved

    def fake(*args, tower, **kw):
        run = real(*args, tower=tower, **{**kw, "config": cfg.replace(epochs=1)})
        run.result.best_metric = scores[tower["embedding_dim"]]
        return run

    monkeypatch.setattr(T, "run_improved", fake)
    tuning = T.tune_improved(
        split.train, split.test_rows, 0, dims=(8, 16), max_dim=64, config=cfg, val=val,
        progress=False,
    )  # fmt: skip
    assert list(tuning.table["embedding_dim"]) == [8, 16, 32, 64]
    assert tuning.embedding_dim == 32 and not tuning.at_edge
    scores[64] = 0.4
    tuning = T.tune_improved(
        split.train, split.test_rows, 0, dims=(8, 16), max_dim=64, config=cfg, val=val,
        progress=False,
    )  # fmt: skip
    assert tuning.embedding_dim == 64 and tuning.at_edge
    one = T.tune_improved(
        split.train, split.test_rows, 0, dims=(16,), max_dim=64, config=cfg, val=val,
        progress=False,
    )  # fmt: skip
    assert list(one.table["embedding_dim"]) == [16] and not one.at_edge
    with pytest.raises(ValueError, match="positive sizes"):
        T.tune_improved(split.train, split.test_rows, 0, dims=(), config=cfg, val=val)


def test_ablation_leaves_out_the_variant_that_is_the_reference():
    from thirtymusic_utils.models import training as T

    split, val, cfg = _tuning_case()
    variants = {
        "64-d ids": ({**T.ID_TOWER, "embedding_dim": 8}, {}),
        "64-d history": ({**IMPROVED_TOWER, "embedding_dim": 8}, {}),
    }
    for dim, names in [(8, ["64-d ids", "improved: history user tower, 8-d, dropout 0.5"]),
                       (16, ["64-d ids", "64-d history", "improved: history user tower, 16-d, dropout 0.5"])]:  # fmt: skip
        ref = T.run_improved(
            split.train, split.test_rows, 0, config=cfg.replace(patience=0),
            tower={**IMPROVED_TOWER, "embedding_dim": dim}, val=val, progress=False,
        )  # fmt: skip
        table = T.run_ablation(
            split.train, split.test_rows, 0, epochs=2, val=val, variants=variants, reference=ref,
            progress=False,
        )  # fmt: skip
        assert list(table["variant"].unique()) == names
        assert len(table) == 2 * len(names)
