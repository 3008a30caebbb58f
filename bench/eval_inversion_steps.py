"""Fewer inversion steps, measured on the trained toy model (issue 20, item 4).

DynVFX DDIM-inverts the source clip on a grid of `inversion.steps` steps (paper: 250) up to t = 899, and the edit's
anchor branch reads the reference latents at the sampling timesteps of the anchor window (t in [619, 899]; the
passes that start inside it, at 899, 779 and 679, read them at their first step). A "fast" preset would invert on
fewer steps. This script measures what 250, 100 and 50 inversion steps do, on held-out toy scenes, on the CPU:

- the grids: each must contain every sampling timestep (`dynvfx.inversion.inversion_timesteps` refuses a grid that
  misses one, before any work; `invert_clip` calls it first); recorded for every step count;
- the reference latents: on the first `--latent-scenes` scenes the clip is also inverted on the finest grid, 1000
  steps (every timestep of the model's 1000: no grid is finer, and it contains every other grid), and each step
  count's latents are compared with it at every saved sampling timestep, as relative L2 (||x - x_1000|| /
  ||x_1000||), summarised over the timesteps the edit reads (the anchor window) and at the pass starts; for scale,
  the relative change of the 1000-step latents from one sampling timestep to the next below it;
- the reconstruction: DDIM sampling from the top of each inversion (t = 899) back down the same grid to t = 0 with
  the inversion prompt (no guidance), against x_orig (the VAE encoding): relative L2 of the latents, and PSNR of
  what they decode to against what x_orig decodes to;
- the toy DynVFX table of bench/eval_toy_dynvfx.py (its default configuration, its functions imported: presence,
  PSNR outside the new object, every pass's alignment) at each step count, each scene with two sampling seeds
  (1000 + scene, as that script, and 2000 + scene), so that the table's run-to-run noise is measured: per metric the
  difference between the two seeds at the same step count, against the difference between step counts at the same
  seed;
- the conclusion (NOISE_RULE): the fewest steps whose table stays within that noise of the most steps' (250).

Everything else is bench/eval_toy_dynvfx.py's settings (its DEVIATIONS; inversion.steps is the variable here).

Writes bench/results/toy_inversion_steps.json after every inversion measurement and every edit, atomically, and
resumes from it (finished parts are skipped; a scene's inversions are run again when its edits are not done).

The scenes are `edit_cases(count)` of bench/eval_toy_dynvfx.py: held-out scenes of its seed, each with its new
object; the draw depends on the count (its 50 are other scenes), so a run resumes with its own count only.

  nice -n 10 python -m bench.eval_inversion_steps --count 12   # 12 scenes, the first 3 also against 1000 steps
  python -m bench.eval_inversion_steps --report                # the tables from the JSON only
  python -m bench.eval_inversion_steps --smoke                 # one scene, few steps, into a temporary folder
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.common import RESULTS_DIR, write_json
from bench.eval_toy_dynvfx import (DEVIATIONS, SETTINGS, SMOKE_OVERRIDES, configuration_stats, edit_cases,
                                   edit_config, evaluate_case, markdown_table, pick_threads, psnr_outside,
                                   resumed_results, run_scenes, scene_eval_parser)
from dynvfx.backbone import sampling_timesteps
from dynvfx.config import DynVFXConfig
from dynvfx.core import LOCK_FILE, DynVFXError
from dynvfx.inversion import ReferenceLatents, ddim_step, inversion_timesteps, invert_clip
from dynvfx.pipeline import EditSchedule
from dynvfx.toy_world import render_scenes

STEP_COUNTS = (250, 100, 50)    # the first is the one the others are compared with (the paper's)
FINEST_STEPS = 1000             # every timestep of the model's 1000
SEED_BASES = (1000, 2000)       # sampling.seed = base + scene number
RESULTS = RESULTS_DIR / "toy_inversion_steps.json"
SMOKE_STEP_COUNTS, SMOKE_FINEST = (20, 10), 40  # grids that contain SMOKE_OVERRIDES' 10-step schedule
TABLE_METRICS = ("presence", "psnr_vs_round_trip_mean", "psnr_vs_original_mean")  # + each pass's alignment
NOISE_RULE = ("a step count stays within the noise when, for every metric of the table (presence, the two mean "
              "PSNRs outside the new object, each pass's mean alignment), its difference from the most steps' "
              "table at the same seed, for each seed, is at most the metric's run-to-run noise: the largest "
              "difference between the two seeds' tables at any one step count; the conclusion is the fewest steps "
              "that stay within it, with every step count between them and the most staying within it too")


def run_name(steps: int, seed_base: int) -> str: return f"steps{steps}_seed{seed_base}"


# -- the grids --------------------------------------------------------------------------------------------------------

def grid_check(scheduler, steps: int, sampling_steps: int, top: int) -> dict:
    """Whether the `steps`-step grid holds every sampling timestep: counted here, and as `inversion_timesteps` (which
    `invert_clip` calls before any work) judges it, with its error when it refuses."""
    schedule = type(scheduler).from_config(scheduler.config)      # leave the backbone's scheduler as it is
    grid = set(sampling_timesteps(schedule, steps).tolist())
    missing = sorted(set(sampling_timesteps(schedule, sampling_steps).tolist()) - grid)
    try: climb, saved = inversion_timesteps(scheduler, steps, sampling_steps, max_timestep=top)
    except DynVFXError as error: return dict(steps=steps, accepted=False, missing=missing, error=str(error))
    return dict(steps=steps, accepted=True, missing=missing, grid_steps_to_top=len(climb), top=climb[-1],
                saved_timesteps=len(saved))


# -- the reference latents --------------------------------------------------------------------------------------------

def relative_l2(latents: torch.Tensor, reference: torch.Tensor) -> float:
    "||latents - reference|| / ||reference||, in float64."
    latents, reference = latents.double(), reference.double()
    return float((latents - reference).norm() / reference.norm())


@torch.no_grad()
def reconstruct(backbone, reference: ReferenceLatents, grid: list[int], prompt: str, pixels: torch.Tensor
                ) -> torch.Tensor:
    "DDIM sampling from the top of an inversion down its own `grid` (ascending) to clean latents, with `prompt`."
    num_frames, _, height, width = pixels.shape
    embeds = backbone.encode_prompt([prompt])
    rotary = backbone.rotary_embedding(backbone.token_grid(num_frames, height, width))
    alphas, final = backbone.scheduler.alphas_cumprod, float(backbone.scheduler.final_alpha_cumprod)
    down = [t for t in reversed(grid) if t <= reference.max_timestep]
    latents = reference.load(down[0], device=backbone.device)
    for t, below in zip(down, [*down[1:], None]):
        velocity = backbone.predict(latents, t, embeds, rotary)
        latents = ddim_step(latents, velocity, float(alphas[t]), final if below is None else float(alphas[below]))
    return latents.cpu()


def reconstruction(backbone, reference: ReferenceLatents, config: DynVFXConfig, pixels: torch.Tensor,
                   round_trip: torch.Tensor) -> dict:
    "The reconstruction of x_orig from the top of the inversion: relative L2 of the latents, PSNR of the pixels."
    grid, _ = inversion_timesteps(backbone.scheduler, config.inversion.steps, config.sampling.steps)
    started = time.perf_counter()
    latents = reconstruct(backbone, reference, grid, config.inversion.prompt, pixels)
    seconds = time.perf_counter() - started
    decoded = backbone.decode_latents(latents.to(backbone.dtype)).float().cpu()
    everywhere = torch.ones(decoded.shape[0], *decoded.shape[2:], dtype=torch.bool)
    return dict(relative_l2=round(relative_l2(latents, reference.clean_latents), 6),
                psnr_vs_round_trip=psnr_outside(round_trip, decoded, everywhere), seconds=round(seconds, 2))


def latent_errors(references: dict[int, ReferenceLatents], finest: int) -> dict:
    "Relative L2 of each step count's reference latents from the finest grid's, at every saved timestep."
    best = references[finest]
    timesteps = sorted(best.timesteps)
    below = [best.clean_latents] + [best.load(t) for t in timesteps[:-1]]
    errors = {str(steps): [round(relative_l2(ref.load(t), best.load(t)), 6) for t in timesteps]
              for steps, ref in references.items() if steps != finest}
    neighbour = [round(relative_l2(lower, best.load(t)), 6) for t, lower in zip(timesteps, below)]
    return dict(timesteps=timesteps, relative_l2=errors, neighbour_change=neighbour)


# -- the run ----------------------------------------------------------------------------------------------------------

def invert(backbone, pixels: torch.Tensor, config: DynVFXConfig, folder: Path) -> tuple[ReferenceLatents, float]:
    "Invert as bench/eval_toy_dynvfx.py's `evaluate_case` does (so that it finds the cache complete); the seconds."
    started = time.perf_counter()
    reference = invert_clip(backbone, pixels, config.inversion, folder, config.sampling.steps,
                            max_timestep=max(config.refinement.pass_timesteps), if_mismatch="rebuild", progress=False)
    return reference, time.perf_counter() - started


def overrides_for(case: dict, steps: int, seed_base: int, smoke: dict) -> dict:
    return {**smoke, "inversion.steps": steps, "sampling.seed": seed_base + case["index"]}


def measure_inversions(backbone, case: dict, entry: dict, references: dict, seconds: dict, args) -> None:
    "The reference-latent errors against the finest grid and every grid's reconstruction, into `entry`."
    pixels = render_scenes(case["scene"]).pixels[0]
    finest = references[args.finest]
    round_trip = backbone.decode_latents(finest.clean_latents.to(backbone.dtype)).float().cpu()
    measured = latent_errors(references, args.finest)
    measured["reconstruction"], measured["inversion_seconds"] = {}, {}
    for steps, reference in references.items():
        config = edit_config(case, overrides_for(case, steps, SEED_BASES[0], args.smoke_overrides))
        measured["reconstruction"][str(steps)] = reconstruction(backbone, reference, config, pixels, round_trip)
        measured["inversion_seconds"][str(steps)] = round(seconds[steps], 2)
    entry["inversion"] = measured


def scene_done(entry: dict, index: int, args) -> bool:
    "Whether a scene has every edit, and its inversion measurement if it is one of the first `latent_scenes`."
    edits = all(run_name(s, b) in entry["results"] for s in args.steps for b in SEED_BASES)
    return edits and (index >= args.latent_scenes or "inversion" in entry)


def run_scene(backbone, case: dict, entry: dict, args, save) -> None:
    "One scene: its inversions (and, on the first scenes, their measurement), then every step count's edits."
    pixels = render_scenes(case["scene"]).pixels[0]
    latent_scene = case["index"] < args.latent_scenes and "inversion" not in entry
    todo = [(s, b) for s in args.steps for b in SEED_BASES if run_name(s, b) not in entry["results"]]
    needed = [s for s in ([args.finest] if latent_scene else []) + list(args.steps)
              if latent_scene or any(steps == s for steps, _ in todo)]
    with tempfile.TemporaryDirectory(prefix="inversion-steps-") as work:
        references, seconds = {}, {}
        for steps in needed:
            pick_threads(args.threads)
            config = edit_config(case, overrides_for(case, steps, SEED_BASES[0], args.smoke_overrides))
            references[steps], seconds[steps] = invert(backbone, pixels, config, Path(work) / f"steps{steps}")
            print(f"scene {case['index']:2d} inversion {steps:4d} steps: {seconds[steps]:.1f} s", flush=True)
        if latent_scene:
            measure_inversions(backbone, case, entry, references, seconds, args); save()
        for steps, seed_base in todo:
            name, run_dir = run_name(steps, seed_base), Path(work) / run_name(steps, seed_base)
            shutil.copytree(Path(work) / f"steps{steps}", run_dir / "reference_latents",
                            ignore=shutil.ignore_patterns(LOCK_FILE))
            record = evaluate_case(backbone, case, ["default"], run_dir, max_threads=args.threads,
                                   overrides=overrides_for(case, steps, seed_base, args.smoke_overrides))["default"]
            record["inversion_seconds"] = round(seconds[steps], 2)   # the cache was complete: its own time
            entry["results"][name] = record; save()
            print(f"scene {case['index']:2d} {name:17s} found={record['found']!s:5s} "
                  f"psnr_rt={record['psnr_vs_round_trip']:6.2f} psnr_orig={record['psnr_vs_original']:6.2f} "
                  f"passes={[p['psnr_vs_original'] for p in record['passes']]} {record['seconds']:.0f} s", flush=True)


# -- the summary ------------------------------------------------------------------------------------------------------

def _mean(values) -> float | None:
    values = list(values)
    return round(statistics.fmean(values), 6) if values else None


def latent_summary(scenes: dict, settings: dict) -> dict:
    "Mean over the measured scenes of each step count's error per timestep, over the anchor window, at pass starts."
    measured = [s["inversion"] for s in scenes.values() if "inversion" in s]
    if not measured: return {}
    timesteps, window, starts = measured[0]["timesteps"], settings["anchor_timesteps"], settings["pass_starts"]
    at = lambda values, wanted: [v for t, v in zip(timesteps, values) if t in wanted]
    per_timestep = {steps: [_mean(m["relative_l2"][steps][i] for m in measured) for i in range(len(timesteps))]
                    for steps in measured[0]["relative_l2"]}
    neighbour = [_mean(m["neighbour_change"][i] for m in measured) for i in range(len(timesteps))]
    rows = {}
    for steps, values in per_timestep.items():
        rows[steps] = dict(anchor_window_mean=_mean(at(values, window)), anchor_window_max=max(at(values, window)),
                           at_pass_starts={str(t): v for t, v in zip(timesteps, values) if t in starts})
    reconstruction = {steps: dict(relative_l2=_mean(m["reconstruction"][steps]["relative_l2"] for m in measured),
                                  psnr_vs_round_trip=round(statistics.fmean(m["reconstruction"][steps]
                                                                            ["psnr_vs_round_trip"]
                                                                            for m in measured), 2),
                                  inversion_seconds=round(statistics.fmean(m["inversion_seconds"][steps]
                                                                           for m in measured), 2))
                      for steps in measured[0]["reconstruction"]}
    return dict(scenes=len(measured), timesteps=timesteps, per_timestep=per_timestep, neighbour_change=neighbour,
                neighbour_change_anchor_window_mean=_mean(at(neighbour, window)), errors=rows,
                reconstruction=reconstruction)


def table_metrics(stats: dict) -> dict[str, float]:
    "The table's numbers the noise rule compares: presence, the mean PSNRs outside, each pass's mean alignment."
    metrics = {name: stats[name] for name in TABLE_METRICS}
    metrics.update({f"pass {i + 1} alignment": a for i, a in enumerate(stats["pass_alignment_vs_original"])})
    return metrics


def fewest_within(within: dict[str, bool], step_counts: list[int]) -> int:
    "The fewest steps that stay within the noise, with every step count between them and the most within it too."
    fewest = step_counts[0]
    for steps in step_counts[1:]:
        if not within[str(steps)]: break
        fewest = steps
    return fewest


def noise_comparison(table: dict, step_counts: list[int]) -> dict:
    """Per metric: the seed-to-seed differences, the step-to-step ones at the same seed, the noise, what stays within
    (NOISE_RULE); and, for information, what stays within a stricter noise: the seeds apart at the most steps only."""
    metrics = {name: table_metrics(stats) for name, stats in table.items()}
    most, rows = step_counts[0], {}
    for metric in metrics[run_name(most, SEED_BASES[0])]:
        value = lambda steps, base: metrics[run_name(steps, base)][metric]
        seeds = {str(s): round(abs(value(s, SEED_BASES[0]) - value(s, SEED_BASES[1])), 4) for s in step_counts}
        step_differences = {str(s): {str(b): round(abs(value(s, b) - value(most, b)), 4) for b in SEED_BASES}
                            for s in step_counts[1:]}
        noise = max(seeds.values())
        rows[metric] = dict(seed_difference=seeds, noise=noise, step_difference=step_differences,
                            within={s: max(d.values()) <= noise for s, d in step_differences.items()},
                            within_strict={s: max(d.values()) <= seeds[str(most)]
                                           for s, d in step_differences.items()})
    within = {str(s): all(r["within"][str(s)] for r in rows.values()) for s in step_counts[1:]}
    strict = {str(s): all(r["within_strict"][str(s)] for r in rows.values()) for s in step_counts[1:]}
    return dict(rule=NOISE_RULE, metrics=rows, within=within,
                fewest_steps_within_noise=fewest_within(within, step_counts),
                within_strict=strict, fewest_steps_within_strict_noise=fewest_within(strict, step_counts))


def per_scene_differences(scenes: list[dict], step_counts: list[int]) -> dict:
    """Scene by scene, for information: the mean |difference| of its PSNRs and the count of presence flips, between
    the seeds at each step count, and from the most steps at the same seed."""
    most, first, second = step_counts[0], *SEED_BASES
    between = {str(s): [(run_name(s, first), run_name(s, second))] for s in step_counts}
    from_most = {str(s): [(run_name(s, b), run_name(most, b)) for b in SEED_BASES] for s in step_counts[1:]}
    readings = {"psnr_vs_round_trip": lambda r: r["psnr_vs_round_trip"],
                "pass 1 alignment": lambda r: r["passes"][0]["psnr_vs_original"],
                "presence flips": lambda r: float(r["found"])}

    def compare(read, pairs: list[tuple[str, str]], total: bool) -> float:
        gaps = [abs(read(sc["results"][x]) - read(sc["results"][y])) for sc in scenes for x, y in pairs]
        return int(sum(gaps)) if total else round(statistics.fmean(gaps), 3)

    both = lambda read, total: dict(between_seeds={s: compare(read, p, total) for s, p in between.items()},
                                    from_most_steps={s: compare(read, p, total) for s, p in from_most.items()})
    return {metric: both(read, metric == "presence flips") for metric, read in readings.items()}


def summarize(data: dict) -> dict:
    "The latent errors, the table over the scenes every run finished, the noise comparison and the conclusion."
    settings, step_counts = data["settings"], data["settings"]["step_counts"]
    names = [run_name(s, b) for s in step_counts for b in SEED_BASES]
    complete = [s for s in data["scenes"].values() if all(n in s["results"] for n in names)]
    summary = dict(latent_error=latent_summary(data["scenes"], settings), scenes_complete=len(complete))
    if complete:
        summary["table"] = {name: configuration_stats(complete, name) for name in names}
        summary["noise"] = noise_comparison(summary["table"], step_counts)
        summary["per_scene"] = per_scene_differences(complete, step_counts)
    return summary


# -- the report -------------------------------------------------------------------------------------------------------

def report(data: dict) -> str:
    "The grids, the latent errors, the toy table and the noise comparison as markdown."
    settings, summary = data["settings"], data["summary"]
    lines = ["| inversion steps | accepted | grid steps up to the top | sampling timesteps saved | missing |",
             "| --- | --- | --- | --- | --- |"]
    for steps, check in settings["grids"].items():
        lines.append(f"| {steps} | {check['accepted']} | {check.get('grid_steps_to_top', '')} "
                     f"| {check.get('saved_timesteps', '')} | {check.get('missing', check.get('error'))} |")
    latent = summary.get("latent_error")
    if latent:
        starts = list(next(iter(latent["errors"].values()))["at_pass_starts"])
        lines += ["", f"Reference latents against {settings['finest_steps']} steps ({latent['scenes']} scenes; "
                  f"relative L2; one sampling step's change over the anchor window: "
                  f"{latent['neighbour_change_anchor_window_mean']:.4f}):", "",
                  "| inversion steps | anchor window: mean / max | " + " | ".join(f"t = {t}" for t in starts)
                  + " | reconstruction: relative L2 / PSNR vs round trip | inversion s |",
                  "| --- | --- |" + " --- |" * len(starts) + " --- | --- |"]
        for steps, rec in latent["reconstruction"].items():
            row = latent["errors"].get(steps)
            errors = (f"{row['anchor_window_mean']:.4f} / {row['anchor_window_max']:.4f} | "
                      + " | ".join(f"{v:.4f}" for v in row["at_pass_starts"].values())) if row else \
                " | ".join(["(the reference)"] + [""] * len(starts))
            lines.append(f"| {steps} | {errors} | {rec['relative_l2']:.4f} / {rec['psnr_vs_round_trip']:.1f} dB "
                         f"| {rec['inversion_seconds']:.1f} |")
    if "table" in summary:
        lines += ["", f"The toy DynVFX table ({summary['scenes_complete']} scenes, every run):", "",
                  markdown_table({"all_scenes": summary["table"]})]
        noise, counts = summary["noise"], settings["step_counts"]
        lines += ["", "| metric | seeds apart at " + " / ".join(map(str, counts)) + " steps | noise | "
                  + " | ".join(f"{s} from {counts[0]} steps, seed {' / '.join(map(str, SEED_BASES))}"
                               for s in counts[1:]) + " |", "| --- | --- | --- |" + " --- |" * len(counts[1:])]
        for metric, row in noise["metrics"].items():
            steps_cells = [" / ".join(f"{v:g}" for v in row["step_difference"][str(s)].values())
                           + ("" if row["within"][str(s)] else " (over)") for s in counts[1:]]
            lines.append(f"| {metric} | " + " / ".join(f"{v:g}" for v in row["seed_difference"].values())
                         + f" | {row['noise']:g} | " + " | ".join(steps_cells) + " |")
        lines += ["", f"Within the noise: {noise['within']}; fewest steps within it: "
                  f"**{noise['fewest_steps_within_noise']}** (rule: {noise['rule']}).", "",
                  f"With the stricter noise (the seeds apart at {counts[0]} steps only): within "
                  f"{noise['within_strict']}; fewest steps {noise['fewest_steps_within_strict_noise']}."]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = scene_eval_parser(__doc__, RESULTS, budget_minutes=65)
    parser.add_argument("--latent-scenes", type=int, default=3,
                        help="the first scenes also inverted on the finest grid, for the reference-latent errors")
    args = parser.parse_args(argv)
    if args.report and not args.out.exists(): parser.error(f"{args.out}: no results yet; run without --report first")
    args.steps, args.finest, args.smoke_overrides = list(STEP_COUNTS), FINEST_STEPS, {}
    if args.smoke:
        args.count, args.latent_scenes, args.smoke_overrides = 1, 1, SMOKE_OVERRIDES
        args.steps, args.finest = list(SMOKE_STEP_COUNTS), SMOKE_FINEST
    return args


def run_settings(args: argparse.Namespace, backbone) -> dict:
    "What the JSON's `settings` records, the grid checks among them."
    config = edit_config(edit_cases(1)[0], dict(args.smoke_overrides))
    schedule = EditSchedule.from_config(config, backbone.scheduler)
    top = max(config.refinement.pass_timesteps)
    return dict(step_counts=args.steps, finest_steps=args.finest, seed_bases=list(SEED_BASES), scenes=args.count,
                latent_scenes=args.latent_scenes, sampling_steps=config.sampling.steps, top_timestep=top,
                anchor_timesteps=sorted(schedule.source_timesteps),
                pass_starts=[t for t in schedule.pass_starts if t in schedule.source_timesteps],
                grids={str(s): grid_check(backbone.scheduler, s, config.sampling.steps, top)
                       for s in [args.finest, *args.steps]},
                eval_settings=SETTINGS, eval_deviations=DEVIATIONS, torch=torch.__version__, threads=args.threads,
                **({"smoke_overrides": args.smoke_overrides} if args.smoke else {}))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.report:
        print(report(json.loads(args.out.read_text()))); return
    smoke_dir = None
    if args.smoke and args.out == RESULTS:
        smoke_dir = Path(tempfile.mkdtemp(prefix="inversion-steps-smoke-")); args.out = smoke_dir / RESULTS.name
    torch.set_num_threads(args.threads)
    from dynvfx.toy_world import load_toy_model
    backbone = load_toy_model()
    data = resumed_results(args.out, args.count)
    data.setdefault("settings", run_settings(args, backbone))
    data.setdefault("scenes", {})

    def save() -> None:
        data["summary"] = summarize(data)
        write_json(args.out, data)

    run_scenes(data, args.count, args.budget_minutes, lambda case, entry: run_scene(backbone, case, entry, args, save),
               done=lambda entry, index: scene_done(entry, index, args),
               budgeted=lambda index: index >= args.latent_scenes)   # the first scenes also measure latent errors
    save()
    print(report(data))
    if smoke_dir: shutil.rmtree(smoke_dir)


if __name__ == "__main__":
    main()
