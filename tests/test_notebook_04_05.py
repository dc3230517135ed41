"""Papermill smoke tests of chapters 03 and 04 on the tiny profile (after chapters 01 and 02)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
pytestmark = [pytest.mark.notebook, pytest.mark.slow]


@pytest.mark.parametrize("name", ["04_embeddings", "05_training"])
def test_notebook_follows_the_template(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "thirtymusic"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(f"# {name[:2]} · ")
    params = nb.cells[1]
    assert "parameters" in params.metadata.get("tags", [])
    for p in ("data_dir", "build_dir", "seed", "profile"):
        assert f"{p} =" in params.source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert not any(
        line.lstrip().startswith(("def ", "class ")) for c in code for line in c.source.splitlines()
    )
    assert nb.cells[-1].cell_type == "markdown" and "{glue:text}" in nb.cells[-1].source


def test_embeddings_as_ran_on_tiny(tiny_book):
    """Chapter 04 (helper A): the study's embedding code as it ran, its chance level, its ledger."""
    results = tiny_book.run("04_embeddings")
    assert results["n_sample"] == results["n_positives"] + results["n_negatives"]
    # the code's negatives: int(1e-5 * catalogue) per user, whatever the user played
    assert results["emb_negatives_per_user"] == int(results["emb_catalogue"] * 1e-5)
    n_users = tiny_book.run("01_user_artist_matrix")["n_users"]
    assert results["n_negatives"] == results["emb_negatives_per_user"] * n_users
    assert results["emb_slice_rows"] == results["n_sample"] // 100
    for key in ("study_metric_seed", "study_metric_seed_chance", "study_metric_seed_correct"):
        assert 0.0 <= results[key] <= 1.0, key
    assert results["study_metric_seed_chance_low"] <= results["study_metric_seed_chance_high"]
    assert 0.0 <= results["study_metric_study_chance_share_above"] <= 1.0
    ledger = pd.read_csv(tiny_book.build_dir / "artifacts" / "ledger_04.csv")
    assert ledger["as_ran"].eq(results["study_metric_seed"]).all()


def test_chapter_05_on_tiny(tiny_book):
    results = tiny_book.run("05_training")
    for key in ("hr_at_10_embedding", "val_metric_best", "ndcg_at_10_embedding",
                "mrr_at_10_embedding"):  # fmt: skip
        assert 0.0 <= results[key] <= 1.0, key
    # the seed configuration now lives in chapter 04: chapter 05 does not define its keys
    assert not {"study_metric_seed", "hr_at_10_embedding_seed", "seed_best_epoch"} & set(results)
    assert results["train_device"] in ("cpu", "cuda") and results["train_threads"] >= 1
    assert 1 <= results["improved_best_epoch"] <= results["improved_epochs_run"]
    assert results["improved_pairs_per_second"] > 0
    from thirtymusic_utils.models.training import TRAIN_PROFILES

    assert results["improved_patience"] == TRAIN_PROFILES["tiny"]["improved_patience"]
    assert results["improved_epoch_budget"] == TRAIN_PROFILES["tiny"]["improved_epochs"]
    # the embedding size is chosen on validation: the profile's grid, extended past an edge
    tried = [int(d) for d in results["improved_embedding_dims_tried"].split(", ")]
    assert set(TRAIN_PROFILES["tiny"]["embedding_dims"]) <= set(tried) and tried == sorted(tried)
    assert results["improved_embedding_dim"] in tried and max(tried) <= 64
    edge = results["improved_embedding_dim"] in (tried[0], tried[-1])
    assert results["improved_embedding_dim_at_edge"] == int(edge)
    assert (
        results["improved_embedding_dim_grid_min"],
        results["improved_embedding_dim_grid_max"],
    ) == (
        tried[0],
        tried[-1],
    )
    assert results["ablation_val_hr_improved"] == pytest.approx(results["val_metric_best"]) or (
        results["improved_best_epoch"] > results["ablation_epochs"]
    )
    artifacts = tiny_book.build_dir / "artifacts"
    out2 = pd.read_csv(artifacts / "outcomes_02.csv")
    out5 = pd.read_csv(artifacts / "outcomes_05.csv")
    assert list(out5.columns) == ["user_id", "artist_id", "rank_embedding_improved"]
    assert out5[["user_id", "artist_id"]].equals(out2[["user_id", "artist_id"]])
    assert out5["rank_embedding_improved"].between(0, 10).all()
    hr = float((out5["rank_embedding_improved"] > 0).mean())
    assert hr == pytest.approx(results["hr_at_10_embedding"])
    folder = artifacts / "checkpoints" / "improved"
    assert (folder / "model.pt").exists()
    meta = json.loads((folder / "config.json").read_text())
    assert meta["tower"]["n_artists"] > 0 and meta["train"]["name"] == "improved"
    assert meta["train"]["trainer"] == "batched"
    assert meta["tower"]["embedding_dim"] == results["improved_embedding_dim"]


def test_chapter_05_checkpoint_reloads(tiny_book):
    from thirtymusic_utils.evaluation.protocol import load_split
    from thirtymusic_utils.models.batched import rank_hidden_blocks
    from thirtymusic_utils.models.training import load_checkpoint

    tiny_book.run("05_training")
    split = load_split(tiny_book.build_dir)
    model, _ = load_checkpoint(
        tiny_book.build_dir / "artifacts" / "checkpoints" / "improved", "cpu"
    )
    ranks = rank_hidden_blocks(model, split.test_rows, split.hidden_cols, split.train)
    out5 = pd.read_csv(tiny_book.build_dir / "artifacts" / "outcomes_05.csv")
    assert np.array_equal(ranks, out5["rank_embedding_improved"].to_numpy())
