"""DynVFX on the toy model, where the right answer depends on the scene (groundwork for issue 25).

Held-out, seeded toy edits of three kinds, each with a ground truth rendered from the toy world's exact geometry
(the target scene with the new object added as the instruction implies, `add_object` / `make_scene` and
`render_scenes`), and a measurement that compares the edited clip with it:

- `still_in_pan`: "add a <size> <colour> <shape> that stays still" to a clip whose camera pans over a striped or
  checkered background (so the pan shows in the pixels). The right answer moves with the background. Measured: the
  new object's per-frame centre in the result against the ground truth's, after removing their mean offset (the
  instruction does not say where the object goes): mean distance in pixels and the share of frames within
  TRACK_TOLERANCE_PX; and its fitted velocity (pixels a frame) against the ground truth's.
- `crossing`: a new object whose path crosses a still anchor; the target caption lists it after the anchor (drawn in
  front, as `add_object` does) or before it (drawn behind: the toy world draws objects in caption order). Measured:
  in the frames where the new object touches the anchor, the share of the overlap won by the new object's colour
  (`front_share`: pixels of the anchor's exact source mask showing the new colour, against those plus the pixels the
  new object lost to the anchor, read from its area deficit) and the order it implies, against the ground truth's.
  The same reading on the ground truth's own render is recorded (`truth_front_share`) as a check of the reading.
- `moving_anchor`: a new object that stays still next to an anchor that moves (no pan). Measured: the new object's
  offset from the anchor's centre over time (both read from the result) against the ground truth's, mean-aligned
  like the tracks above, and the offset's fitted velocity.

Every edit is also measured as bench/eval_toy_dynvfx.py does (presence, PSNR outside the mask, every pass), with
its functions (edit_config, measure, RecordingSegmenter, one_pass_from_default), the same SETTINGS and deviations.

Configurations (settings overrides over the default's): default; anchors_off (anchors.mode="off"); anchors_full
and anchors_masked (anchors.mode "full", "masked"); window_wide (anchors.window=[479, 979]: the passes start at
t = 899, so in effect [479, 899]); window_narrow ([759, 899]); one_pass (refinement.pass_timesteps=[899], read from
the default run's first pass, which does not depend on the later ones; bench/eval_toy_dynvfx.py checked it against
a real run: identical pixels). Three more, run apart as a test of an account of the table (`still_in_pan` only):
default_pan_unsaid, anchors_off_pan_unsaid and anchors_full_pan_unsaid, those three with the target caption's
camera clause ("and the camera pans left") removed, so that the text no longer tells the model how the scene
moves. Each with every sampling seed of `--seeds` (sampling.seed = 1000 + 10,000 * seed + case number). The source
clip is inverted once per case.

Writes bench/results/toy_integration.json after every edit (bench.common.write_json) and resumes from it (finished
(case, configuration, seed) triples are skipped). `--report` prints markdown tables: per kind, each metric per
configuration as its mean over the seeds with the per-seed means.

  nice -n 10 python -m bench.eval_toy_integration                      # 10 cases a kind, 7 configurations, 2 seeds
  nice -n 10 python -m bench.eval_toy_integration --count 4 --configurations default anchors_off --seeds 0
  python -m bench.eval_toy_integration --report                        # the tables from the JSON only
  python -m bench.eval_toy_integration --kinds still_in_pan --seeds 0 --configurations default_pan_unsaid \
      anchors_off_pan_unsaid anchors_full_pan_unsaid --out bench/results/toy_integration_pan_unsaid.json  # the account
  python -m bench.eval_toy_integration --smoke                         # one case a kind, few steps, temporary folder
  # on a GPU machine: N processes, each its share of the cases in its own JSON, then merged into one
  python -m bench.eval_toy_integration --device cuda --threads 1 --shard 3/8 --out shards/part3.json
  python -m bench.eval_toy_integration --merge shards/part*.json           # into --out (finished results kept)
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import RESULTS_DIR, write_json
from bench.eval_toy_dynvfx import (DEVIATIONS, SETTINGS, SMOKE_OVERRIDES, RecordingSegmenter, edit_config,
                                   inversion_top, load_model, measure, one_pass_from_default, pick_threads)
from dynvfx.inversion import invert_clip
from dynvfx.pipeline import DynVFXPipeline
from dynvfx.protocol import EditProtocol
from dynvfx.segmentation import ColourKeySegmenter
from dynvfx.toy_world import (BACKGROUND_COLOURS, BOX_ASPECT, MOTIONS, OBJECT_COLOURS, PANS, SHAPES, SIZES, TOY_CLIP,
                              SceneBatch, ToyObject, add_object, edit_instruction, is_heldout, largest_blobs,
                              make_scene, object_names, palette_index, render_scenes, scene_captions)
from dynvfx.video_io import Clip

CASE_SEED = 60_000            # used nowhere else (bench/eval_toy_dynvfx.py: 50,000; the model card 20,000-40,000)
KINDS = ("still_in_pan", "crossing", "moving_anchor")
TRACK_TOLERANCE_PX = 1.5      # a frame's centre within this of the ground truth's (after the mean offset) counts
MIN_CONTACT_PIXELS = 8        # fewer overlap pixels over the clip than this: no contact, no depth reading
AREA_SLACK = 0.08             # area changes under this share of the object's area are rasterisation, not occlusion
RESULTS = RESULTS_DIR / "toy_integration.json"
CONFIGURATIONS = {
    "default": {}, "anchors_off": {"anchors.mode": "off"}, "anchors_full": {"anchors.mode": "full"},
    "anchors_masked": {"anchors.mode": "masked"}, "window_wide": {"anchors.window": [479, 979]},
    "window_narrow": {"anchors.window": [759, 899]}, "one_pass": {"refinement.pass_timesteps": [899]}}
MAIN_CONFIGURATIONS = list(CONFIGURATIONS)  # the table's; the two below test an account of it (still_in_pan only)
PAN_UNSAID = {"default_pan_unsaid": "default", "anchors_off_pan_unsaid": "anchors_off",
              "anchors_full_pan_unsaid": "anchors_full"}
CONFIGURATIONS.update({name: CONFIGURATIONS[base] for name, base in PAN_UNSAID.items()})
SMOKE_CONFIGURATIONS = ["default", "anchors_off"]
FRAMES, HEIGHT, WIDTH = TOY_CLIP["num_frames"], TOY_CLIP["height"], TOY_CLIP["width"]


# -- the cases --------------------------------------------------------------------------------------------------------

def half_extent(shape: str, size: str) -> tuple[float, float]:
    "Half width and half height of a toy object in pixels (at the toy clip's size)."
    side = SIZES[size] * min(HEIGHT, WIDTH) / 64
    return (side * BOX_ASPECT / 2 if shape == "box" else side / 2), side / 2


def frame_velocity(motion: str, speed: float, camera: float) -> tuple[float, float]:
    "An object's (x, y) velocity in the frame, pixels a frame: its own minus the camera's."
    dx, dy = MOTIONS[motion]
    return dx * speed - camera, dy * speed


def start_range(half: float, travel: float, extent: int, margin: float = 1.0) -> tuple[float, float]:
    "The first-frame centres along one axis that keep an object of half extent `half` travelling `travel` in frame."
    return half + margin - min(travel, 0.0), extent - half - margin - max(travel, 0.0)


class Draw:
    "Seeded picks for the cases: the same cases on any machine."
    def __init__(self, seed: int): self.generator = torch.Generator().manual_seed(seed)
    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=self.generator))
    def pick(self, options):
        options = list(options)
        return options[int(torch.randint(len(options), (), generator=self.generator))]


def place(draw: Draw, shape: str, size: str, velocity: tuple[float, float]) -> tuple[float, float] | None:
    "A random first-frame centre whose path stays in the frame; None when the path does not fit."
    half_w, half_h = half_extent(shape, size)
    (low_x, high_x), (low_y, high_y) = (start_range(half_w, velocity[0] * (FRAMES - 1), WIDTH),
                                        start_range(half_h, velocity[1] * (FRAMES - 1), HEIGHT))
    if low_x > high_x or low_y > high_y: return None
    return draw.uniform(low_x, high_x), draw.uniform(low_y, high_y)


def random_object(draw: Draw, used: set[str], motions: list[str], camera: float, size: str | None = None,
                  speed: float | None = None) -> ToyObject | None:
    "An object of a colour not in `used`, one of `motions`, placed so its path stays in the frame."
    colour, shape = draw.pick(c for c in OBJECT_COLOURS if c not in used), draw.pick(SHAPES)
    size, motion = size or draw.pick(SIZES), draw.pick(motions)
    speed = 0.0 if motion == "still" else (speed or draw.uniform(1.2, 1.8))
    centre = place(draw, shape, size, frame_velocity(motion, speed, camera))
    return None if centre is None else ToyObject(colour, shape, size, motion, centre[0], centre[1], speed or 1.5)


def background_settings(draw: Draw, textured: bool) -> dict:
    "Background, texture and its geometry; `textured`: stripes or checks that show a pan (stripes never horizontal)."
    texture = draw.pick(["striped", "checkered"] if textured else ["plain", "striped", "checkered"])
    angle = draw.uniform(-math.pi / 4, math.pi / 4) % math.pi
    return dict(background=draw.pick(BACKGROUND_COLOURS), texture=texture, texture_period=draw.uniform(10, 20),
                texture_angle=angle, texture_phase=draw.uniform(0, 2 * math.pi))


def draw_still_in_pan(draw: Draw) -> tuple[list[ToyObject], ToyObject, dict, str] | None:
    "One or two anchors (any motion) under a camera pan over a texture; the new object stays still."
    pan, pan_speed = draw.pick(["left", "right"]), draw.uniform(0.5, 0.6)
    camera = PANS[pan] * pan_speed
    anchors = []
    for _ in range(draw.pick([1, 2])):
        anchor = random_object(draw, {a.colour for a in anchors}, list(MOTIONS), camera)
        if anchor is None: return None
        anchors.append(anchor)
    new = random_object(draw, {a.colour for a in anchors}, ["still"], camera)
    scene = dict(pan=pan, pan_speed=pan_speed, **background_settings(draw, textured=True))
    return (None if new is None else (anchors, new, scene, "front"))


def draw_crossing(draw: Draw) -> tuple[list[ToyObject], ToyObject, dict, str] | None:
    "A large still anchor; a new object moving through it, mid-clip, listed after it (in front) or before (behind)."
    anchor = random_object(draw, set(), ["still"], 0.0, size="large")
    colour, shape, size = (draw.pick(c for c in OBJECT_COLOURS if c != anchor.colour), draw.pick(SHAPES),
                           draw.pick(SIZES))
    motion, speed = draw.pick(["left", "right", "up", "down"]), draw.uniform(1.2, 1.8)
    dx, dy = MOTIONS[motion]
    x = anchor.x - dx * speed * (FRAMES - 1) / 2 + draw.uniform(-2, 2) * (dx == 0)
    y = anchor.y - dy * speed * (FRAMES - 1) / 2 + draw.uniform(-2, 2) * (dy == 0)
    half_w, half_h = half_extent(shape, size)
    low_x, high_x = start_range(half_w, dx * speed * (FRAMES - 1), WIDTH)
    low_y, high_y = start_range(half_h, dy * speed * (FRAMES - 1), HEIGHT)
    if not (low_x <= x <= high_x and low_y <= y <= high_y): return None
    new = ToyObject(colour, shape, size, motion, x, y, speed)
    return [anchor], new, dict(**background_settings(draw, textured=False)), draw.pick(["front", "behind"])


def draw_moving_anchor(draw: Draw) -> tuple[list[ToyObject], ToyObject, dict, str] | None:
    "A moving anchor (and maybe a second object), no pan; a still new object off the anchor's path."
    anchors = [random_object(draw, set(), ["left", "right", "up", "down"], 0.0)]
    if draw.pick([1, 2]) == 2: anchors.append(random_object(draw, {anchors[0].colour}, list(MOTIONS), 0.0))
    if None in anchors: return None
    first, used = anchors[0], {a.colour for a in anchors}
    for _ in range(20):                                       # keep the new object off the first anchor's path
        new = random_object(draw, used, ["still"], 0.0)
        if new is None: continue
        (anchor_w, anchor_h), (new_w, new_h) = half_extent(first.shape, first.size), half_extent(new.shape, new.size)
        horizontal = MOTIONS[first.motion][1] == 0
        gap = abs(new.y - first.y) - anchor_h - new_h if horizontal else abs(new.x - first.x) - anchor_w - new_w
        if gap >= 2: return anchors, new, dict(**background_settings(draw, textured=False)), "front"
    return None


DRAWERS = {"still_in_pan": draw_still_in_pan, "crossing": draw_crossing, "moving_anchor": draw_moving_anchor}


def target_scene(anchors: list[ToyObject], new: ToyObject, scene: dict, order: str) -> SceneBatch:
    "The ground truth: the new object in front of the anchors (`add_object`) or behind them (listed first)."
    if order == "front": return add_object(make_scene(anchors, **scene), new)
    return make_scene([new] + anchors, **scene)


def integration_cases(count: int, seed: int = CASE_SEED) -> list[dict]:
    "`count` cases of each kind whose source and target captions are both held out (`is_heldout`), seeded."
    cases = []
    for kind_number, kind in enumerate(KINDS):
        draw, found = Draw(seed + kind_number), 0
        while found < count:
            drawn = DRAWERS[kind](draw)
            if drawn is None: continue
            anchors, new, scene, order = drawn
            source, target = make_scene(anchors, **scene), target_scene(anchors, new, scene, order)
            source_caption, target_caption = scene_captions(source)[0], scene_captions(target)[0]
            if not (is_heldout(source_caption) and is_heldout(target_caption)): continue
            index = 100 * kind_number + found
            cases.append(dict(index=index, kind=kind, scene=source, truth=target, new=new, order=order,
                              instruction=edit_instruction(new), source_caption=source_caption,
                              target_caption=target_caption, anchors=object_names(source, 0),
                              new_object=f"{new.colour} {new.shape}", pan=scene.get("pan", "none"),
                              anchor_objects=anchors, scene_settings=scene))
            found += 1
    return cases


# -- reading the clips ------------------------------------------------------------------------------------------------

def colour_blobs(clip: torch.Tensor, colour: str) -> torch.Tensor:
    "(F, H, W) the largest blob of the palette colour `colour` in each frame of a clip (F, 3, H, W)."
    return largest_blobs(palette_index(clip.float().cpu()) == list(OBJECT_COLOURS).index(colour))


def object_track(clip: torch.Tensor, colour: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-frame centre (F, 2) (x, y), whether seen (F,) and area (F,) of the largest blob of `colour` in a clip
    (F, 3, H, W), read as `detect_objects` reads them (it keeps only the summary)."""
    frames, _, height, width = clip.shape
    blobs = colour_blobs(clip, colour)
    area = blobs.flatten(1).sum(-1).float()
    scale = min(height, width) / 64
    seen = (area >= 20 * scale ** 2) & (area <= 0.5 * height * width)
    y = torch.arange(height, dtype=torch.float32)[:, None] + 0.5
    x = torch.arange(width, dtype=torch.float32)[None, :] + 0.5
    centres = torch.stack([(blobs * x).flatten(1).sum(-1), (blobs * y).flatten(1).sum(-1)], -1)
    return centres / area.clamp(min=1)[:, None], seen, area


