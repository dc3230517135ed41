"""``make bench``: seconds and peak memory of each pipeline stage, on the ``full`` profile by default.

Each stage runs in a fresh Python process, so its peak RSS is its own. Results go to
``BUILD_DIR/bench.json`` as ``{stage: {"seconds": s, "peak_rss_mb": mb, ...}, "n_users": n, ...}`` and are
printed as a table. Stages later in the list read what earlier ones left in ``BUILD_DIR``::

    python -m thirtymusic_utils.bench --build-dir build/bench --profile full
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

STAGES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {}


def stage(name: str) -> Callable:
    """Register a benchmark stage."""

    def wrap(fn: Callable[[argparse.Namespace], dict[str, Any]]) -> Callable:
        STAGES[name] = fn
        return fn

    return wrap


def _data_dir(args: argparse.Namespace) -> Path:
    if args.data_dir:
        return Path(args.data_dir)
    from .book.paths import synthetic_data_dir

    return synthetic_data_dir(args.profile, args.seed, args.build_dir)


def _counts(args: argparse.Namespace):
    from .data.matrix import load_matrix

    return load_matrix(args.build_dir).counts


@stage("generate")
def _generate(args: argparse.Namespace) -> dict[str, Any]:
    if args.data_dir:
        return {"skipped": "DATA_DIR given"}
    import shutil

    from .data.synthetic import generate

    out = _data_dir(args)
    shutil.rmtree(out, ignore_errors=True)
    generate(out, profile=args.profile, seed=args.seed, progress=True)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"data_gb": size / 2**30}


@stage("read_plays")
def _read_plays(args: argparse.Namespace) -> dict[str, Any]:
    from .data.readers import detect_layout, read_plays

    data = _data_dir(args)
    layout = detect_layout(data)
    t0 = time.perf_counter()
    plays = read_plays(data, layout=layout, errors="skip", progress=True)
    seconds = time.perf_counter() - t0
    np.savez(
        Path(args.build_dir) / "plays.npz",
        **{c: plays[c].to_numpy() for c in ("user_id", "artist_id", "plays")},
    )
    return {"seconds": seconds, "layout": layout, "n_rows": len(plays)}


@stage("matrix")
def _matrix(args: argparse.Namespace) -> dict[str, Any]:
    import pandas as pd

    from .data.matrix import build_matrix, save_matrix

    with np.load(Path(args.build_dir) / "plays.npz") as z:
        plays = pd.DataFrame({k: z[k] for k in ("user_id", "artist_id", "plays")})
    t0 = time.perf_counter()
    matrix = build_matrix(plays)
    seconds = time.perf_counter() - t0
    save_matrix(matrix, args.build_dir)
    return {"seconds": seconds, "n_users": matrix.shape[0], "n_artists": matrix.shape[1],
            "n_pairs": int(matrix.counts.nnz)}  # fmt: skip


def _delegate(module: str, function: str, *extra: Any) -> Callable[[argparse.Namespace], dict]:
    """A stage that calls ``thirtymusic_utils.<module>.<function>(counts, ...)``."""

    def run(args: argparse.Namespace) -> dict[str, Any]:
        import importlib

        fn = getattr(importlib.import_module(f"thirtymusic_utils.{module}"), function)
        counts = _counts(args)
        t0 = time.perf_counter()
        out = fn(counts, *[args.seed if e == "seed" else e for e in extra]) or {}
        out.setdefault("seconds", time.perf_counter() - t0)
        return out

    return run


STAGES["knn_top30_all_users"] = _delegate("bench_stages", "bench_knn_all_users")
STAGES["evaluate_hr10"] = _delegate("bench_stages", "bench_evaluate_hr10", "seed")
STAGES["seed_dense_10k"] = _delegate("bench_stages", "bench_seed_dense_10k", "seed")
STAGES["ours_10k"] = _delegate("bench_stages", "bench_ours_10k", "seed")
STAGES["sample_full"] = _delegate("bench_stages", "bench_sample_full", "seed")
# the whole-data two-tower trainer (issue 10)
STAGES["train_epoch_full"] = _delegate("bench_stages", "bench_train_epoch_full", "seed")
STAGES["score_all_test_users"] = _delegate("bench_stages", "bench_score_all_test_users", "seed")
STAGES["train_full"] = _delegate("bench_stages", "bench_train_full", "seed")

# ---- baselines of chapter 03 (helper B): one fit-and-score stage per model
for _model in ("popularity", "cf_tuned", "item_knn", "rp3beta", "ease", "ials", "bpr"):
    STAGES[f"baseline_{_model}"] = _delegate("bench_stages", "bench_baseline", "seed", _model)


def run_stage(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one stage in this process and return its figures with peak RSS."""
    t0 = time.perf_counter()
    result = dict(STAGES[name](args))
    result.setdefault("seconds", time.perf_counter() - t0)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _table(results: dict[str, Any]) -> str:
    lines = [f"{'stage':<24}{'seconds':>10}{'peak RSS MB':>14}  notes"]
    for name, r in results.items():
        if not isinstance(r, dict):
            continue
        notes = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in r.items()
            if k not in {"seconds", "peak_rss_mb"}
        )
        secs = r.get("seconds")
        rss = r.get("peak_rss_mb")
        lines.append(
            f"{name:<24}{'-' if secs is None else f'{secs:.1f}':>10}"
            f"{'-' if rss is None else f'{rss:.0f}':>14}  {notes}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen stages (all by default), each in a subprocess; write and print bench.json."""
    parser = argparse.ArgumentParser(prog="python -m thirtymusic_utils.bench", description=__doc__)
    parser.add_argument("--build-dir", default="build/bench")
    parser.add_argument("--profile", default="full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset")
    parser.add_argument("--stage", help=argparse.SUPPRESS)  # internal: run one stage here
    args = parser.parse_args(argv)
    Path(args.build_dir).mkdir(parents=True, exist_ok=True)
    if args.stage:
        print("BENCH " + json.dumps(run_stage(args.stage, args)), flush=True)
        return 0
    out = Path(args.build_dir) / "bench.json"
    results: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    for name in args.stages.split(","):
        cmd = [sys.executable, "-m", "thirtymusic_utils.bench", "--stage", name,
               "--build-dir", args.build_dir, "--profile", args.profile, "--seed", str(args.seed),
               "--data-dir", args.data_dir]  # fmt: skip
        print(f"== {name}", flush=True)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("BENCH ")]
        if proc.returncode or not line:
            results[name] = {"error": f"exit code {proc.returncode}"}
            print(proc.stdout[-2000:], file=sys.stderr)
        else:
            results[name] = json.loads(line[-1][6:])
        if name == "matrix" and "n_users" in results[name]:
            results["n_users"] = results[name]["n_users"]
        dense, ours = results.get("seed_dense_10k", {}), results.get("ours_10k", {})
        if dense.get("seconds") and ours.get("seconds"):
            results["speedup_10k"] = dense["seconds"] / ours["seconds"]
        results["profile"] = args.profile if not args.data_dir else args.data_dir
        out.write_text(json.dumps(results, indent=2) + "\n")
    print(_table(results))
    print(f"written: {out}")
    return 1 if any(isinstance(r, dict) and "error" in r for r in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
