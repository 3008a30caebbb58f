"""End-to-end benchmark of the default DynVFX edit at CogVideoX-5B scale (random weights) against the reference's cost.

The default edit (49 frames 720x480, 250-step inversion grid up to t=899, six passes = 190 denoising steps, anchors
in t in [619, 899], SAM 3 after every pass) runs through dynvfx's own pipeline on a CogVideoX-5B-shaped pipeline with
random bf16 weights (transformer, VAE, T5-XXL-shaped encoder) and a full-size SAM 3 with random weights. Random SAM 3
finds nothing real: its thresholds are set to 0 and at most 4 objects are tracked, so that it does the work of a real
segmentation (detection on every frame of one session from the first frame; --key-frames 5 for the earlier union).

Parts, so that the edit fits in the device's 10-minute calls (the pipeline resumes from its saved passes):
  --part probe      forward timings with our processors, batch 1/2 (inactive) and 3 (active, fresh anchors),
                    eager vs torch.compile'd blocks (ModelSettings.compile), with the compile costs
  --part sam3       one segmentation by the full-size SAM 3 (its time, and which processor ran)
  --part sam3_sessions  one SAM 3 session from the first frame (segmentation.num_key_frames = 1, the default)
                    against the union of sessions from 5 key frames (the earlier default): times and mask IoU
  --part edit       build, invert (resumable cache), run up to --passes-now new passes; call again to go on
  --part reference  the reference's step pattern timed in the same process: a batch-2 anchored forward written the
                    authors' way (per-frame gather loop, separate text/video attention calls) plus a batch-1 forward;
                    a batch-1 forward (its inversion step), VAE encode and decode
  --part memory     the 24 GB settings (model CPU offload, VAE tiling and slicing) on a short edit: peak memory
  --part windows    a clip of --frames frames edited whole, in windows of 49 (issue 23's cost at full scale): build,
                    inversion, sampling, VAE and segmentation with a short schedule (a 20-step inversion grid, 10
                    sampling steps, one pass from t=899), so that 97 frames fit in one call
  --part report     combine the JSON files in --workdir into the table (ours vs the reference rebuilt)

  python -m bench.bench_edit --part edit --smoke --workdir /tmp/bench-edit   # tiny, on the CPU (checks the script)
"""
from __future__ import annotations

import argparse
import json
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import (PeakMemory, Stopwatch, build_pipeline, clip_size, device_name, json_text, moving_object,
                          time_cases, write_json)
from dynvfx.backbone import configure_pipeline
from dynvfx.config import DynVFXConfig, apply_preset
from dynvfx.protocol import EditProtocol
from dynvfx.video_io import Clip

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("probe", "sam3", "sam3_sessions", "edit", "windows", "reference", "memory", "memory_stages", "report")
TASK_REFERENCE_STEP_S = 3.56  # the authors' whole step on one H100, as the task statement measured it


# -- the edit ---------------------------------------------------------------------------------------------------------

def build_sam3(smoke: bool, folder: Path, device: torch.device, dtype: torch.dtype, num_key_frames: int = 1,
               score_threshold: float = 0.0, offload_state: bool = False):
    """SAM 3 with random weights at full size (or tiny), saved and loaded through the segmenter's own loader. With
    `score_threshold` 0 every one of its 200 detection queries counts as found (the most work a segmentation does)."""
    from dynvfx.segmentation import Sam3VideoSegmenter, _save_tiny_processor, _tiny_clip_tokenizer, tiny_sam3_video
    if not (folder / "config.json").exists():
        if smoke: tiny_sam3_video(folder)
        else:
            from transformers import Sam3VideoConfig, Sam3VideoModel
            torch.manual_seed(0)
            config = Sam3VideoConfig(score_threshold_detection=0.0, new_det_thresh=0.0, max_num_objects=4)
            with torch.device(device): model = Sam3VideoModel(config).to(dtype)
            model.save_pretrained(folder); tokenizer = _tiny_clip_tokenizer(); tokenizer.save_pretrained(folder)
            _save_tiny_processor(tokenizer, config.image_size, folder)
            del model
    return Sam3VideoSegmenter(str(folder), device=device, dtype=dtype, num_key_frames=num_key_frames,
                              score_threshold=score_threshold, progress=False, offload_state=offload_state)


