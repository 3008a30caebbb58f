"""Whole clips in windows on the toy model, on the CPU (issue 23, items 1 and 5).

A toy scene of 40 frames (the toy model's window is 17 frames) with a camera pan: a small green square moving up
and a large brown box standing still on a striped sand background while the camera pans left. DynVFX is asked to
"add a small red circle that stays still" and edits the whole clip: four windows of 17 frames every 8 frames,
blended in latent space at every step (`dynvfx.windows`). Measured on the result:

- presence: `dynvfx.toy_world.detect_objects` finds the new object (a blob of its colour in at least half the frames)
  in every window's frames of the stitched result, and in every window's own decoded frames;
- continuity at the window borders, from each window's own decoded frames (before the pixels are stitched, so the
  pixel crossfade hides nothing): the new object's position (the centroid of its colour's largest blob, pixels) and
  colour (the mean of that blob, levels of 255) where two windows show the same frame, against the change between
  neighbouring frames inside a window; and the jump at the hand-over (the frame pair where the stitch's weights
  cross) when the clip is cut there from one window's frames to the next's, against the same frame-to-frame change;
- the same frame-to-frame changes in the stitched result, at the hand-overs and elsewhere;
- the same edit with the blend switched off (`--ablation`, `blend_latents` replaced by the identity: windows that
  share noise, captions and anchors but are never made to agree), for comparison.

And the cost: the wall time (and the process's CPU time) of the whole edit, inversion included, at 17, 40 and 80
frames (the scene's motions slowed down for longer clips so they stay inside the frame). The windows' number grows
with the length, and so should the time.

Settings as in `bench/eval_toy_dynvfx.py` (the paper's, except: inversion.steps = 50 up to t = 899,
masks.kernel_size = 3, a colour key for the segmentation, the toy model's 17 frames of 64x64 a window).

  nice -n 10 python -m bench.bench_windows            # all of it (about 15 minutes on 2 cores)
  python -m bench.bench_windows --report              # the tables from bench/results/toy_windows.json
  python -m bench.bench_windows --smoke               # a quick check of the script (few steps, temporary folder)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from bench.common import RESULTS_DIR, write_json
from dynvfx.config import DynVFXConfig, parse_config, apply_overrides
from dynvfx.core import atomic_write
from dynvfx.pipeline import DynVFXPipeline, invert_windows, plan_windows
from dynvfx.protocol import EditProtocol
from dynvfx.segmentation import ColourKeySegmenter
from dynvfx.toy_world import (OBJECT_COLOURS, TOY_CLIP, ToyObject, add_object, colour_masks, detect_objects,
                              edit_instruction, largest_blobs, load_toy_model, make_scene, object_names,
                              render_scenes, scene_captions)
from dynvfx.video_io import Clip
from dynvfx.windows import WindowPlan

RESULTS = RESULTS_DIR / "toy_windows.json"
FRAMES = RESULTS_DIR / "toy_windows_frames.npz"
LENGTHS = (17, 40, 80)                # the cost's clip lengths
MEASURED_LENGTH = 40                  # the clip whose result is measured
NEW = ToyObject("red", "circle", "small", "still")
NEW_OBJECT = "red circle"
SEED = 7
SETTINGS = {"video": {**TOY_CLIP, "fps": 8.0}, "model": {"dtype": "float32", "device": "cpu"},
            "inversion": {"steps": 50}, "masks": {"kernel_size": 3}, "sampling": {"seed": SEED},
            "segmentation": {"backend": "colour_key"}}
SMOKE_OVERRIDES = {"sampling.steps": 10, "inversion.steps": 10, "refinement.pass_timesteps": [899, 699]}
MIN_AREA = 20                         # pixels of the new object's blob for a frame to count as showing it


# -- the edit ---------------------------------------------------------------------------------------------------------

def long_scene(num_frames: int):
    "The scene at `num_frames` frames: its motions scaled so that the paths are those of the 40-frame scene."
    scale = MEASURED_LENGTH / num_frames
    objects = [ToyObject("green", "square", "small", "up", x=36.0, y=54.0, speed=0.6 * scale),
               ToyObject("brown", "box", "large", "still", x=16.0, y=30.0)]
    return make_scene(objects, background="sand", texture="striped", pan="left", pan_speed=0.5 * scale,
                      texture_period=14.0, texture_angle=0.6, num_frames=num_frames)


def edit_settings(scene, smoke: bool) -> DynVFXConfig:
    "SETTINGS with the scene's colour key (anchors exact, the new object at tolerance 45)."
    data = json.loads(json.dumps(SETTINGS))
    key = {name: [list(OBJECT_COLOURS[name.split()[0]]), 30] for name in object_names(scene, 0)}
    data["segmentation"]["colour_key"] = {**key, NEW_OBJECT: [list(OBJECT_COLOURS[NEW.colour]), 45]}
    config = parse_config(data, "bench_windows settings")
    return apply_overrides(config, SMOKE_OVERRIDES, source="--smoke") if smoke else config


def run_edit(backbone, num_frames: int, work: Path, smoke: bool, blend: bool = True, progress: bool = False) -> dict:
    "Invert and edit the scene of `num_frames` frames in its windows; the result, the plan and the times."
    scene = long_scene(num_frames)
    pixels = render_scenes(scene).pixels[0]
    config = edit_settings(scene, smoke)
    anchors = object_names(scene, 0)
    source_masks = ColourKeySegmenter({n: config.segmentation.colour_key[n] for n in anchors}).segment(pixels, anchors)
    protocol = EditProtocol(instruction=edit_instruction(NEW), source_caption=scene_captions(scene)[0],
                            target_caption=scene_captions(add_object(scene, NEW))[0], anchors=anchors,
                            new_object=NEW_OBJECT, model="bench/bench_windows.py (toy grammar)")
    plan = plan_windows(config, backbone, num_frames)
    pipeline = DynVFXPipeline(backbone, ColourKeySegmenter(config.segmentation.colour_key), config)
    wall, cpu = time.perf_counter(), time.process_time()
    references = invert_windows(backbone, pixels, plan, config.inversion, work / "reference_latents",
                                sampling_steps=config.sampling.steps, max_timestep=max(config.anchors.window),
                                if_mismatch="rebuild", progress=progress)
    inversion_wall = time.perf_counter() - wall
    identity = (lambda latents, plan: latents)
    with nullcontext() if blend else mock.patch("dynvfx.pipeline.blend_latents", identity):
        result = pipeline(Clip(pixels, 8.0), protocol, source_masks, references, run_dir=work / "run",
                          progress=progress)
    return dict(scene=scene, pixels=pixels, plan=plan, result=result, protocol=protocol,
                wall_s=time.perf_counter() - wall, cpu_s=time.process_time() - cpu, inversion_wall_s=inversion_wall)


# -- reading the new object -------------------------------------------------------------------------------------------

def readings(frames: torch.Tensor) -> list[dict | None]:
    "Per frame (F, 3, H, W): the new object's centroid (x, y) and mean colour, or None where it is not seen."
    blobs = largest_blobs(colour_masks(frames.float().cpu(), NEW.colour))
    found = []
    for frame, blob in zip(frames.float().cpu(), blobs):
        area = int(blob.sum())
        if area < MIN_AREA: found.append(None); continue
        y, x = torch.nonzero(blob, as_tuple=True)
        colour = (frame[:, blob] * 255).mean(1)
        found.append(dict(x=float(x.float().mean() + 0.5), y=float(y.float().mean() + 0.5), area=area,
                          colour=[float(c) for c in colour]))
    return found


def _distance(a: dict | None, b: dict | None) -> tuple[float, float] | None:
    "Position (pixels) and colour (levels, the largest channel) differences of two readings; None if one is missing."
    if a is None or b is None: return None
    position = ((a["x"] - b["x"]) ** 2 + (a["y"] - b["y"]) ** 2) ** 0.5
    return position, max(abs(p - q) for p, q in zip(a["colour"], b["colour"]))


def _stats(pairs: list[tuple[float, float] | None]) -> dict:
    "Median and largest position and colour differences over the pairs where both frames show the object."
    seen = [p for p in pairs if p is not None]
    if not seen: return dict(pairs=len(pairs), seen=0)
    position, colour = [p for p, _ in seen], [c for _, c in seen]
    return dict(pairs=len(pairs), seen=len(seen), position_median_px=round(statistics.median(position), 3),
                position_max_px=round(max(position), 3), colour_median=round(statistics.median(colour), 2),
                colour_max=round(max(colour), 2))


def hand_overs(plan: WindowPlan) -> list[int]:
    "The frame f of each border where the stitch hands over: (f, f + 1) straddle the crossing of the two weights."
    return [start + plan.overlap // 2 - 1 for start in plan.starts[1:]]


def measure(edit: dict, backbone) -> dict:
    "Presence per window, continuity at the borders (windows' own frames and the stitched clip) and the steps inside."
    plan, result = edit["plan"], edit["result"]
    n = plan.num_frames
    own = [backbone.decode_latents(result.latents[k:k + 1].to(backbone.dtype)).float().cpu()
           for k in range(plan.count)]                                     # each window's own frames (W, 3, H, W)
    own_readings = [readings(frames) for frames in own]
    stitched = readings(result.pixels)
    reading = lambda k, f: own_readings[k][f - plan.starts[k]]
    frames_of = lambda k: range(plan.starts[k], min(plan.starts[k] + plan.window, n))
    windows = []
    for k in range(plan.count):
        span = frames_of(k)
        in_result = detect_objects(result.pixels[span.start:span.stop][None], [NEW.colour])[0]
        in_own = detect_objects(own[k][:len(span)][None], [NEW.colour])[0]
        windows.append(dict(window=k, frames=[span.start, span.stop - 1], found=in_result.found,
                            frames_seen=in_result.frames_seen, found_in_own_frames=in_own.found,
                            frames_seen_in_own_frames=in_own.frames_seen))
    inside = [_distance(reading(k, f), reading(k, f + 1)) for k in range(plan.count) for f in frames_of(k)[:-1]]
    shared = [_distance(reading(k, f), reading(k + 1, f)) for k in range(plan.count - 1)
              for f in range(plan.starts[k + 1], min(plan.starts[k] + plan.window, n))]
    cuts = [_distance(reading(k, f), reading(k + 1, f + 1)) for k, f in enumerate(hand_overs(plan)) if f + 1 < n]
    handing = set(f for f in hand_overs(plan) if f + 1 < n)
    stitched_at = [_distance(stitched[f], stitched[f + 1]) for f in sorted(handing)]
    stitched_elsewhere = [_distance(stitched[f], stitched[f + 1]) for f in range(n - 1) if f not in handing]
    return dict(windows=windows, presence_all_windows=all(w["found"] for w in windows),
                frames_showing_new_object=sum(r is not None for r in stitched), num_frames=n,
                own_frames=dict(inside_window_steps=_stats(inside), same_frame_two_windows=_stats(shared),
                                cut_at_hand_over=_stats(cuts)),
                stitched=dict(steps_at_hand_overs=_stats(stitched_at), steps_elsewhere=_stats(stitched_elsewhere)),
                per_frame=dict(stitched=stitched, windows=own_readings))


def plan_record(plan: WindowPlan) -> dict:
    return dict(num_frames=plan.num_frames, window=plan.window, stride=plan.stride, windows=plan.count,
                starts=list(plan.starts), padded_frames=plan.padded_frames, overlap=plan.overlap,
                shared_latents=plan.shared_latents)


# -- the run ----------------------------------------------------------------------------------------------------------

def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", action="store_true", help="print the tables from the JSON, run nothing")
    parser.add_argument("--smoke", action="store_true", help="a quick check: few steps, a temporary folder")
    parser.add_argument("--no-ablation", action="store_true", help="skip the edit with the blend switched off")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    if args.report: print(report(json.loads(RESULTS.read_text()))); return
    if args.threads: torch.set_num_threads(args.threads)
    backbone = load_toy_model()
    results = dict(settings=dict(SETTINGS, new_object=NEW_OBJECT, instruction=edit_instruction(NEW),
                                 smoke=args.smoke, deviations="as bench/eval_toy_dynvfx.py; the clips are longer "
                                 "than the toy model's window of 17 frames and edited in windows"),
                   machine=dict(cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
                                platform=platform.platform(), torch=torch.__version__,
                                load_average_at_start=list(os.getloadavg())),
                   command="nice -n 10 python -m bench.bench_windows", cost={}, measured={})
    with tempfile.TemporaryDirectory() as tmp:
        edits = {}
        for length in LENGTHS:
            edit = run_edit(backbone, length, Path(tmp) / f"frames_{length}", args.smoke, progress=args.progress)
            edits[length] = edit
            results["cost"][str(length)] = dict(plan=plan_record(edit["plan"]), wall_s=round(edit["wall_s"], 2),
                                                cpu_s=round(edit["cpu_s"], 2),
                                                inversion_wall_s=round(edit["inversion_wall_s"], 2),
                                                edit_times_s={k: round(v, 2) for k, v in edit["result"].times.items()},
                                                load_average=list(os.getloadavg()))
            print(f"{length} frames: {edit['plan'].count} windows, {edit['wall_s']:.1f} s", flush=True)
        measured = edits[MEASURED_LENGTH]
        results["measured"]["blended"] = dict(plan=plan_record(measured["plan"]), **measure(measured, backbone))
        if not args.no_ablation:
            ablation = run_edit(backbone, MEASURED_LENGTH, Path(tmp) / "no_blend", args.smoke, blend=False,
                                progress=args.progress)
            results["measured"]["blend_off"] = dict(plan=plan_record(ablation["plan"]), **measure(ablation, backbone))
    results["cost"]["fit"] = linear_fit(results["cost"])
    target = Path(tempfile.mkdtemp()) / "toy_windows.json" if args.smoke else RESULTS
    write_json(target, results)
    source = (measured["pixels"] * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    edited = (measured["result"].pixels * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    frames_path = target.parent / FRAMES.name
    with atomic_write(frames_path) as partial:
        with open(partial, "wb") as f: np.savez_compressed(f, source=source, result=edited)
    print(report(results))
    print(f"written: {target}, {frames_path}")


def linear_fit(cost: dict) -> dict:
    "Least squares wall time = a + b * frames over the lengths measured, and each point's distance from the line."
    lengths = [int(k) for k in cost if k.isdigit()]
    x = np.array(lengths, float); y = np.array([cost[str(k)]["wall_s"] for k in lengths])
    slope, intercept = np.polyfit(x, y, 1)
    return dict(seconds_per_frame=round(float(slope), 3), intercept_s=round(float(intercept), 2),
                residuals_s={str(k): round(float(v - (intercept + slope * k)), 2) for k, v in zip(lengths, y)})


# -- the tables -------------------------------------------------------------------------------------------------------

def _position(stats: dict) -> str:
    "Median / largest position difference of `_stats`, in pixels."
    return f"{stats.get('position_median_px', float('nan')):.2f} / {stats.get('position_max_px', float('nan')):.2f} px"


def report(results: dict) -> str:
    "The cost table and the measurement tables as markdown."
    lines = ["| frames | windows | wall time | CPU time | of which inversion | wall time per window | per frame |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for key, c in results["cost"].items():
        if not key.isdigit(): continue
        windows = c["plan"]["windows"]
        lines.append(f"| {key} | {windows} | {c['wall_s']:.1f} s | {c['cpu_s']:.1f} s | {c['inversion_wall_s']:.1f} s "
                     f"| {c['wall_s'] / windows:.1f} s | {c['wall_s'] / int(key):.2f} s |")
    fit = results["cost"]["fit"]
    lines += ["", f"Least squares: wall time = {fit['intercept_s']:.1f} s + {fit['seconds_per_frame']:.2f} s x frames "
              f"(residuals {', '.join(f'{k}: {v:+.1f} s' for k, v in fit['residuals_s'].items())}).", ""]
    lines += ["| edit | new object found in windows | frames showing it | position: inside a window (median / max) "
              "| same frame, two windows | cut at the hand-over | colour: inside / two windows / cut |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, m in results["measured"].items():
        own = m["own_frames"]
        i, s, c = own["inside_window_steps"], own["same_frame_two_windows"], own["cut_at_hand_over"]
        found = sum(w["found"] for w in m["windows"])
        col = lambda r: f"{r.get('colour_median', float('nan')):.1f}"
        lines.append(f"| {name} | {found} of {len(m['windows'])} | {m['frames_showing_new_object']} of "
                     f"{m['num_frames']} | {_position(i)} | {_position(s)} | {_position(c)} "
                     f"| {col(i)} / {col(s)} / {col(c)} |")
    lines += ["", "| edit | stitched result: steps at the hand-overs (median / max) | steps elsewhere |",
              "| --- | --- | --- |"]
    for name, m in results["measured"].items():
        a, e = m["stitched"]["steps_at_hand_overs"], m["stitched"]["steps_elsewhere"]
        lines.append(f"| {name} | {_position(a)} | {_position(e)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