def velocity(series: torch.Tensor, frames: torch.Tensor) -> list[float]:
    "Least-squares (x, y) velocity, pixels a frame, of a series (N, 2) at frame numbers `frames` (N,)."
    t = frames.float() - frames.float().mean()
    slope = (t[:, None] * (series - series.mean(0))).sum(0) / (t ** 2).sum().clamp(min=1e-9)
    return [round(float(v), 3) for v in slope]


def compare_series(read: torch.Tensor, truth: torch.Tensor, common: torch.Tensor) -> dict:
    "A series (F, 2) read from the result against the ground truth's, on the frames `common`, mean offset removed."
    if int(common.sum()) < 4:
        return dict(frames=int(common.sum()), error_px=None, within_tolerance=None, velocity_read=None,
                    velocity_truth=None, velocity_error=None)
    frames = torch.arange(len(read))[common]
    read, truth = read[common], truth[common]
    distance = ((read - read.mean(0)) - (truth - truth.mean(0))).norm(dim=-1)
    velocity_read, velocity_truth = velocity(read, frames), velocity(truth, frames)
    return dict(frames=int(common.sum()), error_px=round(float(distance.mean()), 3),
                within_tolerance=round(float((distance <= TRACK_TOLERANCE_PX).float().mean()), 3),
                velocity_read=velocity_read, velocity_truth=velocity_truth,
                velocity_error=round(math.dist(velocity_read, velocity_truth), 3))


