"""The README's Performance table, built from bench/results/*.json (so the README and the results agree).

    python bench/summary.py            # prints the Markdown table
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def f(x: float | None, nd: int = 2) -> str:
    if x is None:
        return "–"
    return f"{x:,.{nd}f}"


def yes(ok: bool | None) -> str:
    return "–" if ok is None else ("yes" if ok else "**no**")


def reached(summary: dict[str, Any]) -> str:
    """Each method's median wall-clock ratio to grid and how many of its seeds got within 2% at all (a seed
    that never did counts its whole sweep, so a method whose pruning ends sweeps early looks faster)."""
    return ", ".join(f"{k} {f(v.get('wall_vs_grid'))}x ({v['seeds_reaching_2pct']}/{len(v['seeds'])})"
                     for k, v in summary.items() if k != "_")


def one_thread_note(p: dict[str, Any]) -> str:
    """The parallel-scaling runs against one worker on one thread (the sweeper gives a lone worker every core)."""
    if p.get("ratio_2_vs_1_thread") is None:
        return ""
    one, one_t1 = (r for r in p["runs"] if r["workers"] == 1)
    return (f"; against one worker on one thread: {f(p['ratio_2_vs_1_thread'])}x / "
            f"**{f(p['steady_ratio_2_vs_1_thread'])}x** (one worker: {f(one['sweep_wall_s'], 0)} s wall, "
            f"{f(one['sweep_cpu_s'], 0)} s CPU on every core vs {f(one_t1['sweep_wall_s'], 0)} s, "
            f"{f(one_t1['sweep_cpu_s'], 0)} s CPU on one thread)")


def rows() -> list[list[str]]:
    out: list[list[str]] = []
    if (o := load("overhead")):
        for r in o["results"]:
            s, n = r["summary"], r["steps"]
            loop, wall, cpu = (s[k]["median_of_paired_ratios"] for k in ("loop_s", "process_s", "process_cpu_s"))
            out.append([f"training loop, {n} steps: ftsweep vs plain trl", f"{f(s['loop_s']['ftsweep'])} s vs "
                        f"{f(s['loop_s']['plain'])} s (**{f(loop)}x**)", "≤ 1.05x", yes(loop <= 1.05),
                        "`python bench/overhead.py`"])
            out.append([f"whole process, {n} steps (wall / CPU)", f"{f(s['process_s']['ftsweep'], 1)} s vs "
                        f"{f(s['process_s']['plain'], 1)} s ({f(wall)}x); CPU {f(cpu)}x", "≤ 1.05x",
                        f"wall {yes(wall <= 1.05)}, CPU {yes(cpu <= 1.05)}", "`python bench/overhead.py`"])
        s = o["results"][-1]["summary"]
        out.append(["peak RSS, whole process", f"{f(s['peak_rss_mib']['ftsweep'], 0)} MiB vs "
                    f"{f(s['peak_rss_mib']['plain'], 0)} MiB ({f(s['peak_rss_mib']['median_of_paired_ratios'])}x)", "–",
                    "–", "`python bench/overhead.py`"])
        diff = max(r["summary"]["max_loss_diff"] for r in o["results"])
        out.append(["logged losses, same rows and masks", f"max difference {diff:.1e} at every logged step",
                    "< 1e-4", yes(diff < 1e-4), "`python bench/overhead.py`"])
    if (st := load("startup")):
        for name, r in st["results"].items():
            if name.startswith("ftsweep"):
                cpu = f", CPU {f(r['median_cpu_s'])} s" if r.get("median_cpu_s") is not None else ""
                out.append([f"`{name}`", f"{f(r['median_s'])} s{cpu}; imports {', '.join(r['heavy_imports']) or 'no torch/trl/peft/optuna'}",
                            "< 1.0 s", yes(r["median_s"] < 1.0), "`python bench/startup.py`"])
    if (p := load("padding")):
        b, m, v = p["batch_stats"], p["median"], p["tokens_per_s_vs_padding"]
        out.append(["real-token share: padding / group_by_length / packing",
                    " / ".join(f(b[k]["real_share"]) for k in ("padding", "group_by_length", "packing")),
                    "≥ 0.95 packed", yes(b["packing"]["real_share"] >= 0.95), "`python bench/padding.py`"])
        out.append([f"tokens/s, {p['steps']} steps: padding / group_by_length / packing",
                    " / ".join(f(m[k]["tokens_per_s"], 0) for k in ("padding", "group_by_length", "packing"))
                    + f" (packing **{f(v['packing'])}x**; at equal tokens {f(v['packing@equal_tokens'])}x)",
                    "packing ≥ 1.5x", yes(v["packing"] >= 1.5), "`python bench/padding.py`"])
    if (d := load("data_cache")):
        out.append([f"data time, {d['rows']:,} rows: cold / cache hit", f"{f(d['cold_s'], 1)} s / **{f(d['cached_s'])} s** "
                    f"({f(d['cold_over_cached'], 0)}x)", "hit < 0.3 s", yes(d["cached_s"] < 0.3), "`python bench/data_cache.py`"])
        peak = max(x["cold"]["peak_rss_mib"] for x in d["pairs"])
        out.append([f"peak RSS of a cold {d['rows']:,}-row build", f"{f(peak, 0)} MiB", "< 1,536 MiB", yes(peak < 1536),
                    "`python bench/data_cache.py`"])
    if (t := load("trial_overhead")):
        s, cmd = t["summary"], "`python bench/trial_overhead.py`"
        cold, warm = s["cold"], s["warm: reused worker"]
        out.append(["quickstart trial: start → first optimizer step, cold / warm worker",
                    f"{f(cold['median_start_to_first_step_s'], 1)} s / **{f(warm['median_start_to_first_step_s'], 2)} s**",
                    "warm < 5 s", yes(warm["median_start_to_first_step_s"] < 5), cmd])
        out.append(["quickstart trial: wall vs training, cold / warm worker",
                    " / ".join(f"{f(x['median_trial_wall_s'], 1)} s vs {f(x['median_training_s'], 2)} s "
                               f"({x['median_not_training_share']:.0%} not training)" for x in (cold, warm)), "–", "–", cmd])
        w = t["sweep_wall_s"]
        out.append([f"quickstart sweep end to end ({t['sweeps'][0]['n_trials']} trials, 2 at a time): cold / warm workers",
                    f"{f(w['cold'], 1)} s / {f(w['warm'], 1)} s: **{f(t['sweep_cold_over_warm'])}x**; "
                    f"{t['n_trials_compared']} equal-parameter trials identical cold and warm: "
                    f"{'yes' if t['results_identical'] else '**no**'}", "≥ 2x",
                    yes(t["sweep_cold_over_warm"] >= 2), cmd])
    if (x := load("proxy_spread")):
        for lora, s in x["spread"].items():
            out.append([f"proxy task, lora={lora}, {x['steps']} steps: worst / best lr eval loss",
                        f"{f(s['worst_eval_loss'])} (lr {s['worst_lr']:g}) / {f(s['best_eval_loss'])} (lr {s['best_lr']:g}): "
                        f"**{s['worst_over_best']:.2f}x**, optimum interior: {'yes' if s['optimum_interior'] else 'no'}",
                        "≥ 1.2x, interior", yes(s["worst_over_best"] >= 1.2 and s["optimum_interior"]),
                        "`python bench/proxy_spread.py`"])
    if (x := load("proxy_spread_em")):
        out.append([f"proxy task, lora=r8, {x['steps']} steps: exact match (all 80 validation rows), worst / best lr",
                    f"{f(x['worst_exact_match'], 3)} (lr {x['worst_lr']:g}) / {f(x['best_exact_match'], 3)} (lr {x['best_lr']:g})",
                    "best > worst", yes(x["best_exact_match"] > x["worst_exact_match"]),
                    "`python bench/proxy_spread.py --exact-match`"])
    if (g := load("generation_cost")):
        out.append(["generation eval (tiny model, CPU, greedy, batch from the memory model)",
                    f"{f(g['generation_s_per_100_rows'])} s per 100 validation rows", "–", "–",
                    "`python bench/generation_cost.py`"])
        out.append(["quickstart trial, objective=exact_match vs eval_loss (cold process; wall / CPU)",
                    f"**{f(g['wall_ratio'])}x** / {f(g['cpu_ratio'])}x ({g['pairs']} pair(s), load average "
                    f"{g['load_average_before']:.0f})", "≤ 1.3x", yes(g["wall_ratio"] <= 1.3 and g["cpu_ratio"] <= 1.3),
                    "`python bench/generation_cost.py`"])
    if (p := load("parallel_scaling")) and not p.get("gpu"):
        out.append([f"trials per hour, 2 trials at once vs 1 (CPU, 2 cores, {p['trials']} trials of {p['steps']} steps, "
                    "warm workers): over the whole sweep / steady state",
                    f"{f(p['ratio_2_vs_1'])}x / **{f(p['steady_ratio_2_vs_1'])}x**" + one_thread_note(p), "≥ 1.8x",
                    yes(p["steady_ratio_2_vs_1"] >= 1.8), "`python bench/parallel_scaling.py`"])
    if (p := load("parallel_scaling_gpu")):
        out.append([f"trials per hour, trials_per_gpu 2 vs 1 ({p['machine'].get('gpu', 'GPU')}, 1B shape, bf16 LoRA, "
                    f"{p['trials']} trials of {p['steps']} steps, warm workers): over the whole sweep / steady state",
                    f"{f(p['ratio_2_vs_1'])}x / **{f(p['steady_ratio_2_vs_1'])}x**", "–", "–",
                    "`python bench/parallel_scaling.py --gpu`"])
    if (e := load("sweep_efficiency_replay")):
        s = e["summary"]
        out.append([f"steps to within 2% of the best, replay, {len(e['seeds'])} seeds: grid / random / TPE / TPE+median / TPE+hyperband",
                    " / ".join(f(s[k]["steps_to_2pct_median"], 0) for k in s)
                    + f" (TPE+hyperband **{f(s['tpe+hyperband']['steps_vs_grid'])}x** grid)", "TPE+pruning ≤ 0.40x grid",
                    yes(min(s["tpe+median"]["steps_vs_grid"], s["tpe+hyperband"]["steps_vs_grid"]) <= 0.40),
                    "`python bench/sweep_efficiency_replay.py`"])
    if (e := load("sweep_efficiency")) and e.get("summary"):
        s, g = e["summary"], e["summary"].get("grid", {})
        out.append([f"real sweeps: wall-clock to within 2% of the best vs grid (seeds that got there), {len(e['seeds'])} seed(s), median",
                    reached(s) + f" (grid {f(g.get('wall_to_2pct_median'), 0)} s)", "default ≤ 0.40x grid",
                    yes((s.get("default", {}).get("wall_vs_grid") or 9) <= 0.40), "`python bench/sweep_efficiency.py`"])
    if (e := load("sweep_efficiency_exact_match")) and e.get("summary"):  # --objective exact_match (maximize)
        s, g = e["summary"], e["summary"].get("grid", {})
        out.append([f"real sweeps ranked on exact match: wall-clock to >= 0.98 x the best vs grid (seeds that got there), "
                    f"{len(e['seeds'])} seed(s), median",
                    reached(s) + f" (grid {f(g.get('wall_to_2pct_median'), 0)} s; best exact match {f(s['_']['best_any'])})",
                    "default ≤ 0.40x grid", yes((s.get("default", {}).get("wall_vs_grid") or 9) <= 0.40),
                    "`python bench/sweep_efficiency.py --objective exact_match`"])
    return out


def main() -> int:
    print("| figure (tiny model, CPU) | measured | target | met | command |")
    print("|---|---|---|---|---|")
    for r in rows():
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
