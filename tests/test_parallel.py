"""``parallel.process_map`` and the study runs that use it: the same results in worker processes as
one after another here."""

from __future__ import annotations

import math
import operator
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from thirtymusic_utils.data.matrix import build_matrix
from thirtymusic_utils.data.order import pair_first_positions
from thirtymusic_utils.data.readers import read_artists, read_plays
from thirtymusic_utils.parallel import default_workers, process_map
from thirtymusic_utils.study import embedding_ran as E
from thirtymusic_utils.study import ledger as L

pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")


def test_process_map_keeps_the_order_and_sends_the_shared_arguments():
    tasks = list(range(7))
    want = [10 + t for t in tasks]
    assert process_map(operator.add, tasks, shared=(10,), workers=1, progress=False) == want
    assert process_map(operator.add, tasks, shared=(10,), workers=2, progress=False) == want
    assert process_map(operator.add, [], shared=(10,), workers=2, progress=False) == []
    assert 1 <= default_workers(3) <= 3 and default_workers(0) == 1


def test_process_map_raises_a_task_error_here_without_waiting_for_the_other_runs():
    with pytest.raises(ValueError, match="math domain error"):
        process_map(math.sqrt, [4.0, -1.0, 9.0], workers=2, progress=False)
    t0 = time.perf_counter()
    with pytest.raises(TypeError):  # one worker sleeps a minute, the other fails at once
        process_map(time.sleep, [60, "not a number"], workers=2, progress=False)
    assert time.perf_counter() - t0 < 30


@pytest.fixture(scope="module")
def emb_args(tiny_data_dir):
    m = build_matrix(read_plays(tiny_data_dir))
    first = pair_first_positions(tiny_data_dir)
    catalogue = read_artists(tiny_data_dir)["artist_id"].to_numpy()
    return (m.counts, m.user_ids, m.artist_ids, first, catalogue, 0)


def test_embedding_ledger_in_workers_equals_one_run_after_another(emb_args):
    """The ledger's retrainings side by side in two processes give the table they give here, and
    each row's figure is the run it names (run_as_ran with that fix, from scratch)."""
    serial = L.embedding_ledger(*emb_args, epochs=3, workers=1, progress=False)
    parallel = L.embedding_ledger(*emb_args, epochs=3, workers=2, progress=False)
    pd.testing.assert_frame_equal(serial, parallel)
    rows = serial.set_index("step")
    for fixes, column, step in (
        ((), "as_ran", "negatives"),
        (("positive_split",), "fixed_alone", "positive_split"),
        (("negatives", "positive_split"), "running", "positive_split"),
    ):
        run = E.run_as_ran(*emb_args, epochs=3, chance_reps=1, fixes=frozenset(fixes))
        assert rows.loc[step, column] == run.study_metric
    base = E.run_as_ran(*emb_args, epochs=3, chance_reps=1)
    given = L.embedding_ledger(*emb_args, epochs=3, base=base, workers=2, progress=False)
    pd.testing.assert_frame_equal(given, serial)


def test_embedding_runs_are_the_as_ran_run_and_its_ledger(emb_args):
    """The as-ran run trained in a worker beside the ledger's retrainings is the run trained here
    (metric, chance draws, learning curve, embeddings), and the ledger is embedding_ledger's."""
    run, table = L.embedding_runs(*emb_args, epochs=3, chance_reps=3, workers=2, progress=False)
    direct = E.run_as_ran(*emb_args, epochs=3, chance_reps=3)
    assert run.study_metric == direct.study_metric
    assert run.study_metric_correct == direct.study_metric_correct
    np.testing.assert_array_equal(run.chance, direct.chance)
    assert run.history == direct.history and run.best_epoch == direct.best_epoch
    assert torch.equal(run.user_embed, direct.user_embed)
    want = L.embedding_ledger(*emb_args, epochs=3, base=direct, workers=1, progress=False)
    pd.testing.assert_frame_equal(table, want)


def test_a_script_without_a_main_guard_gets_a_clear_error(tmp_path):
    """Spawned workers re-run a script's top level: without the guard they die while starting, and
    the caller gets an error that says why, not a hang or a bare BrokenProcessPool."""
    script = tmp_path / "noguard.py"
    script.write_text(
        "import operator\n"
        "from thirtymusic_utils.parallel import process_map\n"
        "process_map(operator.add, [1, 2, 3], shared=(1,), workers=2, progress=False)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode != 0
    assert "without an 'if __name__ == \"__main__\":' guard" in out.stderr
