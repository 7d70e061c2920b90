"""The benchmark scripts in bench/: the replay logic on a synthetic table (fast), and every script run
with --quick so none of them can rot (slow). No timed assertions: only what the figures must satisfy."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(ROOT / "bench"))


def _synthetic_table() -> dict:
    """Curves with a known optimum at lr 1e-3 (r 8): loss = 1 + |log10(lr) + 3| at the last step."""
    points = []
    for lr in (1e-5, 1e-4, 1e-3, 1e-2, 1e-1):
        for r in (4, 8):
            final = 1 + abs(__import__("math").log10(lr) + 3) + (0 if r == 8 else 0.5)
            points.append({"lr": lr, "r": r, "alpha_ratio": 1, "steps": [0, 10, 20, 30, 40],
                           "eval_loss": [6.0, 5.0, 4.0, 3.0, final]})
    return {"lrs": [1e-5, 1e-4, 1e-3, 1e-2, 1e-1], "max_steps": 40, "points": points, "command": "synthetic"}


def test_curves_take_the_nearest_point_or_interpolate_in_log_lr():
    se = _load("sweep_efficiency_replay")
    nearest = se.Curves(_synthetic_table())
    linear = se.Curves(_synthetic_table(), "linear")
    for curves in (nearest, linear):  # measured points come back exactly
        assert curves.final(1e-3, 8, 1) == 1.0 and curves.final(1e-2, 4, 1) == 2.5
        assert curves.final(1e-6, 8, 1) == curves.final(1e-5, 8, 1)  # clamped to the measured range
    assert nearest.final(10 ** -2.6, 8, 1) == 1.0 and nearest.final(10 ** -2.4, 8, 1) == 2.0
    # halfway between 1e-3 and 1e-2 in log10: the mean of the two curves
    assert abs(linear.final(10 ** -2.5, 8, 1) - 1.5) < 1e-12
    assert linear.curve(10 ** -2.5, 8, 1)[:4] == [6.0, 5.0, 4.0, 3.0]


def test_replay_spends_exactly_the_budget_and_grid_finds_the_grid_optimum():
    se = _load("sweep_efficiency_replay")
    curves = se.Curves(_synthetic_table())
    grid = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    budget = len(grid) * 2 * 40
    for method in se.METHODS:
        run = se.replay(method, 0, curves, budget, grid)
        assert run["steps_used"] <= budget
        assert [u for u, _ in run["trace"]] == sorted(u for u, _ in run["trace"])
        if method == "grid":
            assert run["n_complete"] == 10 and run["steps_used"] == budget and run["best"] == 1.0
        if method == "random":
            assert run["n_pruned"] == 0 and run["steps_used"] == budget  # 40-step trials fill it exactly
    trace = [[40, 3.0], [80, 1.2], [120, 1.0]]
    assert se.steps_to(trace, 1.02) == 120 and se.steps_to(trace, 1.3) == 80 and se.steps_to(trace, 0.5) is None


def test_sampler_repeats_counts_points_seen_before(tmp_path):
    sr = _load("sampler_repeats")
    one_point = {"lora.r": [8], "optimizer.lr": [1e-3]}
    assert sr.repeats("random", one_point, 5, 0) == 4 and sr.repeats("tpe", one_point, 5, 0) == 4
    assert sr.main(["--quick", "--out", str(tmp_path / "r.json")]) == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [(r["sampler"], r["n_trials"], len(r["repeats"])) for r in doc["results"]] == [("tpe", 10, 2), ("random", 10, 2)]
    assert all(0 <= n < 10 for r in doc["results"] for n in r["repeats"])


def test_lr_grid_has_three_points_per_decade_and_the_decade_points_exactly():
    se = _load("sweep_efficiency_replay")
    grid = se.lr_grid(3)
    assert len(grid) == 13 and grid[0] == 1e-5 and grid[-1] == 1e-1
    assert {1e-5, 1e-4, 1e-3, 1e-2, 1e-1} <= set(grid)


# ---------------------------------------------------------------------- every script, --quick (slow)
def _run(script: str, out: Path, cache_dir: Path, *extra: str) -> dict:
    env = dict(os.environ, FTSWEEP_BENCH_CACHE=str(cache_dir))
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--quick", "--out", str(out), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "|---|" in proc.stdout  # printed its table
    doc = json.loads(out.read_text())
    assert doc["machine"]["cpu_count"] and doc["versions"]["torch"]
    return doc


@pytest.mark.slow
@pytest.mark.bench  # (the fast path's imports are also checked in the default suite: test_config's cli_in_fresh_python)
def test_startup_quick_help_imports_nothing_heavy(tmp_path, cache_dir):
    doc = _run("startup.py", tmp_path / "s.json", cache_dir)
    res = doc["results"]
    assert set(res) >= {"ftsweep --help", "ftsweep train --help", "ftsweep train --cfg job", "ftsweep inspect --help"}
    for name, r in res.items():
        assert len(r["runs_s"]) == 3 and r["median_s"] > 0
        if name.startswith("ftsweep"):
            assert r["heavy_imports"] == [], name  # the fast path must stay free of torch & co


@pytest.mark.slow
@pytest.mark.bench
def test_overhead_quick_same_rows_give_identical_losses(tmp_path, cache_dir):
    doc = _run("overhead.py", tmp_path / "o.json", cache_dir)
    s = doc["results"][0]["summary"]
    assert doc["results"][0]["pairs"][0]["loss_steps_compared"] == 5
    assert s["max_loss_diff"] < 1e-4
    for key in ("process_s", "loop_s", "tokens_per_s", "peak_rss_mib"):
        assert s[key]["ftsweep"] > 0 and s[key]["plain"] > 0


@pytest.mark.slow
@pytest.mark.bench
def test_padding_quick_packing_has_no_padding(tmp_path, cache_dir):
    doc = _run("padding.py", tmp_path / "p.json", cache_dir)
    st = doc["batch_stats"]
    assert st["packing"]["real_share"] == 1.0
    assert st["padding"]["real_share"] < 1.0
    assert st["padding"]["batches"] == st["packing"]["batches"] == doc["steps"]
    assert all(doc["median"][m]["tokens_per_s"] > 0 for m in doc["median"])


@pytest.mark.slow
@pytest.mark.bench
def test_data_cache_quick_second_build_is_a_hit(tmp_path, cache_dir):
    doc = _run("data_cache.py", tmp_path / "d.json", cache_dir)
    pair = doc["pairs"][0]
    assert not pair["cold"]["cache_hit"] and pair["cached"]["cache_hit"]
    # the hit returns the rows the cold build made (2,000 rows, 10% validation; a few empty answers dropped)
    assert pair["cold"]["n_train"] == pair["cached"]["n_train"] > 1700
    assert pair["cold"]["n_eval"] == pair["cached"]["n_eval"] > 150


@pytest.mark.slow
@pytest.mark.bench
def test_trial_overhead_quick_times_every_phase_cold_and_warm(tmp_path, cache_dir):
    doc = _run("trial_overhead.py", tmp_path / "t.json", cache_dir)
    assert doc["missing_probes"] == [] and doc["results_identical"] is True and doc["n_trials_compared"] == 2
    assert [(s["mode"], s["probe"], s["n_trials"]) for s in doc["sweeps"]] == [("cold", True, 2), ("warm", True, 2)]
    # the pairs compared are matched on each trial's own overrides (a sampled learning rate among them)
    assert all(any(p.startswith("optimizer.lr=") for p in t["params"]) for s in doc["sweeps"] for t in s["trials"])
    assert {n: doc["summary"][n]["n"] for n in doc["summary"]} == {
        "cold": 2, "warm: first in worker": 1, "warm: reused worker": 1}
    for s in doc["sweeps"]:
        assert s["sweep_wall_s"] > 0
        for t in s["trials"]:
            reused = t["reused_worker"]
            assert reused == (s["mode"] == "warm" and t["trial"] > 0)
            for phase in ("start + compose", "data", "model", "lora", "tracker", "first step", "training loop"):
                assert t["phases"][phase] is not None and t["phases"][phase] >= 0, (phase, t)
            assert 0 < t["not_training_share"] < 1


@pytest.mark.slow
@pytest.mark.bench
def test_sweep_efficiency_quick_equal_budgets(tmp_path, cache_dir):
    doc = _run("sweep_efficiency_replay.py", tmp_path / "e.json", cache_dir)
    assert doc["replay"] is True and doc["interp"] == "nearest" and "nearest measured lr" in doc["how"]
    assert {r["method"] for r in doc["runs"]} == {"grid", "random", "tpe", "tpe+median", "tpe+hyperband"}
    assert all(r["steps_used"] <= doc["budget_steps"] for r in doc["runs"])
    assert doc["best_any_method"] == min(r["best"] for r in doc["runs"] if r["best"] is not None)


@pytest.mark.slow
@pytest.mark.bench
def test_proxy_spread_quick_a_good_lr_learns_the_task(tmp_path, cache_dir):
    doc = _run("proxy_spread.py", tmp_path / "x.json", cache_dir)
    runs = {r["lr"]: r for r in doc["runs"]}
    assert sorted(runs) == [1e-4, 1e-2, 1e-1]
    assert runs[1e-2]["eval_loss"] < runs[1e-2]["initial_eval_loss"] - 0.5  # answers are learnable
    assert doc["spread"]["r16"]["worst_over_best"] >= 1.0


@pytest.mark.slow
@pytest.mark.bench
def test_sweep_efficiency_quick_runs_every_method_as_a_real_sweep(tmp_path, cache_dir):
    doc = _run("sweep_efficiency.py", tmp_path / "real.json", cache_dir)
    se = _load("sweep_efficiency")
    assert doc["replay"] is False and doc["methods"] == list(se.METHODS) and doc["seeds"] == [0]
    for r in doc["runs"]:
        assert len(r["trials"]) == 4, r["method"]  # every method ran its 4 trials for real
        assert all(t["state"] in ("COMPLETE", "PRUNED") for t in r["trials"])
        assert all(t["finished_s"] is not None and 0 < t["finished_s"] <= r["sweep_wall_s"] + 1 for t in r["trials"])
    grid = next(r for r in doc["runs"] if r["method"] == "grid")
    assert sorted((t["params"]["optimizer.lr"], t["params"]["lora.r"]) for t in grid["trials"]) == [
        (1e-3, 4), (1e-3, 8), (3e-2, 4), (3e-2, 8)]
    s = doc["summary"]
    assert s["_"]["best_any"] == min(t["value"] for r in doc["runs"] for t in r["trials"] if t["state"] == "COMPLETE")
    assert s["grid"]["wall_vs_grid"] == 1.0 and set(s) == {"_", *se.METHODS}


def test_sweep_efficiency_summary_counts_wall_and_steps_to_the_target():
    se = _load("sweep_efficiency")

    def trial(value, steps, end, state="COMPLETE"):
        return {"state": state, "value": value, "steps": steps, "finished_s": end, "params": {}}

    runs = [
        {"method": "grid", "seed": 0, "sweep_wall_s": 100.0,
         "trials": [trial(3.0, 60, 20.0), trial(2.0, 60, 40.0), trial(2.5, 60, 60.0)]},
        {"method": "default", "seed": 0, "sweep_wall_s": 50.0,
         "trials": [trial(None, 20, 5.0, "PRUNED"), trial(2.03, 60, 10.0), trial(4.0, 60, 30.0)]},
    ]
    s = se.summarize(runs)
    assert s["_"]["best_any"] == 2.0 and s["_"]["target"] == 2.04 and s["_"]["budget_s"] == 40.0
    assert s["grid"]["wall_to_2pct_median"] == 40.0 and s["grid"]["steps_to_2pct_median"] == 120
    assert s["default"]["wall_to_2pct_median"] == 10.0 and s["default"]["steps_to_2pct_median"] == 80
    assert s["default"]["wall_vs_grid"] == 0.25 and s["default"]["pruned_median"] == 1
    assert s["default"]["best_at_budget_median"] == 2.03 and s["grid"]["best_at_budget_median"] == 2.0


def test_sweep_efficiency_summary_ranks_exact_match_by_maximizing():
    """--objective exact_match: the best is the highest value, "within 2%" means >= best * 0.98, and a sweep
    whose best stays below that counts as its whole sweep (never as reaching the target)."""
    se = _load("sweep_efficiency")
    assert se.objective_direction("exact_match") == "maximize" and se.objective_direction("eval_loss") == "minimize"
    assert se.out_path("eval_loss") == se.OUT and se.out_path("exact_match").name == "sweep_efficiency_exact_match.json"

    def trial(value, steps, end, state="COMPLETE"):
        return {"state": state, "value": value, "steps": steps, "finished_s": end, "params": {}}

    runs = [
        {"method": "grid", "seed": 0, "sweep_wall_s": 100.0,
         "trials": [trial(0.5, 60, 20.0), trial(0.8, 60, 40.0), trial(0.6, 60, 60.0)]},
        {"method": "default", "seed": 0, "sweep_wall_s": 50.0,  # 0.785 >= 0.784: within 2%; 0.9 > 0.8 was never seen
         "trials": [trial(None, 20, 5.0, "PRUNED"), trial(0.785, 60, 10.0), trial(0.1, 60, 30.0)]},
        {"method": "random", "seed": 0, "sweep_wall_s": 70.0,  # 0.78 < 0.784: never within 2%
         "trials": [trial(0.78, 60, 15.0), trial(0.2, 60, 35.0)]},
    ]
    s = se.summarize(runs, "maximize")
    assert s["_"]["best_any"] == 0.8 and s["_"]["target"] == pytest.approx(0.784) and s["_"]["direction"] == "maximize"
    assert s["grid"]["wall_to_2pct_median"] == 40.0 and s["grid"]["steps_to_2pct_median"] == 120
    assert s["default"]["wall_to_2pct_median"] == 10.0 and s["default"]["steps_to_2pct_median"] == 80
    assert s["default"]["wall_vs_grid"] == 0.25 and s["default"]["seeds_reaching_2pct"] == 1
    assert s["random"]["seeds_reaching_2pct"] == 0 and s["random"]["wall_to_2pct_median"] == 70.0  # its whole sweep
    assert s["grid"]["best_median"] == 0.8 and s["default"]["best_median"] == 0.785 and s["random"]["best_median"] == 0.78
    assert s["default"]["best_at_budget_median"] == 0.785 and s["grid"]["best_at_budget_median"] == 0.8  # budget 40 s
    # the same values read as losses (minimize) rank the other way round
    low = se.summarize(runs)
    assert low["_"]["best_any"] == 0.1 and low["default"]["seeds_reaching_2pct"] == 1 and low["grid"]["seeds_reaching_2pct"] == 0
    # the generated sweep file makes exact match the trials' objective; eval loss keeps the config's own
    spec = {"lr": [1e-4, 1e-1], "rs": [4], "ratios": [1], "grid_lrs": [1e-3], "n_trials": 2, "max_steps": 10,
            "eval_every": 5, "n_startup": 2, "workers": 1}
    assert "override /objective: exact_match" in se.sweep_yaml("tpe", 0, {**spec, "objective": "exact_match"})
    assert "/objective" not in se.sweep_yaml("tpe", 0, {**spec, "objective": "eval_loss"})
    # "default" is what ships for each objective: sweep=quickstart objective=<it> (exact match: its by_objective file)
    from ftsweep.config.compose import compose

    em = se.method_settings("default", n_startup=2, eval_every=50, max_steps=400, objective="exact_match")
    loss = se.method_settings("default", n_startup=2, eval_every=10, max_steps=60)
    assert em["pruner"]["n_warmup_steps"] == 200 and loss["pruner"]["n_warmup_steps"] == 20
    assert loss["pruner"]["name"] == compose(["sweep=quickstart"], hydra=True).hydra.sweeper.pruner.name == "median"
    assert em["sampler"] == loss["sampler"] and em["sampler"]["name"] == "tpe"


@pytest.mark.slow
@pytest.mark.bench
def test_parallel_scaling_quick_runs_one_and_two_workers(tmp_path, cache_dir):
    doc = _run("parallel_scaling.py", tmp_path / "p.json", cache_dir)
    # one worker with the sweeper's threads, the same on one thread, two workers
    assert [(r["workers"], r["omp_num_threads"]) for r in doc["runs"]] == [(1, None), (1, "1"), (2, None)]
    assert all(r["n_trials"] == 2 and r["complete"] == 2 and r["trials_per_hour"] > 0 for r in doc["runs"])
    assert doc["ratio_2_vs_1"] > 0 and doc["ratio_2_vs_1_thread"] > 0


def test_parallel_scaling_steady_rate_leaves_out_every_workers_first_trial():
    """Two workers finish their first trials together: counting from the very first finish would credit the
    partner's first trial to the steady state (the H200 run: 2.89x by that count, 1.97x by this one)."""
    steady_rate = _load("parallel_scaling").steady_rate
    assert steady_rate([10.0, 20.0, 30.0, 40.0], 1) == pytest.approx(3 / 30 * 3600)
    assert steady_rate([10.0, 10.5, 20.0, 20.5], 2) == pytest.approx(2 / 10 * 3600)
    assert steady_rate([10.0, 10.5], 2) is None


@pytest.mark.parametrize("keep", [False, True])
def test_scratch_folder_is_removed_at_exit_unless_kept(keep):
    """A benchmark's working folder (sweeps, runs) goes when the script ends, also on an error; --keep keeps it."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from _common import scratch; "
            "d = scratch('ftsweep-test-scratch-', sys.argv[2] == '1'); (d / 'run').mkdir(); print(d, flush=True); "
            "raise SystemExit('boom')")
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "bench"), "1" if keep else "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "boom" in proc.stderr
    folder = Path(proc.stdout.splitlines()[0])
    try:
        assert (folder / "run").is_dir() is keep
        assert (f"working folder kept: {folder}" in proc.stdout) is keep
    finally:
        if keep:
            import shutil

            shutil.rmtree(folder)