def edit_inputs(smoke: bool, num_frames: int | None = None):
    "The clip (smooth random textures, seeded), its anchor masks (~20% of the frame, moving) and the protocol."
    frames, height, width = clip_size(smoke)
    frames = num_frames or frames
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(frames, 3, height // 16, width // 16, generator=generator)
    pixels = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)
    masks = torch.zeros(frames, height, width, dtype=torch.bool)
    box_h, box_w = int(height * 0.45), int(width * 0.45)
    for f in range(frames):
        left = round((width - box_w) * f / max(1, frames - 1))
        masks[f, (height - box_h) // 2:(height + box_h) // 2, left:left + box_w] = True
    protocol = EditProtocol(instruction="add a dog", source_caption="a box slides across a colourful wall",
                            anchors=["box"], new_object="dog",
                            target_caption="a dog jumps over a box that slides across a colourful wall")
    return Clip(pixels, fps=8.0), {"box": masks}, protocol


def edit_config(smoke: bool, workdir: Path, device: str, backend: str, compile: bool, preset: str | None = None,
                **sections) -> DynVFXConfig:
    "The default edit's settings, or a preset's (02_config, Presets), or a tiny schedule for --smoke."
    model = dict(model_id="random-cogvideox-5b", device=device, attention_backend=backend, compile=compile,
                 dtype="float32" if smoke else "bfloat16")
    config = DynVFXConfig(output_path=workdir / "run", latents_path=workdir / "reference_latents", model=model,
                          segmentation=dict(model_id=str(workdir / "sam3"), score_threshold=0.0), **sections)
    if preset: config = apply_preset(config, preset)
    if not smoke: return config
    return config.model_copy(update=dict(
        video=config.video.model_copy(update=dict(num_frames=9, height=32, width=48)),
        inversion=config.inversion.model_copy(update=dict(steps=20)),
        sampling=config.sampling.model_copy(update=dict(steps=10)),
        refinement=config.refinement.model_copy(update=dict(pass_timesteps=[899, 699])),
        anchors=config.anchors.model_copy(update=dict(window=(599, 899)))))


def with_24gb_settings(config: DynVFXConfig, device: torch.device) -> DynVFXConfig:
    "The settings with model CPU offload (on a GPU; --smoke on the CPU checks the rest), VAE tiling and slicing."
    offload = "model" if device.type == "cuda" else "none"
    model = config.model.model_copy(update=dict(cpu_offload=offload, vae_tiling=True, vae_slicing=True))
    return config.model_copy(update={"model": model})


def invert_and_edit(pipeline, clip, masks, protocol, device: torch.device, quiet: bool,
                    max_new_passes: int | None = None):
    "Invert the clip (resumable cache) up to the edit's highest source timestep, then run the edit: (seconds, result)."
    from dynvfx.inversion import invert_clip
    backbone, config = pipeline.backbone, pipeline.config
    with Stopwatch(device) as inversion:
        reference = invert_clip(backbone, clip.pixels, config.inversion, config.reference_latents_dir,
                                sampling_steps=config.sampling.steps,
                                max_timestep=max(pipeline.schedule.source_timesteps), progress=not quiet)
    result = pipeline(clip, protocol, masks, reference, run_dir=config.run_dir, progress=not quiet,
                      max_new_passes=max_new_passes)
    return inversion.seconds, result


def part_edit(args, device: torch.device, dtype: torch.dtype) -> dict:
    "Build, invert (resumable), then run up to --passes-now new passes of the default edit."
    from torch._dynamo.utils import counters
    from dynvfx.anchor_attention import fastest_attention_backend
    from dynvfx.pipeline import DynVFXPipeline, EditSchedule
    with PeakMemory(device) as memory:
        with Stopwatch(device) as build:
            config = edit_config(args.smoke, args.workdir, str(device), args.backend, args.compile, args.preset)
            clip, masks, protocol = edit_inputs(args.smoke)
            backbone = configure_pipeline(build_pipeline(args.smoke, device, dtype), config.model)
            segmenter = build_sam3(args.smoke, args.workdir / "sam3", device, dtype, args.key_frames,
                                   score_threshold=args.sam3_threshold)
        pipeline = DynVFXPipeline(backbone, segmenter, config)
        inversion_s, result = invert_and_edit(pipeline, clip, masks, protocol, device, args.quiet, args.passes_now)
    exact = EditSchedule.from_config(edit_config(args.smoke, args.workdir, str(device), args.backend, False),
                                     backbone.new_scheduler(), backbone.model_timestep)  # what the reference runs
    return dict(build_s=build.seconds, inversion_s=inversion_s, edit_times_s=result.times,
                passes_done=result.passes_done, complete=result.complete,
                sam3=dict(key_frames=args.key_frames, score_threshold=args.sam3_threshold),
                compiled=config.model.compile, preset=args.preset, backend=config.model.attention_backend,
                backend_run=fastest_attention_backend() if config.model.attention_backend == "auto" else None,
                quantization=config.model.quantization, inversion_steps=config.inversion.steps,
                pass_timesteps=config.refinement.pass_timesteps,
                compiled_graphs=counters["stats"]["unique_graphs"] if config.model.compile else None,
                steps=pipeline.schedule.steps, source_steps=pipeline.schedule.source_steps, peak_gib=memory.gib,
                exact_steps=exact.steps, exact_passes=len(exact.pass_starts))


def part_windows(args, device: torch.device, dtype: torch.dtype) -> dict:
    "A clip of --frames frames edited whole in windows, with a short schedule: each stage's time."
    from dynvfx.pipeline import DynVFXPipeline, invert_windows, plan_windows
    short = dict(inversion=dict(steps=20), sampling=dict(steps=10), refinement=dict(pass_timesteps=[899]))
    workdir = args.workdir / f"windows_{args.frames}"
    config = edit_config(args.smoke, workdir, str(device), args.backend, args.compile, **short)
    if args.smoke: config = config.model_copy(update=dict(video=config.video.model_copy(update=dict(num_frames=9))))
    clip, masks, protocol = edit_inputs(args.smoke, args.frames)
    with PeakMemory(device) as memory:
        with Stopwatch(device) as build:
            backbone = configure_pipeline(build_pipeline(args.smoke, device, dtype), config.model)
            segmenter = build_sam3(args.smoke, args.workdir / "sam3", device, dtype, args.key_frames,
                                   score_threshold=args.sam3_threshold)
        pipeline = DynVFXPipeline(backbone, segmenter, config)
        plan = plan_windows(config, backbone, clip.num_frames)
        with Stopwatch(device) as inversion:
            references = invert_windows(backbone, clip.pixels, plan, config.inversion, config.reference_latents_dir,
                                        sampling_steps=config.sampling.steps,
                                        max_timestep=max(pipeline.schedule.source_timesteps), progress=not args.quiet)
        with Stopwatch(device) as edit:
            result = pipeline(clip, protocol, masks, references, run_dir=config.run_dir, progress=not args.quiet)
    return dict(frames=clip.num_frames, windows=plan.count, window_starts=list(plan.starts), stride=plan.stride,
                build_s=build.seconds, inversion_s=inversion.seconds, edit_s=edit.seconds,
                total_s=inversion.seconds + edit.seconds, edit_times_s=result.times, steps=pipeline.schedule.steps,
                source_steps=pipeline.schedule.source_steps, schedule=short, peak_gib=memory.gib,
                result_frames=result.pixels.shape[0])


# -- the reference's cost, and forward timings ------------------------------------------------------------------------

class ReferenceStyleAttnProcessor:
    """The authors' attention step pattern, written here for timing only: batch [conditional, source]; every call draws
    an object and a background pattern, gathers the source keys and values frame by frame (a Python loop with one
    nonzero per latent frame), attends the conditional text queries and video queries in separate calls, and the
    source branch in a third. A batch of 1 (the unconditional forward) attends as usual."""
    def __init__(self, object_tokens: torch.Tensor, anchor_keep_rate: float = 0.7, background_keep_rate: float = 0.05):
        self.object_tokens, self.keep, self.background = object_tokens, anchor_keep_rate, background_keep_rate

    def anchored(self, query, key, value, text_length: int) -> torch.Tensor:
        "Batch [conditional, source]: the conditional queries attend to their own tokens and the gathered anchors."
        frames, gh, gw = self.object_tokens.shape
        keep = torch.rand(gh, gw, device=query.device) < self.keep
        background = torch.rand(gh, gw, device=query.device) < self.background
        anchors = torch.where(self.object_tokens, keep, background)
        source_key = key[1, :, text_length:].unflatten(1, (frames, gh, gw))
        source_value = value[1, :, text_length:].unflatten(1, (frames, gh, gw))
        keys, values = [key[0]], [value[0]]
        for f in range(frames):
            rows, cols = anchors[f].nonzero(as_tuple=True)
            keys.append(source_key[:, f, rows, cols]); values.append(source_value[:, f, rows, cols])
        extended_key, extended_value = torch.cat(keys, dim=1)[None], torch.cat(values, dim=1)[None]
        text = F.scaled_dot_product_attention(query[:1, :, :text_length], extended_key, extended_value)
        video = F.scaled_dot_product_attention(query[:1, :, text_length:], extended_key, extended_value)
        source = F.scaled_dot_product_attention(query[1:], key[1:], value[1:])
        return torch.cat([torch.cat([text, video], dim=2), source])

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None):
        from diffusers.models.embeddings import apply_rotary_emb
        text_length = encoder_hidden_states.size(1)
        hidden_states = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        query, key, value = (projection(hidden_states).unflatten(-1, (attn.heads, -1)).transpose(1, 2)
                             for projection in (attn.to_q, attn.to_k, attn.to_v))
        query, key = attn.norm_q(query), attn.norm_k(key)
        if image_rotary_emb is not None:
            query[:, :, text_length:] = apply_rotary_emb(query[:, :, text_length:], image_rotary_emb)
            key[:, :, text_length:] = apply_rotary_emb(key[:, :, text_length:], image_rotary_emb)
        if hidden_states.shape[0] == 2: hidden_states = self.anchored(query, key, value, text_length)
        else: hidden_states = F.scaled_dot_product_attention(query, key, value)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states.transpose(1, 2).flatten(2)))
        return hidden_states[:, text_length:], hidden_states[:, :text_length]


