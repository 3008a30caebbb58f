"""One DynVFX pass on one GPU against the same pass split over two GPUs (`dynvfx.parallel`), at CogVideoX-5B scale.

Run under torchrun with two processes, one GPU each (random bf16 weights, seeded the same in both processes):

  torchrun --nproc-per-node 2 -m bench.bench_branch_split --out results/   # two GPUs
  torchrun --nproc-per-node 2 -m bench.bench_branch_split --smoke          # tiny, on the CPU with gloo (checks it)

Process 0 inverts the clip (on the 50-step grid, up to the pass's start) and runs one refinement pass from the third
lowest timestep of the anchor window (t = 659: 33 steps, 3 of them with the source branch) twice: alone, with the
stock pipeline (batch [conditional, unconditional, source] or [conditional, unconditional] a step), while process 1
waits; then split, with process 1 running the unconditional branch. Each step (its forward, with the exchange when
split) is timed by a step callback (`callback_on_step_end`); the two passes' latents are compared. Segmentation is
left out: it is the same in both and runs on process 0 alone.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist

from bench.bench_edit import edit_config, edit_inputs
from bench.common import PeakMemory, Stopwatch, build_pipeline, device_name, json_text, synchronize, write_json
from dynvfx.anchor_attention import anchor_extended_attention
from dynvfx.backbone import configure_pipeline
from dynvfx.config import apply_overrides
from dynvfx.parallel import BranchSplitPipeline, start_branch_split
from dynvfx.pipeline import DynVFXPipeline, RunLog

USAGE = "run under torchrun with 2 processes: torchrun --nproc-per-node 2 -m bench.bench_branch_split"


class StepTimer:
    """A step callback (`callback_on_step_end`) that times every denoising step of a pass, the device synchronized,
    by whether the source branch ran. In a split, process 0's time includes waiting for process 1's half."""
    def __init__(self, device: torch.device):
        self.device, self.active, self.inactive, self.last = device, [], [], None

    def start(self) -> None:
        "Mark the start of a pass: its first step is timed from here."
        synchronize(self.device)
        self.last = time.perf_counter()

    def __call__(self, pipeline, step_index: int, timestep: int, callback_kwargs: dict) -> None:
        synchronize(self.device)
        now = time.perf_counter()
        (self.active if callback_kwargs["active"] else self.inactive).append(now - self.last)
        self.last = now

    def summary(self) -> dict:
        return dict(active_median_s=statistics.median(self.active) if self.active else None,
                    active_steps=len(self.active), inactive_median_s=statistics.median(self.inactive),
                    inactive_steps=len(self.inactive), total_s=sum(self.active) + sum(self.inactive))


@torch.no_grad()
def weights_checksum(backbone) -> float:
    "A number that differs when the two processes' transformers differ."
    return float(sum(p.float().sum() for p in list(backbone.transformer.parameters())[::7]))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-split"))
    parser.add_argument("--out", type=Path, default=None, help="folder for a copy of the results")
    parser.add_argument("--smoke", action="store_true")
    return parser.parse_args(argv)


def build_backbone(args, config, device: torch.device, dtype: torch.dtype) -> tuple:
    "The same random backbone in both processes (checked): the backbone and the seconds it took to build."
    with Stopwatch(device) as build:
        backbone = configure_pipeline(build_pipeline(args.smoke, device, dtype), config.model)
    checksums = [None, None]
    dist.all_gather_object(checksums, weights_checksum(backbone))
    if checksums[0] != checksums[1]: raise SystemExit(f"the two processes built different weights: {checksums}")
    return backbone, build.seconds


def timed_pass(pipeline: DynVFXPipeline, inputs: dict, device: torch.device) -> tuple[dict, torch.Tensor]:
    "One refinement pass of `pipeline`, every step timed: the times, process 0's peak memory, and the latents."
    backbone, config, timer = pipeline.backbone, pipeline.config, StepTimer(device)
    controller = pipeline.anchor_controller(inputs["masks"], inputs["grid"], RunLog(None))
    with PeakMemory(device) as memory, Stopwatch(device) as whole:
        with anchor_extended_attention(backbone.transformer, controller, config.anchors.layers):
            timer.start()
            latents = pipeline.denoise_pass(inputs["composite"], inputs["start"], 0, inputs["embeds"],
                                            inputs["rotary"], controller, inputs["reference"], progress=False,
                                            callback_on_step_end=timer)
    return dict(pass_s=whole.seconds, **timer.summary(), peak_gib_process_0=memory.gib), latents


def pass_inputs(single: DynVFXPipeline, args, device: torch.device) -> tuple[dict, float]:
    "Process 0: the pass's start, the clip inverted up to it and what a pass needs; and the inversion's seconds."
    from dynvfx.inversion import invert_clip
    backbone, config = single.backbone, single.config
    active = sorted(t for t in single.schedule.timesteps if single.schedule.extension_active(t))
    start = active[min(2, len(active) - 1)]
    clip, masks, protocol = edit_inputs(args.smoke)
    with Stopwatch(device) as inversion:
        reference = invert_clip(backbone, clip.pixels, config.inversion, config.reference_latents_dir,
                                sampling_steps=config.sampling.steps, max_timestep=start, progress=False)
    grid = backbone.token_grid(clip.num_frames, *clip.size)
    return dict(start=start, masks=masks, grid=grid, reference=reference, embeds=single.prompt_embeddings(protocol),
                rotary=backbone.rotary_embedding(grid),
                composite=reference.clean_latents.to(device, torch.float32)), inversion.seconds


def make_report(config, device: torch.device, dtype: torch.dtype, build_s: float, inversion_s: float, single,
                inputs: dict, results: dict, latents: dict) -> dict:
    "The JSON report: the setting, both passes' times and memory, the speed-up and the difference of the latents."
    difference = (latents["one GPU"] - latents["split over 2 GPUs"]).abs()
    scale = latents["one GPU"].abs().max().item()
    return dict(device=device_name(device), dtype=str(dtype), build_s=build_s, inversion_s=inversion_s,
                inversion_steps=config.inversion.steps, pass_start=inputs["start"],
                steps=len(single.schedule.pass_timesteps(inputs["start"])), results=results,
                speedup_pass=results["one GPU"]["pass_s"] / results["split over 2 GPUs"]["pass_s"],
                max_abs_difference=difference.max().item(), mean_abs_difference=difference.mean().item(),
                latents_max_abs=scale, max_difference_over_scale=difference.max().item() / scale)


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    cuda = torch.cuda.is_available() and not args.smoke
    config = edit_config(args.smoke, args.workdir, "cuda" if cuda else "cpu", "sdpa", False)
    config = apply_overrides(config, {"model.branch_parallel": True, "inversion.steps": config.sampling.steps},
                             source="bench")
    config, split = start_branch_split(config)
    if split is None: raise SystemExit(USAGE)
    device, dtype = split.device, (torch.bfloat16 if cuda else torch.float32)
    backbone, build_s = build_backbone(args, config, device, dtype)
    split_pipeline = BranchSplitPipeline(backbone, None, config, split)
    with split:
        if split.rank == 1:
            split_pipeline.serve()
            return None
        single = DynVFXPipeline(backbone, None, config)
        inputs, inversion_s = pass_inputs(single, args, device)
        results, latents = {}, {}
        for name, pipeline in (("one GPU", single), ("split over 2 GPUs", split_pipeline)):
            results[name], latents[name] = timed_pass(pipeline, inputs, device)
        report = make_report(config, device, dtype, build_s, inversion_s, single, inputs, results, latents)
    print(json_text(report, 2))
    if args.out: write_json(args.out / "branch_split.json", report, 2)
    return report


if __name__ == "__main__":
    main()