def depth_reading(clip: torch.Tensor, new_colour: str, anchor_masks: torch.Tensor, full_area: float) -> dict:
    """Which colour wins where the new object meets the anchor: `front_share` of the overlap pixels showing the new
    colour. Overlap = the anchor's exact mask (F, H, W) pixels showing the new colour (it is in front) plus the new
    object's area deficit in frames where it touches the anchor (it is hidden behind); its own area is its median
    over frames without contact (`full_area` if none)."""
    _, seen, area = object_track(clip, new_colour)
    blobs = largest_blobs(palette_index(clip.float().cpu()) == list(OBJECT_COLOURS).index(new_colour))
    near = F.max_pool2d(anchor_masks[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0.5
    contact = (blobs & near).flatten(1).any(-1) & (area >= 5)
    alone = seen & ~contact
    own_area = float(area[alone].median()) if alone.any() else full_area
    front = (blobs & anchor_masks).flatten(1).sum(-1).float()[contact]
    hidden = (own_area * (1 - AREA_SLACK) - area[contact]).clamp(min=0)
    total = float(front.sum() + hidden.sum())
    if total < MIN_CONTACT_PIXELS:
        return dict(contact_frames=int(contact.sum()), front_share=None, order="no contact")
    share = float(front.sum()) / total
    return dict(contact_frames=int(contact.sum()), front_share=round(share, 3),
                order="front" if share >= 0.5 else "behind")


def integration_metrics(case: dict, pixels: torch.Tensor) -> dict:
    "The case kind's measurement of a result (F, 3, H, W) against the ground truth's render."
    truth = render_scenes(case["truth"])
    truth_pixels, new = truth.pixels[0], case["new"]
    if case["kind"] == "still_in_pan":
        read, seen, _ = object_track(pixels, new.colour)
        expected, expected_seen, _ = object_track(truth_pixels, new.colour)
        return compare_series(read, expected, seen & expected_seen)
    anchor = case["anchor_objects"][0]
    if case["kind"] == "moving_anchor":
        (new_read, new_seen, _), (anchor_read, anchor_seen, _) = (object_track(pixels, c)
                                                                  for c in (new.colour, anchor.colour))
        (new_truth, new_truth_seen, _), (anchor_truth, anchor_truth_seen, _) = (
            object_track(truth_pixels, c) for c in (new.colour, anchor.colour))
        common = new_seen & anchor_seen & new_truth_seen & anchor_truth_seen
        return compare_series(new_read - anchor_read, new_truth - anchor_truth, common)
    anchor_masks = render_scenes(case["scene"]).masks[0, 0]                     # the anchor, alone in the source
    new_slot = 1 if case["order"] == "front" else 0
    full_area = float(truth.masks[0, new_slot].flatten(1).sum(-1).max())
    reading = depth_reading(pixels, new.colour, anchor_masks, full_area)
    truth_reading = depth_reading(truth_pixels, new.colour, anchor_masks, full_area)
    return dict(**reading, order_truth=case["order"], truth_front_share=truth_reading["front_share"],
                order_ok=reading["order"] == case["order"])


def wrong_answer(case: dict) -> SceneBatch:
    """The plausible wrong answer of the case, rendered exactly: still in the frame despite the pan; dragged along
    with the moving anchor (its motion and speed); the other depth order."""
    new, anchors, scene = case["new"], case["anchor_objects"], case["scene_settings"]
    if case["kind"] == "crossing":
        return target_scene(anchors, new, scene, "behind" if case["order"] == "front" else "front")
    if case["kind"] == "still_in_pan": moved = dict(motion=scene["pan"], speed=scene["pan_speed"])
    else: moved = dict(motion=anchors[0].motion, speed=anchors[0].speed)
    return target_scene(anchors, replace(new, **moved), scene, case["order"])


# -- running ----------------------------------------------------------------------------------------------------------

def pan_unsaid(caption: str) -> str:
    "The caption without its camera clause: the new object's motion in the pan must then come from the source."
    return re.sub(r" and the camera pans \w+$", "", caption)


def sampling_seed(case: dict, seed: int) -> int: return 1000 + 10_000 * seed + case["index"]


def run_case(backbone, case: dict, todo: list[tuple[str, int]], work_dir: Path, overrides: dict, on_result,
             max_threads: int | None = None, progress: bool = False, observers: dict | None = None,
             results: dict | None = None) -> None:
    """Invert the case's clip once, run each (configuration, seed) edit, measure it, `on_result(name, seed, record)`.
    `observers` may give an edit, by (name, seed), an attention observer; `results`, if given, receives each
    `EditResult` (on the CPU) by (name, seed)."""
    original = render_scenes(case["scene"]).pixels[0]
    clip = Clip(original, 8.0)
    configs = {(name, seed): edit_config(case, {**overrides, **CONFIGURATIONS[name],
                                                "sampling.seed": sampling_seed(case, seed)}) for name, seed in todo}
    first = next(iter(configs.values()))
    started = time.perf_counter()
    reference = invert_clip(backbone, original, first.inversion, work_dir / "reference_latents", first.sampling.steps,
                            max_timestep=inversion_top(backbone, configs.values()),
                            if_mismatch="rebuild", progress=progress)
    inversion_seconds = time.perf_counter() - started
    round_trip = backbone.decode_latents(reference.clean_latents.to(backbone.dtype)).float().cpu()
    anchors_key = ColourKeySegmenter({n: v for n, v in first.segmentation.colour_key.items() if n in case["anchors"]})
    source_masks = anchors_key.segment(original, case["anchors"])
    protocol = EditProtocol(instruction=case["instruction"], source_caption=case["source_caption"],
                            target_caption=case["target_caption"], anchors=case["anchors"],
                            new_object=case["new_object"], model="bench/eval_toy_integration.py (toy grammar)")
    recorded = {}
    for name, seed in sorted(todo, key=lambda item: (item[1], item[0] == "one_pass")):   # one_pass after its default
        config, key = configs[name, seed], ColourKeySegmenter(configs[name, seed].segmentation.colour_key)
        edit_protocol = protocol.model_copy(update=dict(target_caption=pan_unsaid(protocol.target_caption))) \
            if name in PAN_UNSAID else protocol
        if name == "one_pass":
            result = one_pass_from_default(backbone, work_dir / f"default_{seed}", reference)
            clips = recorded["default", seed][:1]
        else:
            if max_threads: pick_threads(max_threads)
            recording = RecordingSegmenter(key, max_threads)
            run_dir = work_dir / f"{name}_{seed}"
            result = DynVFXPipeline(backbone, recording, config)(
                clip, edit_protocol, source_masks, reference, run_dir=run_dir, progress=progress,
                attention_observer=(observers or {}).get((name, seed)))
            clips = recorded[name, seed] = recording.clips
        result = replace(result, pixels=result.pixels.float().cpu(), target_mask=result.target_mask.cpu(),
                         latent_target_mask=result.latent_target_mask.cpu())      # measured on the CPU
        if results is not None: results[name, seed] = result
        record = measure(case, config, result, clips, original, round_trip, key)
        record.update(integration=integration_metrics(case, result.pixels), sampling_seed=config.sampling.seed,
                      inversion_seconds=round(inversion_seconds, 2))
        if name == "one_pass": record["derived_from"], record["seconds"] = "default run, pass 1", None
        on_result(name, seed, record)


def case_description(case: dict) -> dict:
    new = case["new"]
    return dict(kind=case["kind"], instruction=case["instruction"], source_caption=case["source_caption"],
                target_caption=case["target_caption"], anchors=case["anchors"], new_object=case["new_object"],
                pan=case["pan"], order_truth=case["order"],
                wrong_answer=integration_metrics(case, render_scenes(wrong_answer(case)).pixels[0]),
                new=dict(colour=new.colour, shape=new.shape, size=new.size, motion=new.motion,
                         x=round(new.x, 2), y=round(new.y, 2), speed=round(new.speed, 3)))


def case_todo(entry: dict, configurations: list[str], seeds: list[int]) -> list[tuple[str, int]]:
    "The (configuration, seed) pairs the JSON lacks; one_pass brings its default run along (it is read from it)."
    results = entry["results"]
    todo = [(n, s) for s in seeds for n in configurations if str(s) not in results.get(n, {})]
    for name, seed in list(todo):
        if name == "one_pass" and ("default", seed) not in todo: todo.append(("default", seed))
    return todo


# -- the report -------------------------------------------------------------------------------------------------------

METRICS = {  # kind: (metric name, how to read it from a record, what it is)
    "still_in_pan": [("track_error_px", lambda r: r["integration"]["error_px"], "track error px"),
                     ("track_within", lambda r: r["integration"]["within_tolerance"],
                      f"frames within {TRACK_TOLERANCE_PX} px"),
                     ("velocity_error", lambda r: r["integration"]["velocity_error"], "velocity error px/frame")],
    "crossing": [("order_ok", lambda r: (None if r["integration"]["order"] == "no contact"
                                         else float(r["integration"]["order_ok"])), "depth order as truth"),
                 ("contact", lambda r: float(r["integration"]["order"] != "no contact"), "touches the anchor"),
                 ("front_share", lambda r: r["integration"]["front_share"], "overlap won by the new object")],
    "moving_anchor": [("offset_error_px", lambda r: r["integration"]["error_px"], "offset error px"),
                      ("offset_within", lambda r: r["integration"]["within_tolerance"],
                       f"frames within {TRACK_TOLERANCE_PX} px"),
                      ("offset_velocity_error", lambda r: r["integration"]["velocity_error"],
                       "offset velocity error px/frame")],
}
COMMON_METRICS = [  # the wrong answer's row leaves these blank
    ("found", lambda r: float(r["found"]), "new object present"),
    ("psnr_vs_round_trip", lambda r: r["psnr_vs_round_trip"], "PSNR outside vs round trip dB")]


def seed_means(cases: list[dict], name: str, seeds: list[str], read) -> list[tuple[float | None, int]]:
    "Per seed: the metric's mean over the cases that have a reading (and how many)."
    means = []
    for seed in seeds:
        values = [read(c["results"][name][seed]) for c in cases if seed in c["results"].get(name, {})]
        values = [v for v in values if v is not None and v == v]
        means.append((statistics.fmean(values) if values else None, len(values)))
    return means


def _cell(means: list[tuple[float | None, int]]) -> str:
    "'mean (seed means a / b, n)' or blank."
    known = [m for m, _ in means if m is not None]
    if not known: return ""
    per_seed = " / ".join("-" if m is None else f"{m:.2f}" for m, _ in means)
    return f"{statistics.fmean(known):.2f} ({per_seed}; n={max(n for _, n in means)})"


def markdown_report(data: dict) -> str:
    "Per kind: each metric per configuration, the mean over seeds with each seed's mean over the cases."
    lines = []
    for kind in KINDS:
        cases = [c for c in data["cases"].values() if c["kind"] == kind]
        if not cases: continue
        names = [n for n in CONFIGURATIONS if any(n in c["results"] for c in cases)]
        seeds = sorted({s for c in cases for n in names for s in c["results"].get(n, {})}, key=int)
        metrics = METRICS[kind] + COMMON_METRICS
        lines += [f"### {kind} ({len(cases)} cases; seeds {', '.join(seeds)}: mean (per-seed means; cases read))", "",
                  "| configuration | " + " | ".join(label for _, _, label in metrics) + " |",
                  "| --- |" + " --- |" * len(metrics)]
        for name in names:
            lines.append(f"| {name} | " + " | ".join(_cell(seed_means(cases, name, seeds, read))
                                                      for _, read, _ in metrics) + " |")
        wrong = [dict(results={"wrong": {"-": {"integration": c["wrong_answer"]}}}) for c in cases]
        lines.append("| the wrong answer, rendered | " + " | ".join(
            _cell(seed_means(wrong, "wrong", ["-"], read)) for _, read, _ in METRICS[kind]) + " |" * 3)
        lines.append("")
    return "\n".join(lines)



def paired_differences(cases: list[dict], name: str, seeds: list[str], read) -> list[tuple[float | None, int, int]]:
    """Per seed: the mean over cases of (configuration - default) where both have a reading, how many cases, and in
    how many the configuration's reading is the larger."""
    out = []
    for seed in seeds:
        pairs = [(read(c["results"][name][seed]), read(c["results"]["default"][seed])) for c in cases
                 if seed in c["results"].get(name, {}) and seed in c["results"].get("default", {})]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None and a == a and b == b]
        out.append((statistics.fmean(a - b for a, b in pairs) if pairs else None, len(pairs),
                    sum(a > b for a, b in pairs)))
    return out


def difference_report(data: dict) -> str:
    """Per kind: each configuration's paired difference from the default on the kind's metrics (same case, same
    seed), per seed, with how many cases went up; '(both)' where the two seeds agree in sign."""
    lines = []
    for kind in KINDS:
        cases = [c for c in data["cases"].values() if c["kind"] == kind]
        if not cases: continue
        seeds = sorted({s for c in cases for r in c["results"].values() for s in r}, key=int)
        metrics = METRICS[kind] + COMMON_METRICS
        lines += [f"### {kind}: configuration - default, per seed (cases where it is larger / cases)", "",
                  "| configuration | " + " | ".join(label for _, _, label in metrics) + " |",
                  "| --- |" + " --- |" * len(metrics)]
        for name in [n for n in CONFIGURATIONS if n != "default" and any(n in c["results"] for c in cases)]:
            cells = []
            for _, read, _ in metrics:
                diffs = paired_differences(cases, name, seeds, read)
                known = [d for d, _, _ in diffs if d is not None]
                agree = len(known) > 1 and (all(d > 0 for d in known) or all(d < 0 for d in known))
                cells.append(" / ".join("-" if d is None else f"{d:+.2f} ({up}/{n})" for d, n, up in diffs)
                             + (" (both)" if agree else ""))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)

