#!/usr/bin/env python
"""Time one DDIM inversion step of `dynvfx.inversion` against one plain transformer forward, at CogVideoX-5B shapes.

The transformer has CogVideoX-5B's configuration (48 heads x 64, 42 layers, rotary embeddings) with random weights,
built directly on the GPU in bfloat16; the clip is 49 frames of 720x480, i.e. latents 1x13x16x60x90 (17,550 video
tokens + 226 text tokens). The "inversion step" is `dynvfx.inversion.ddim_inversion_step`, exactly what `invert_clip`
runs per step: the backbone's `predict` at the target timestep (float32 latents in, float32 velocity out), the
NaN/Inf check, and the DDIM update. Saving a timestep's latents (every 5th step of 250) is timed separately.

    GPU:    python -m bench.bench_inversion --out "$OUT"
    smoke:  python -m bench.bench_inversion --smoke --out /tmp/bench-inversion   (tiny shapes, CPU, seconds)

Writes bench_inversion.json and bench_inversion.md under --out.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import (COGVIDEOX_5B, SMOKE, build_transformer, clip_size, device_name, peak_memory_gib,
                          time_repeats, write_json)
from dynvfx.core import atomic_write_text

SUMMARY = ("device", "plain_forward_ms", "inversion_step_ms", "save_timestep_ms", "peak_memory_gib",
           "estimated_full_inversion_s")  # what is printed


def build_backbone(smoke: bool, device: torch.device, dtype: torch.dtype):
    "A backbone around a random transformer of 5B shapes (or tiny); a tiny VAE and text encoder give its geometry."
    from diffusers import CogVideoXPipeline
    from dynvfx.backbone import CogVideoXBackbone, tiny_cogvideox
    config = SMOKE if smoke else COGVIDEOX_5B
    tiny = tiny_cogvideox(seed=0, latent_channels=config["in_channels"], vae_channels=(8,) * (3 if smoke else 4))
    transformer = build_transformer(config, device, dtype).requires_grad_(False)
    pipe = CogVideoXPipeline(tokenizer=tiny.tokenizer, text_encoder=tiny.text_encoder, vae=tiny.vae,
                             transformer=transformer, scheduler=tiny.scheduler)
    return CogVideoXBackbone(pipe, model_id="random weights, " + ("tiny" if smoke else "CogVideoX-5B shapes"),
                             device=device)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, to check the script")
    parser.add_argument("--out", default=os.environ.get("OUT", "bench-out"), help="folder for the results")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    return parser.parse_args(argv)


def measure(backbone, args, device: torch.device, dtype: torch.dtype) -> dict:
    "Forward and inversion-step times (ms, interleaved), the save time, peak memories, and one step's result."
    from dynvfx.inversion import ddim_inversion_step, inversion_timesteps, save_latents
    grid = backbone.token_grid(*clip_size(args.smoke))
    rotary = backbone.rotary_embedding(grid)
    generator = torch.Generator(device).manual_seed(0)
    latents = torch.randn((1, *grid.latent_shape), generator=generator, device=device)  # float32, as in invert_clip
    text_shape = (1, grid.text_length, backbone.transformer.config.text_embed_dim)
    prompt_embeds = torch.randn(text_shape, generator=generator, device=device).to(dtype)
    inversion_grid, _ = inversion_timesteps(backbone.scheduler, 250, 50)
    timestep_from, timestep_to = inversion_grid[219], inversion_grid[220]  # 879 -> 883, inside the anchor window
    model_latents, timestep = latents.to(dtype), torch.tensor([timestep_to], device=device)

    def plain_forward():
        with torch.no_grad():
            return backbone.transformer(hidden_states=model_latents, encoder_hidden_states=prompt_embeds,
                                        timestep=timestep, image_rotary_emb=rotary, return_dict=False)[0]

    def one_inversion_step():
        return ddim_inversion_step(backbone, latents, timestep_from, timestep_to, prompt_embeds, rotary)

    forward_ms, step_ms = [], []
    for _ in range(args.warmup): plain_forward(); one_inversion_step()
    for _ in range(args.repeats):  # interleaved, so drift (clocks, temperature) affects both alike
        forward_ms += [1000 * t for t in time_repeats(plain_forward, device, 0, 1)]
        step_ms += [1000 * t for t in time_repeats(one_inversion_step, device, 0, 1)]
    with tempfile.TemporaryDirectory() as folder:
        step_result = one_inversion_step()
        save = lambda: save_latents(Path(folder) / "t0883.safetensors", step_result)
        save_ms = [1000 * t for t in time_repeats(save, device, 1, args.repeats)]
    return dict(grid=grid, timesteps=[timestep_from, timestep_to], forward_ms=forward_ms, step_ms=step_ms,
                save_ms=save_ms, forward_gib=peak_memory_gib(plain_forward, device),
                step_gib=peak_memory_gib(one_inversion_step, device), finite=bool(torch.isfinite(step_result).all()))


def make_result(args, backbone, measured: dict, build_s: float, device: torch.device, dtype: torch.dtype) -> dict:
    "The JSON result: the setting, every time, the medians and the whole inversion's estimated time."
    import diffusers
    forward, step = statistics.median(measured["forward_ms"]), statistics.median(measured["step_ms"])
    save, grid = statistics.median(measured["save_ms"]), measured["grid"]
    frames, height, width = clip_size(args.smoke)
    times = lambda ms: {"median": round(statistics.median(ms), 2), "all": [round(t, 2) for t in ms]}
    return {
        "device": device_name(device), "torch": torch.__version__, "diffusers": diffusers.__version__,
        "dtype": str(dtype).removeprefix("torch."), "smoke": args.smoke,
        "transformer_config": SMOKE if args.smoke else COGVIDEOX_5B,
        "parameters_billion": sum(p.numel() for p in backbone.transformer.parameters()) / 1e9,
        "clip": {"frames": frames, "height": height, "width": width}, "latent_shape": [1, *grid.latent_shape],
        "sequence_length": grid.sequence_length, "timesteps": measured["timesteps"],
        "warmup": args.warmup, "repeats": args.repeats, "build_s": round(build_s, 2),
        "plain_forward_ms": times(measured["forward_ms"]), "inversion_step_ms": times(measured["step_ms"]),
        "inversion_step_overhead_ms": round(step - forward, 2), "save_timestep_ms": times(measured["save_ms"]),
        "peak_memory_gib": {"plain_forward": measured["forward_gib"], "inversion_step": measured["step_gib"]},
        "estimated_full_inversion_s": round((250 * step + 50 * save) / 1000, 1),  # 250 steps, 50 saved timesteps
        "estimated_inversion_to_899_s": round((225 * step + 45 * save) / 1000, 1),
        "finite": measured["finite"],
    }


def markdown(result: dict, measured: dict, smoke: bool) -> str:
    "The result as a short markdown page."
    forward, step, save = (statistics.median(measured[k]) for k in ("forward_ms", "step_ms", "save_ms"))
    peaks = result["peak_memory_gib"]
    memory = (f"; peak GPU memory {peaks['plain_forward']:.1f} GiB (forward) / {peaks['inversion_step']:.1f} GiB "
              f"(inversion step)" if peaks["plain_forward"] else "")
    return (f"# One DDIM inversion step vs one plain forward\n\n"
            f"{result['device']}, torch {result['torch']}, diffusers {result['diffusers']}, {result['dtype']}, "
            f"{'tiny smoke shapes' if smoke else 'CogVideoX-5B shapes, random weights'} "
            f"({result['parameters_billion']:.2f} B parameters), latents {result['latent_shape']}, "
            f"{result['sequence_length']} tokens; median of {result['repeats']} after {result['warmup']} warm-up "
            f"calls{memory}.\n\n"
            f"| what | median ms |\n| --- | --- |\n| plain transformer forward | {forward:.1f} |\n"
            f"| inversion step (predict + NaN check + DDIM update) | {step:.1f} |\n"
            f"| saving one timestep's latents | {save:.1f} |\n\n"
            f"Whole inversion (250 steps, 50 saved): about {result['estimated_full_inversion_s']} s; "
            f"up to t=899 (225 steps, 45 saved): about {result['estimated_inversion_to_899_s']} s.\n")


def main(argv=None) -> dict:
    args = parse_args(argv)
    import diffusers
    diffusers.utils.logging.set_verbosity_error()  # the random model's dtype cast warns; nothing to fix here
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("no CUDA GPU: run with --smoke to check the script on the CPU")
    device = torch.device("cpu" if args.smoke else "cuda")
    dtype = torch.float32 if args.smoke else torch.bfloat16
    started = time.perf_counter()
    backbone = build_backbone(args.smoke, device, dtype)
    build_s = time.perf_counter() - started
    measured = measure(backbone, args, device, dtype)
    result = make_result(args, backbone, measured, build_s, device, dtype)
    write_json(Path(args.out) / "bench_inversion.json", result)
    atomic_write_text(Path(args.out) / "bench_inversion.md", markdown(result, measured, args.smoke))
    print(json.dumps({k: result[k] for k in SUMMARY}, indent=1))
    return result


if __name__ == "__main__":
    main()
