"""One DynVFX pass on one GPU against the same pass split over two GPUs (`dynvfx.parallel`), at CogVideoX-5B scale.

Run under torchrun with two processes, one GPU each (random bf16 weights, seeded the same in both processes):

  torchrun --nproc-per-node 2 bench/bench_branch_split.py --out results/      # two GPUs
  torchrun --nproc-per-node 2 bench/bench_branch_split.py --smoke             # tiny, on the CPU with gloo (checks the script)

Process 0 inverts the clip (on the 50-step grid, up to the pass's start) and runs one refinement pass from the third
lowest timestep of the anchor window (t = 659: 33 steps, 3 of them with the source branch) twice: alone, with the
stock pipeline (batch [conditional, unconditional, source] or [conditional, unconditional] a step), while process 1
waits; then split, with process 1 running the unconditional branch. Each step's forward (with the exchange, when
split) is timed; the two passes' latents are compared. Segmentation is left out: it is the same in both and runs on
process 0 alone.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "bench"))
from bench_edit import build_pipeline, edit_config, edit_inputs, synchronize  # noqa: E402
from dynvfx.anchor_attention import anchor_extended_attention  # noqa: E402
from dynvfx.backbone import configure_pipeline  # noqa: E402
from dynvfx.config import apply_overrides  # noqa: E402
from dynvfx.pipeline import DynVFXPipeline, RunLog  # noqa: E402
from dynvfx.parallel import BranchSplitPipeline, start_branch_split  # noqa: E402


class StepTimes:
    "Seconds of each step's `branch_velocities` (the forward, and the exchange when split), by whether the source branch ran."
    def __init__(self): self.active, self.inactive = [], []

    def timed(self, run, device: torch.device, active: bool):
        synchronize(device); started = time.perf_counter()
        out = run(); synchronize(device)
        (self.active if active else self.inactive).append(time.perf_counter() - started)
        return out

    def summary(self) -> dict:
        return dict(active_median_s=statistics.median(self.active) if self.active else None, active_steps=len(self.active),
                    inactive_median_s=statistics.median(self.inactive), inactive_steps=len(self.inactive),
                    total_s=sum(self.active) + sum(self.inactive))


class TimedSteps:
    "Times each step's `branch_velocities` (in a split, process 0's time includes waiting for process 1's half)."
    times: StepTimes

    def branch_velocities(self, latents, t, active, *rest):
        return self.times.timed(lambda: super(TimedSteps, self).branch_velocities(latents, t, active, *rest), self.backbone.device, active)


class TimedPipeline(TimedSteps, DynVFXPipeline): "The one-GPU pipeline, its steps timed."
class TimedSplitPipeline(TimedSteps, BranchSplitPipeline): "The split pipeline, its steps timed."


@torch.no_grad()
def weights_checksum(backbone) -> float:
    "A number that differs when the two processes' transformers differ."
    return float(sum(p.float().sum() for p in list(backbone.transformer.parameters())[::7]))


def main(argv=None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-split"))
    parser.add_argument("--out", type=Path, default=None, help="folder for a copy of the results")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.smoke
    config = edit_config(args.smoke, args.workdir, "cuda" if cuda else "cpu", "sdpa", False)
    config = apply_overrides(config, {"model.branch_parallel": True, "inversion.steps": config.sampling.steps}, source="bench")
    config, split = start_branch_split(config)
    if split is None: raise SystemExit("run under torchrun with 2 processes: torchrun --nproc-per-node 2 bench/bench_branch_split.py")
    device, dtype = split.device, (torch.bfloat16 if cuda else torch.float32)
    started = time.perf_counter()
    backbone = configure_pipeline(build_pipeline(args.smoke, device, dtype), config.model)
    synchronize(device); build_s = time.perf_counter() - started
    checksums = [None, None]; dist.all_gather_object(checksums, weights_checksum(backbone))
    if checksums[0] != checksums[1]: raise SystemExit(f"the two processes built different weights: {checksums}")
    split_pipeline = TimedSplitPipeline(backbone, None, config, split); split_pipeline.times = StepTimes()
    with split:
        if split.rank == 1:
            split_pipeline.serve()
            return None
        from dynvfx.inversion import invert_clip
        single = TimedPipeline(backbone, None, config); single.times = StepTimes()
        active = sorted(t for t in single.schedule.timesteps if single.schedule.extension_active(t))
        start = active[min(2, len(active) - 1)]
        clip, masks, protocol = edit_inputs(args.smoke)
        t = time.perf_counter()
        reference = invert_clip(backbone, clip.pixels, config.inversion, config.reference_latents_dir, sampling_steps=config.sampling.steps,
                                max_timestep=start, progress=False)
        synchronize(device); inversion_s = time.perf_counter() - t
        grid = backbone.token_grid(clip.num_frames, *clip.size)
        embeds, rotary = single.prompt_embeddings(protocol), backbone.rotary_embedding(grid)
        composite = reference.clean_latents.to(device, torch.float32)
        results, latents = {}, {}
        for name, pipeline in (("one GPU", single), ("split over 2 GPUs", split_pipeline)):
            controller = pipeline.anchor_controller(masks, grid, RunLog(None))
            if device.type == "cuda": torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            with anchor_extended_attention(backbone.transformer, controller, config.anchors.layers):
                latents[name] = pipeline.denoise_pass(composite, start, 0, embeds, rotary, controller, reference, progress=False)
            synchronize(device)
            results[name] = dict(pass_s=time.perf_counter() - t, **pipeline.times.summary(),
                                 peak_gib_process_0=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None)
        difference = (latents["one GPU"] - latents["split over 2 GPUs"]).abs()
        scale = latents["one GPU"].abs().max().item()
        report = dict(device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", dtype=str(dtype), build_s=build_s,
                      inversion_s=inversion_s, inversion_steps=config.inversion.steps, pass_start=start,
                      steps=len(single.schedule.pass_timesteps(start)), results=results,
                      speedup_pass=results["one GPU"]["pass_s"] / results["split over 2 GPUs"]["pass_s"],
                      max_abs_difference=difference.max().item(), mean_abs_difference=difference.mean().item(), latents_max_abs=scale,
                      max_difference_over_scale=difference.max().item() / scale)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out: args.out.mkdir(parents=True, exist_ok=True); (args.out / "branch_split.json").write_text(text)
    return report


if __name__ == "__main__":
    main()
