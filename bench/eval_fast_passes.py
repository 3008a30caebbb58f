"""Fewer passes and sampling steps for the fast preset, measured on the trained toy model (issue 20, items 5, 6).

The exact method samples six SDEdit passes (starts 899, 779, 679, 579, 479, 379: 190 steps at 50 sampling steps) and
segments the new object after each. After the fewest exact inversion steps (100, bench/eval_inversion_steps.py),
sampling is what a preset can still cut. This script measures which passes it can drop, on held-out toy scenes, on the
CPU, with the fast preset's 100 inversion steps:

- the candidates (CANDIDATES): the paper's six passes; every second of them (three); the first and the fourth (two);
  the first alone (one: read from the six-pass run's first pass, as bench/eval_toy_dynvfx.py's `one_pass`); and
  three passes on a 25-step sampling grid (three_coarse: its starts 879, 679, 479 are the grid's timesteps nearest
  the paper's 899, 679, 479). Every candidate starts at the top of the anchor window (the pass that draws the new
  object) and keeps the anchor window; each of its steps is the exact method's at its timestep;
- the toy DynVFX table of bench/eval_toy_dynvfx.py (its default configuration, its functions imported: presence, PSNR
  outside the new object against the VAE round trip and the original, the last pass's alignment) for each candidate,
  each scene with two sampling seeds (1000 + scene and 2000 + scene);
- each candidate's schedule on the toy model's scheduler (the same as CogVideoX-5B's): denoising steps, steps with the
  source branch, one-sample forwards, passes (each pass also decodes and segments once);
- the conclusion (NOISE_RULE): of the candidates whose table stays within the run-to-run noise of the six passes',
  the one with the fewest one-sample forwards.

The scenes are `edit_cases(count)` of bench/eval_toy_dynvfx.py, the same 12 as bench/eval_inversion_steps.py's at the
same count (so the six-pass runs repeat its `steps100` runs: the JSON records how far they are from them, when that
file is there). Writes bench/results/toy_fast_passes.json after every edit, atomically, and resumes from it.

  nice -n 10 python -m bench.eval_fast_passes --count 12
  python -m bench.eval_fast_passes --report          # the tables from the JSON only
  python -m bench.eval_fast_passes --smoke           # one scene, few steps, into a temporary folder
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch

from bench.common import RESULTS_DIR, write_json
from bench.eval_inversion_steps import RESULTS as INVERSION_STEPS_RESULTS
from bench.eval_inversion_steps import invert
from bench.eval_toy_dynvfx import (DEVIATIONS, SETTINGS, SMOKE_OVERRIDES, configuration_stats, edit_cases,
                                   edit_config, evaluate_case, markdown_table, pick_threads, resumed_results,
                                   run_scenes, scene_eval_parser)
from dynvfx.core import LOCK_FILE
from dynvfx.pipeline import EditSchedule
from dynvfx.toy_world import load_toy_model, render_scenes

INVERSION_STEPS = 100           # the fast preset's (bench/eval_inversion_steps.py)
CANDIDATES = {"six": {"refinement.pass_timesteps": [899, 779, 679, 579, 479, 379]},   # the first is the exact method
              "three": {"refinement.pass_timesteps": [899, 679, 479]},
              "two": {"refinement.pass_timesteps": [899, 579]},
              "one": {"refinement.pass_timesteps": [899]},
              "three_coarse": {"refinement.pass_timesteps": [879, 679, 479], "sampling.steps": 25}}
SMOKE_CANDIDATES = {"six": {"refinement.pass_timesteps": [899, 699, 499]},  # on SMOKE_OVERRIDES' 10-step grid
                    "two": {"refinement.pass_timesteps": [899, 499]}, "one": {"refinement.pass_timesteps": [899]}}
SEED_BASES = (1000, 2000)       # sampling.seed = base + scene number
RESULTS = RESULTS_DIR / "toy_fast_passes.json"
METRICS = ("presence", "psnr_vs_round_trip_mean", "psnr_vs_original_mean", "last_pass_alignment")
NOISE_RULE = ("a candidate stays within the noise when, for every metric (presence, the two mean PSNRs outside the "
              "new object, the last pass's mean alignment), its difference from the six passes' table at the same "
              "seed, for each seed, is at most the metric's run-to-run noise: the largest difference between the "
              "two seeds' tables of any one candidate; the conclusion is the candidate within it with the fewest "
              "one-sample forwards")


def run_name(candidate: str, seed_base: int) -> str: return f"{candidate}_seed{seed_base}"


def overrides_for(case: dict, candidate: dict, seed_base: int, smoke: dict) -> dict:
    return {**smoke, "inversion.steps": smoke.get("inversion.steps", INVERSION_STEPS),
            "sampling.seed": seed_base + case["index"], **candidate}


def schedule_of(backbone, candidate: dict, smoke: dict) -> dict:
    "A candidate's denoising steps, steps with the source branch, one-sample forwards (2 a step, 3 with it), passes."
    case = edit_cases(1)[0]
    config = edit_config(case, overrides_for(case, candidate, SEED_BASES[0], smoke))
    schedule = EditSchedule.from_config(config, backbone.new_scheduler(), backbone.model_timestep)
    return dict(steps=schedule.steps, source_steps=schedule.source_steps,
                one_sample_forwards=2 * schedule.steps + schedule.source_steps, passes=len(schedule.pass_starts))


def scene_done(entry: dict, args) -> bool:
    "Whether a scene has every candidate's edit at every seed."
    return all(run_name(c, b) in entry["results"] for c in args.candidates for b in SEED_BASES)


def run_scene(backbone, case: dict, entry: dict, args, save) -> None:
    "One scene: one inversion, then each candidate's edit at each seed (`one` read from `six`)."
    pixels = render_scenes(case["scene"]).pixels[0]
    todo = [(c, b) for c in args.candidates if c != "one" for b in SEED_BASES
            if run_name(c, b) not in entry["results"]]
    if not todo: return
    with tempfile.TemporaryDirectory(prefix="fast-passes-") as work:
        pick_threads(args.threads)
        config = edit_config(case, overrides_for(case, args.candidates["six"], SEED_BASES[0], args.smoke_overrides))
        _, seconds = invert(backbone, pixels, config, Path(work) / "inversion")
        print(f"scene {case['index']:2d} inversion: {seconds:.1f} s", flush=True)
        for candidate, seed_base in todo:
            name, run_dir = run_name(candidate, seed_base), Path(work) / run_name(candidate, seed_base)
            shutil.copytree(Path(work) / "inversion", run_dir / "reference_latents",
                            ignore=shutil.ignore_patterns(LOCK_FILE))
            one_too = candidate == "six" and "one" in args.candidates
            configurations = ["default", "one_pass"] if one_too else ["default"]
            overrides = overrides_for(case, args.candidates[candidate], seed_base, args.smoke_overrides)
            records = evaluate_case(backbone, case, configurations, run_dir, max_threads=args.threads,
                                    overrides=overrides)
            entry["results"][name] = records["default"]
            if "one_pass" in records: entry["results"][run_name("one", seed_base)] = records["one_pass"]
            save()
            record = records["default"]
            print(f"scene {case['index']:2d} {name:12s} found={record['found']!s:5s} "
                  f"psnr_rt={record['psnr_vs_round_trip']:6.2f} psnr_orig={record['psnr_vs_original']:6.2f} "
                  f"passes={[p['psnr_vs_original'] for p in record['passes']]} {record['seconds']:.0f} s", flush=True)


# -- the summary ------------------------------------------------------------------------------------------------------

def table_metrics(stats: dict) -> dict[str, float]:
    "The numbers the noise rule compares: presence, the mean PSNRs outside, the last pass's mean alignment."
    return dict(presence=stats["presence"], psnr_vs_round_trip_mean=stats["psnr_vs_round_trip_mean"],
                psnr_vs_original_mean=stats["psnr_vs_original_mean"],
                last_pass_alignment=stats["pass_alignment_vs_original"][-1])


def noise_comparison(table: dict, candidates: list[str], schedules: dict) -> dict:
    "Per metric: the seeds' differences, each candidate's difference from six at the same seed, the noise, verdicts."
    metrics = {name: table_metrics(stats) for name, stats in table.items()}
    rows = {}
    for metric in METRICS:
        value = lambda candidate, base: metrics[run_name(candidate, base)][metric]
        seeds = {c: round(abs(value(c, SEED_BASES[0]) - value(c, SEED_BASES[1])), 4) for c in candidates}
        from_six = {c: {str(b): round(abs(value(c, b) - value("six", b)), 4) for b in SEED_BASES}
                    for c in candidates[1:]}
        noise = max(seeds.values())
        rows[metric] = dict(seed_difference=seeds, noise=noise, difference_from_six=from_six,
                            within={c: max(d.values()) <= noise for c, d in from_six.items()},
                            within_strict={c: max(d.values()) <= seeds["six"] for c, d in from_six.items()})
    within = {c: all(r["within"][c] for r in rows.values()) for c in candidates[1:]}
    strict = {c: all(r["within_strict"][c] for r in rows.values()) for c in candidates[1:]}
    cheapest = lambda verdicts: min(["six"] + [c for c, ok in verdicts.items() if ok],
                                    key=lambda c: (schedules[c]["one_sample_forwards"], schedules[c]["passes"]))
    return dict(rule=NOISE_RULE, metrics=rows, within=within, cheapest_within_noise=cheapest(within),
                within_strict=strict, cheapest_within_strict_noise=cheapest(strict))


def against_inversion_steps(scenes: dict, smoke: bool) -> dict | None:
    """The six-pass runs against bench/eval_inversion_steps.py's `steps100` runs of the same scenes and seeds (the
    same edits, if nothing changed since): the largest |difference| of the final PSNRs outside."""
    if smoke or not INVERSION_STEPS_RESULTS.exists(): return None
    earlier = json.loads(INVERSION_STEPS_RESULTS.read_text())["scenes"]
    gaps = [abs(entry["results"][run_name("six", b)][key] - earlier[index]["results"][f"steps100_seed{b}"][key])
            for index, entry in scenes.items() if index in earlier for b in SEED_BASES
            if run_name("six", b) in entry["results"] and f"steps100_seed{b}" in earlier[index]["results"]
            for key in ("psnr_vs_round_trip", "psnr_vs_original")]
    return dict(compared=len(gaps), largest_psnr_difference_db=round(max(gaps), 4)) if gaps else None


def summarize(data: dict) -> dict:
    "The table over the scenes every run finished, the noise comparison and the conclusion."
    candidates = list(data["settings"]["candidates"])
    names = [run_name(c, b) for c in candidates for b in SEED_BASES]
    complete = [s for s in data["scenes"].values() if all(n in s["results"] for n in names)]
    summary = dict(scenes_complete=len(complete), six_against_inversion_steps=against_inversion_steps(
        data["scenes"], "smoke_overrides" in data["settings"]))
    if complete:
        summary["table"] = {name: configuration_stats(complete, name) for name in names}
        summary["noise"] = noise_comparison(summary["table"], candidates, data["settings"]["schedules"])
    return summary


def report(data: dict) -> str:
    "The candidates' schedules, the toy table and the noise comparison as markdown."
    summary, settings = data["summary"], data["settings"]
    candidates, schedules = list(settings["candidates"]), settings["schedules"]
    lines = ["| candidate | overrides | passes | steps | with the source branch | one-sample forwards |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {c} | {settings['candidates'][c]} | {schedules[c]['passes']} | {schedules[c]['steps']} "
              f"| {schedules[c]['source_steps']} | {schedules[c]['one_sample_forwards']} |" for c in candidates]
    if "table" not in summary: return "\n".join(lines + ["", "no scene has every run yet"])
    lines += ["", f"The toy DynVFX table ({summary['scenes_complete']} scenes, {settings['inversion_steps']} "
              "inversion steps; the name is the candidate and the seed base):", "",
              markdown_table({"all_scenes": summary["table"]}), "",
              "| metric | seeds apart: " + " / ".join(candidates) + " | noise | "
              + " | ".join(f"{c} from six, seed {' / '.join(map(str, SEED_BASES))}" for c in candidates[1:]) + " |",
              "| --- | --- | --- |" + " --- |" * len(candidates[1:])]
    noise = summary["noise"]
    for metric, row in noise["metrics"].items():
        cells = [" / ".join(f"{v:g}" for v in row["difference_from_six"][c].values())
                 + ("" if row["within"][c] else " (over)") for c in candidates[1:]]
        lines.append(f"| {metric} | " + " / ".join(f"{v:g}" for v in row["seed_difference"].values())
                     + f" | {row['noise']:g} | " + " | ".join(cells) + " |")
    lines += ["", f"Within the noise: {noise['within']}; the cheapest within it: "
              f"**{noise['cheapest_within_noise']}** (rule: {noise['rule']}).", "",
              f"With the stricter noise (the six passes' seeds apart only): within {noise['within_strict']}; "
              f"the cheapest {noise['cheapest_within_strict_noise']}."]
    check = summary.get("six_against_inversion_steps")
    if check: lines += ["", f"The six-pass runs against bench/eval_inversion_steps.py's steps100 runs: "
                            f"{check['compared']} PSNRs compared, largest difference "
                            f"{check['largest_psnr_difference_db']} dB."]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = scene_eval_parser(__doc__, RESULTS, budget_minutes=60)
    args = parser.parse_args(argv)
    if args.report and not args.out.exists(): parser.error(f"{args.out}: no results yet; run without --report first")
    args.candidates, args.smoke_overrides = dict(CANDIDATES), {}
    if args.smoke: args.count, args.candidates, args.smoke_overrides = 1, dict(SMOKE_CANDIDATES), SMOKE_OVERRIDES
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.report:
        print(report(json.loads(args.out.read_text()))); return
    smoke_dir = None
    if args.smoke and args.out == RESULTS:
        smoke_dir = Path(tempfile.mkdtemp(prefix="fast-passes-smoke-")); args.out = smoke_dir / RESULTS.name
    torch.set_num_threads(args.threads)
    backbone = load_toy_model()
    data = resumed_results(args.out, args.count)
    data.setdefault("settings", dict(candidates=args.candidates, inversion_steps=INVERSION_STEPS,
                                     seed_bases=list(SEED_BASES), scenes=args.count, eval_settings=SETTINGS,
                                     eval_deviations=DEVIATIONS, torch=torch.__version__, threads=args.threads,
                                     **({"smoke_overrides": args.smoke_overrides} if args.smoke else {})))
    data["settings"].pop("pass_sets", None)   # a run from before the candidates had their own settings
    data["settings"]["candidates"] = args.candidates
    data["settings"]["schedules"] = {c: schedule_of(backbone, overrides, args.smoke_overrides)
                                     for c, overrides in args.candidates.items()}
    data.setdefault("scenes", {})

    def save() -> None:
        data["summary"] = summarize(data)
        write_json(args.out, data)

    run_scenes(data, args.count, args.budget_minutes, lambda case, entry: run_scene(backbone, case, entry, args, save),
               done=lambda entry, index: scene_done(entry, args))
    save()
    print(report(data))
    if smoke_dir: shutil.rmtree(smoke_dir)


if __name__ == "__main__":
    main()