# -- the run ----------------------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10, help="cases of each kind")
    parser.add_argument("--configurations", nargs="+", choices=list(CONFIGURATIONS),
                        help="default: all of them (with --smoke: default and anchors_off)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="sampling seeds (0, 1, ...)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=2,
                        help="at most this many torch threads (fewer while other processes hold cores)")
    parser.add_argument("--device", default="cpu", help="the toy model's device (cuda on a GPU machine)")
    parser.add_argument("--model", default="toy", help="'toy' (data/toy_model) or a saved model folder (a toy Wan)")
    parser.add_argument("--report", action="store_true", help="print the tables from the JSON, run nothing")
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS), help="only these kinds")
    parser.add_argument("--shard", default="0/1", help="K/N: run only the cases whose position modulo N is K")
    parser.add_argument("--merge", nargs="+", type=Path, default=None,
                        help="add these JSON files' results to --out (theirs win where both have one), run nothing")
    parser.add_argument("--smoke", action="store_true",
                        help="check the script: one case a kind, few steps (SMOKE_OVERRIDES), results in a "
                             "temporary folder unless --out is given; not a measurement")
    args = parser.parse_args(argv)
    if args.report and not args.out.exists(): parser.error(f"{args.out}: no results yet; run without --report first")
    shard, _, shards = args.shard.partition("/")
    if not (shard.isdigit() and shards.isdigit() and int(shard) < int(shards)):
        parser.error(f"--shard {args.shard}: expected K/N with 0 <= K < N, for example 0/4")
    args.shard, args.shards = int(shard), int(shards)
    return args