def forward_inputs(args, device: torch.device, dtype: torch.dtype):
    "What the forward timings share: the settings, the clip and protocol, the backbone, its grid and random latents."
    config = edit_config(args.smoke, args.workdir, str(device), args.backend, False)
    clip, _, protocol = edit_inputs(args.smoke)
    backbone = configure_pipeline(build_pipeline(args.smoke, device, dtype), config.model)
    grid = backbone.token_grid(clip.num_frames, *clip.size)
    return config, clip, protocol, backbone, grid, torch.randn(1, *grid.latent_shape, device=device, dtype=dtype)


def part_reference(args, device: torch.device, dtype: torch.dtype) -> dict:
    "The reference's per-step and per-stage costs, timed in this process on the same model."
    from dynvfx.inversion import ddim_inversion_step
    config, clip, protocol, backbone, grid, latents = forward_inputs(args, device, dtype)
    transformer = backbone.transformer
    embeds = backbone.encode_prompt([protocol.target_caption, protocol.source_caption, ""])
    rotary = backbone.rotary_embedding(grid)
    object_tokens = moving_object(grid, 0.2).to(device)
    stock = dict(transformer.attn_processors)
    reference = {name: ReferenceStyleAttnProcessor(object_tokens) for name in stock}

    def forward(batch, processors):
        def run():
            transformer.set_attn_processor(dict(processors))  # set_attn_processor empties the dict it gets
            backbone.predict(latents.expand(batch, -1, -1, -1, -1), 899, embeds[:batch], rotary)
            transformer.set_attn_processor(dict(stock))
        return run
    forwards = {"batch_1": (nullcontext, forward(1, stock)),
                "reference_anchored_batch_2": (nullcontext, forward(2, reference)),
                "batch_2": (nullcontext, forward(2, stock))}
    timings = time_cases(forwards, warmup=1, repeats=args.repeats, device=device)
    clean = latents.float()
    step = lambda: ddim_inversion_step(backbone, clean, 895, 899, embeds[2:3], rotary)
    inversion = time_cases({"inversion_step": (nullcontext, step)}, warmup=1, repeats=args.repeats, device=device)
    vae_cases = {"vae_encode": (nullcontext, lambda: backbone.encode_video(clip.pixels)),
                 "vae_decode": (nullcontext, lambda: backbone.decode_latents(latents))}
    vae = time_cases(vae_cases, warmup=1, repeats=max(2, args.repeats // 2), device=device)
    return {name: value["median_s"] for name, value in {**timings, **inversion, **vae}.items()}


def part_probe(args, device: torch.device, dtype: torch.dtype) -> dict:
    """Forward timings with our processors installed, eager and with compiled blocks: batch 1 and 2 outside the anchor
    window (an inversion step, an inactive step), batch 3 inside it (fresh anchors at every call, as in an edit)."""
    from torch._dynamo.utils import counters
    from dynvfx.anchor_attention import AnchorController, anchor_extended_attention
    config, clip, protocol, backbone, grid, latents = forward_inputs(args, device, dtype)
    embeds = backbone.encode_prompt([protocol.target_caption, "", protocol.source_caption])
    rotary = backbone.rotary_embedding(grid)
    controller = AnchorController.from_settings(config.anchors, moving_object(grid, 0.2).to(device), seed=0,
                                                attention_backend=args.backend)

    def step(batch, timestep):
        def run():
            controller.begin_step(timestep)
            backbone.predict(latents.expand(batch, -1, -1, -1, -1).contiguous(), timestep, embeds[:batch], rotary)
        return run
    cases = {"ours_inactive_1": (nullcontext, step(1, 19)), "ours_inactive_2": (nullcontext, step(2, 19)),
             "ours_active_3": (nullcontext, step(3, 899))}
    results = {}
    with anchor_extended_attention(backbone.transformer, controller, "all"):
        eager = time_cases(cases, warmup=1, repeats=args.repeats, device=device)
        results.update({f"eager_{k}": v["median_s"] for k, v in eager.items()})
        for block in backbone.transformer.transformer_blocks: block.compile(dynamic=False)
        counters.clear()
        for name, (_, run) in cases.items():
            with Stopwatch(device) as first_call: run()
            results[f"compile_first_call_{name}_s"] = first_call.seconds
        results["compiled_graphs_after_first_calls"] = counters["stats"]["unique_graphs"]
        compiled = time_cases(cases, warmup=1, repeats=args.repeats, device=device)
        results.update({f"compiled_{k}": v["median_s"] for k, v in compiled.items()})
        results["compiled_graphs_after_timing"] = counters["stats"]["unique_graphs"]  # equal: nothing new compiled
    results["compiled_over_eager"] = {k: results[f"compiled_{k}"] / results[f"eager_{k}"] for k in cases}
    return results


# -- memory and segmentation ------------------------------------------------------------------------------------------

def part_memory(args, device: torch.device, dtype: torch.dtype) -> dict:
    "Peak GPU memory of a short edit with the 24 GB settings: model CPU offload, VAE tiling and slicing."
    from dynvfx.pipeline import DynVFXPipeline
    config = edit_config(args.smoke, args.workdir / "memory", str(device), args.backend, False)
    config = with_24gb_settings(config.model_copy(update=dict(
        inversion=config.inversion.model_copy(update=dict(steps=config.sampling.steps)),
        refinement=config.refinement.model_copy(update=dict(pass_timesteps=[699 if args.smoke else 639])))), device)
    clip, masks, protocol = edit_inputs(args.smoke)
    pipe = build_pipeline(args.smoke, device, dtype).to("cpu")
    if device.type == "cuda": torch.cuda.empty_cache()
    backbone = configure_pipeline(pipe, config.model)
    segmenter = build_sam3(args.smoke, args.workdir / "sam3", device, dtype, num_key_frames=1, score_threshold=0.5,
                           offload_state=True)
    with PeakMemory(device) as memory, Stopwatch(device) as edit:
        pipeline = DynVFXPipeline(backbone, segmenter, config)
        _, result = invert_and_edit(pipeline, clip, masks, protocol, device, args.quiet)
    return dict(seconds=edit.seconds, sam3=dict(key_frames=1, score_threshold=0.5, offload_state=True),
                steps=pipeline.schedule.steps, source_steps=pipeline.schedule.source_steps,
                peak_allocated_gib=memory.gib, peak_reserved_gib=memory.reserved_gib, edit_times_s=result.times)


def part_sam3(args, device: torch.device, dtype: torch.dtype) -> dict:
    """Segmentations of the clip by the full-size SAM 3 (--key-frames key frames, tracked both ways): time and peak
    memory, with its detection threshold at 0 (all 200 queries found: the most work) and at 0.5 (the default), state
    on the GPU or not."""
    clip, _, protocol = edit_inputs(args.smoke)
    results = dict(key_frames=args.key_frames)
    for threshold in (0.0, 0.5):
        with Stopwatch(device) as build:
            segmenter = build_sam3(args.smoke, args.workdir / "sam3", device, dtype, args.key_frames,
                                   score_threshold=threshold)
        results.setdefault("build_s", build.seconds)
        results["processor"] = type(segmenter.processor).__name__
        for offload in (False, True):
            segmenter._storage = {"video_storage_device": "cpu", "inference_state_device": "cpu"} if offload else {}
            with PeakMemory(device, empty_cache=True) as memory, Stopwatch(device) as segmenting:
                masks = segmenter.segment(clip.pixels, [protocol.new_object])
            results[f"threshold={threshold} offload_state={offload}"] = dict(
                segment_s=segmenting.seconds, mask_share=masks[protocol.new_object].float().mean().item(),
                peak_gib=memory.gib)
        del segmenter
    return results


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    "Intersection over union of two bool masks (1 when both are empty)."
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def part_sam3_sessions(args, device: torch.device, dtype: torch.dtype) -> dict:
    """The full-size SAM 3 on the clip, one session from the first frame against sessions from 5 key frames (each
    tracked forward and backward, united): the time of each (after a warm-up), peak memory, and the masks' IoU, at
    detection thresholds 0 (with random weights every query counts as found: 4 objects tracked) and 0.5."""
    clip, _, protocol = edit_inputs(args.smoke)
    prompts, results = [protocol.new_object], {}
    for threshold in (0.0, 0.5):
        segmenter = build_sam3(args.smoke, args.workdir / "sam3", device, dtype, 1, score_threshold=threshold)
        segmenter.segment(clip.pixels[:3], prompts)  # warm-up: kernels, allocator
        runs = {}
        for key_frames in (1, 5):
            segmenter.num_key_frames = key_frames
            with PeakMemory(device, empty_cache=True) as memory, Stopwatch(device) as timer:
                masks = segmenter.segment(clip.pixels, prompts)
            runs[key_frames] = masks, dict(segment_s=timer.seconds, peak_gib=memory.gib,
                                           mask_share={p: m.float().mean().item() for p, m in masks.items()})
        (one, one_record), (five, five_record) = runs[1], runs[5]
        results[f"threshold={threshold}"] = dict(
            one_session=one_record, five_key_frames=five_record,
            time_ratio=one_record["segment_s"] / five_record["segment_s"],
            iou={p: mask_iou(one[p], five[p]) for p in prompts},
            one_inside_five={p: bool((one[p] & ~five[p]).sum() == 0) for p in prompts},
            frames_differing={p: int((one[p] != five[p]).flatten(1).any(1).sum()) for p in prompts})
        del segmenter
    return results


def part_memory_stages(args, device: torch.device, dtype: torch.dtype) -> dict:
    "Peak GPU memory of each stage under the 24 GB settings (model CPU offload, VAE tiling and slicing)."
    from dynvfx.anchor_attention import AnchorController, anchor_extended_attention
    from dynvfx.masks import latent_mask
    config = with_24gb_settings(edit_config(args.smoke, args.workdir / "memory", str(device), args.backend, False),
                                device)
    clip, masks, protocol = edit_inputs(args.smoke)
    backbone = configure_pipeline(build_pipeline(args.smoke, device, dtype).to("cpu"), config.model)
    grid = backbone.token_grid(clip.num_frames, *clip.size)
    peaks = {}

    def stage(name, run):
        with PeakMemory(device, empty_cache=True) as memory: result = run()
        peaks[name] = memory.gib
        return result
    latents = stage("vae encode", lambda: backbone.encode_video(clip.pixels))
    embeds = stage("text encoder", lambda: backbone.encode_prompt([protocol.target_caption, "",
                                                                  protocol.source_caption]))
    rotary = backbone.rotary_embedding(grid)
    controller = AnchorController.from_settings(config.anchors, moving_object(grid, 0.2).to(device), seed=0)

    def predict(batch: int, t: int) -> torch.Tensor:
        return backbone.predict(latents.expand(batch, -1, -1, -1, -1), t, embeds[:batch], rotary)
    with anchor_extended_attention(backbone.transformer, controller, "all"):
        controller.begin_step(899); stage("transformer batch 3 (anchors)", lambda: predict(3, 899))
        controller.begin_step(19); stage("transformer batch 2", lambda: predict(2, 19))
    pixels = stage("vae decode", lambda: backbone.decode_latents(latents))
    stage("mask to latents (cluster)", lambda: latent_mask(masks["box"], grid, config.masks, backbone))
    segmenter = build_sam3(args.smoke, args.workdir / "sam3", device, dtype, num_key_frames=1)
    stage("sam3 (1 key frame)", lambda: segmenter.segment(pixels, [protocol.new_object]))
    return dict(peak_gib=peaks)


# -- the report -------------------------------------------------------------------------------------------------------

def report(workdir: Path) -> dict:
    """Our edit's wall time by stage against the reference's cost rebuilt from the same machine's timings: 250
    batch-1 inversion steps, the exact method's denoising steps (the default edit's, also when ours ran a preset with
    fewer), each costing an anchored batch-2 plus a batch-1 forward, and a VAE round trip per pass. The reference's
    step is priced three ways: a plain batch-2 plus a batch-1 forward measured here (a lower bound: anchors only add
    work), the task statement's 3.56 s, and our rewrite of the authors' anchored attention. Segmentation (theirs:
    EVF-SAM 2) is not rebuilt; ratios are given without it and with ours on both sides (the reference's: our time per
    segmentation, once per exact pass)."""
    edits = [json.loads(p.read_text()) for p in sorted(workdir.glob("edit_*.json"))]
    forward = json.loads((workdir / "reference.json").read_text())
    ours = {"inversion": edits[0]["inversion_s"]}
    for edit in edits:
        for stage, seconds in edit["edit_times_s"].items(): ours[stage] = ours.get(stage, 0.0) + seconds
    steps, passes = edits[-1].get("exact_steps", edits[-1]["steps"]), edits[-1].get("exact_passes", 6)
    segmentation = sum(v for k, v in ours.items() if k.startswith("segmentation") or k.startswith("masks"))
    reference_segmentation = segmentation / edits[-1]["passes_done"] * passes
    ours_total = sum(ours.values())
    step_prices = {"plain batch-2 + batch-1 (lower bound)": forward["batch_2"] + forward["batch_1"],
                   "task statement (3.56 s)": TASK_REFERENCE_STEP_S,
                   "our rewrite of the authors' attention": forward["reference_anchored_batch_2"] + forward["batch_1"]}
    fixed = {"inversion (250 x batch-1 forward)": 250 * forward["batch_1"],
             f"VAE ({passes} round trips)": passes * (forward["vae_encode"] + forward["vae_decode"])}
    references = {}
    for name, step in step_prices.items():
        total = sum(fixed.values()) + steps * step
        references[name] = dict(step_s=step, total_s=total, ratio=(ours_total - segmentation) / total,
                                ratio_with_segmentation=ours_total / (total + reference_segmentation))
    return dict(ours_s=ours, ours_total_s=ours_total, ours_segmentation_s=segmentation, complete=edits[-1]["complete"],
                steps=edits[-1]["steps"], source_steps=edits[-1]["source_steps"], passes=edits[-1]["passes_done"],
                reference_steps=steps, reference_passes=passes, reference_segmentation_s=reference_segmentation,
                reference_fixed_s=fixed,
                references=references, forward_timings=forward)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=PARTS, required=True)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".devrun" / "bench-edit",
                        help="kept between calls: caches, passes, timings")
    parser.add_argument("--out", type=Path, default=None, help="folder for a copy of the results")
    parser.add_argument("--key-frames", type=int, default=1,
                        help="--part sam3 and edit: key frames of each segmentation")
    parser.add_argument("--sam3-threshold", type=float, default=0.0,
                        help="--part edit: SAM 3's detection threshold (0: its random weights find all 200 "
                             "candidates; 0.5: none)")
    parser.add_argument("--passes-now", type=int, default=None,
                        help="--part edit: at most this many new passes in this call")
    parser.add_argument("--frames", type=int, default=97, help="--part windows: the clip's frames")
    parser.add_argument("--backend", default="sdpa"); parser.add_argument("--compile", action="store_true")
    parser.add_argument("--preset", default=None, help="--part edit: a preset of settings ('fast', or a YAML file)")
    parser.add_argument("--repeats", type=int, default=3); parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    dtype = torch.float32 if args.smoke else torch.bfloat16
    if args.part == "report": results = report(args.workdir)
    else:
        part = dict(probe=part_probe, sam3=part_sam3, sam3_sessions=part_sam3_sessions, edit=part_edit,
                    windows=part_windows, reference=part_reference, memory=part_memory,
                    memory_stages=part_memory_stages)[args.part]
        results = part(args, device, dtype)
        results["device"] = device_name(device)
    name = f"edit_{len(list(args.workdir.glob('edit_*.json'))):02d}" if args.part == "edit" else args.part
    if args.part == "windows": name = f"windows_{args.frames}"
    for folder in [args.workdir] + ([args.out] if args.out else []): write_json(folder / f"{name}.json", results, 2)
    print(json_text(results, 2))
    return results


if __name__ == "__main__":
    main()