def merge_results(data: dict, other: dict) -> dict:
    "`data` with every finished (case, configuration, seed) result of `other` added (`other`'s where both have one)."
    data.setdefault("settings", other.get("settings", {}))
    for index, case in other.get("cases", {}).items():
        entry = data.setdefault("cases", {}).setdefault(index, {**case, "results": {}})
        for name, seeds in case["results"].items(): entry["results"].setdefault(name, {}).update(seeds)
    return data


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.report:
        data = json.loads(args.out.read_text()); print(markdown_report(data)); print(difference_report(data)); return
    if args.merge:
        data = json.loads(args.out.read_text()) if args.out.exists() else {}
        for part in args.merge: data = merge_results(data, json.loads(part.read_text()))
        write_json(args.out, data); print(markdown_report(data)); return
    overrides, smoke_dir = {}, None
    if args.smoke:
        overrides, args.count = dict(SMOKE_OVERRIDES), 1
        args.configurations = args.configurations or SMOKE_CONFIGURATIONS
        if args.out == RESULTS:
            smoke_dir = Path(tempfile.mkdtemp(prefix="toy-integration-smoke-")); args.out = smoke_dir / RESULTS.name
    args.configurations = args.configurations or MAIN_CONFIGURATIONS
    if args.device != "cpu": overrides["model.device"] = args.device
    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    data.setdefault("settings", dict(case_seed=CASE_SEED, track_tolerance_px=TRACK_TOLERANCE_PX,
                                     min_contact_pixels=MIN_CONTACT_PIXELS, area_slack=AREA_SLACK, overrides=SETTINGS,
                                     configurations=CONFIGURATIONS, deviations=DEVIATIONS, torch=torch.__version__,
                                     threads=args.threads, **({"run_overrides": overrides} if overrides else {})))
    data.setdefault("cases", {})
    torch.set_num_threads(args.threads)
    backbone, started = load_model(args.model, device=args.device), time.perf_counter()
    for position, case in enumerate(integration_cases(args.count)):
        if position % args.shards != args.shard or case["kind"] not in args.kinds: continue
        entry = data["cases"].setdefault(str(case["index"]), {**case_description(case), "results": {}})
        todo = case_todo(entry, args.configurations, args.seeds)
        if not todo: continue

        def keep(name: str, seed: int, record: dict, case=case, entry=entry) -> None:
            entry["results"].setdefault(name, {})[str(seed)] = record
            write_json(args.out, data)
            reading = {k: v for k, v in record["integration"].items() if not k.startswith("velocity_")}
            print(f"{case['kind']:13s} case {case['index']:3d} {name:14s} seed {seed} found={record['found']!s:5s} "
                  f"{reading} {record['seconds'] or 0:.0f} s (total {time.perf_counter() - started:.0f} s)",
                  flush=True)

        with tempfile.TemporaryDirectory(prefix="toy-integration-") as work:
            run_case(backbone, case, todo, Path(work), overrides, keep, max_threads=args.threads)
    print(markdown_report(data))
    if smoke_dir: print(f"(smoke results were in {args.out}; removed)"); shutil.rmtree(smoke_dir)


if __name__ == "__main__":
    main()
