#!/usr/bin/env python
"""Time one DDIM inversion step of `dynvfx.inversion` against one plain transformer forward, at CogVideoX-5B shapes.

The transformer has CogVideoX-5B's configuration (48 heads x 64, 42 layers, rotary embeddings) with random weights,
built directly on the GPU in bfloat16; the clip is 49 frames of 720x480, i.e. latents 1x13x16x60x90 (17,550 video
tokens + 226 text tokens). The "inversion step" is `dynvfx.inversion.inversion_step`, exactly what `invert_clip`
runs per step: the backbone's `predict` at the target timestep (float32 latents in, float32 velocity out), the
NaN/Inf check, and the DDIM update. Saving a timestep's latents (every 5th step of 250) is timed separately.

    GPU:    python bench/bench_inversion.py --out "$OUT"
    smoke:  python bench/bench_inversion.py --smoke --out /tmp/bench-inversion   (tiny shapes, CPU, seconds)

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's dynvfx, without installing it

COGVIDEOX_5B = dict(num_attention_heads=48, attention_head_dim=64, in_channels=16, out_channels=16, time_embed_dim=512,
                    text_embed_dim=4096, num_layers=42, sample_width=90, sample_height=60, sample_frames=49, patch_size=2,
                    max_text_seq_length=226, use_rotary_positional_embeddings=True)
TINY = dict(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=8, text_embed_dim=16,
            num_layers=2, sample_width=12, sample_height=8, sample_frames=9, patch_size=2, max_text_seq_length=16,
            use_rotary_positional_embeddings=True)


def build_backbone(config: dict, vae_levels: int, device: torch.device, dtype: torch.dtype):
    "A CogVideoXBackbone around a random transformer of `config`; a tiny VAE and text encoder give it its geometry."
    from diffusers import CogVideoXPipeline, CogVideoXTransformer3DModel
    from dynvfx.backbone import CogVideoXBackbone, tiny_cogvideox
    tiny = tiny_cogvideox(seed=0, latent_channels=config["in_channels"], vae_channels=(8,) * vae_levels)
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the GPU: seconds instead of minutes on the CPU
        transformer = CogVideoXTransformer3DModel(**config)
    transformer = transformer.to(dtype).eval().requires_grad_(False)
    pipe = CogVideoXPipeline(tokenizer=tiny.tokenizer, text_encoder=tiny.text_encoder, vae=tiny.vae, transformer=transformer,
                             scheduler=tiny.scheduler)
    return CogVideoXBackbone(pipe, model_id="random weights, " + ("CogVideoX-5B shapes" if config is COGVIDEOX_5B else "tiny"), device=device)


def timed(function, device: torch.device, warmup: int, repeats: int) -> list[float]:
    "Milliseconds of `repeats` calls after `warmup` calls (CUDA events on a GPU, wall clock on the CPU)."
    for _ in range(warmup): function()
    if device.type == "cuda": torch.cuda.synchronize(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(); function(); end.record(); end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            start = time.perf_counter(); function(); times.append((time.perf_counter() - start) * 1000)
    return times


def peak_memory_gib(function, device: torch.device) -> float | None:
    "Peak GPU memory allocated while `function` runs."
    if device.type != "cuda": return None
    torch.cuda.synchronize(device); torch.cuda.reset_peak_memory_stats(device)
    function(); torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**30


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, to check the script")
    parser.add_argument("--out", default=os.environ.get("OUT", "bench-out"), help="folder for the results")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import diffusers
    diffusers.utils.logging.set_verbosity_error()  # the random model's dtype cast warns; nothing to fix here
    from dynvfx.inversion import _save_latents, inversion_step, inversion_timesteps
    if args.smoke:
        config, vae_levels, (frames, height, width), device, dtype = TINY, 3, (9, 32, 48), torch.device("cpu"), torch.float32
    else:
        if not torch.cuda.is_available(): sys.exit("no CUDA GPU: run with --smoke to check the script on the CPU")
        config, vae_levels, (frames, height, width), device, dtype = COGVIDEOX_5B, 4, (49, 480, 720), torch.device("cuda"), torch.bfloat16

    started = time.perf_counter()
    backbone = build_backbone(config, vae_levels, device, dtype)
    build_s = time.perf_counter() - started
    grid = backbone.token_grid(frames, height, width)
    rotary = backbone.rotary_embedding(grid)
    generator = torch.Generator(device).manual_seed(0)
    latents = torch.randn((1, *grid.latent_shape), generator=generator, device=device)               # float32, as in invert_clip
    prompt_embeds = torch.randn((1, grid.text_length, config["text_embed_dim"]), generator=generator, device=device).to(dtype)
    inversion_grid, _ = inversion_timesteps(backbone.scheduler, 250, 50)
    timestep_from, timestep_to = inversion_grid[219], inversion_grid[220]  # 879 -> 883, inside the anchor window
    model_latents = latents.to(dtype)
    timestep = torch.tensor([timestep_to], device=device)

    def plain_forward():
        with torch.no_grad():
            return backbone.transformer(hidden_states=model_latents, encoder_hidden_states=prompt_embeds, timestep=timestep,
                                        image_rotary_emb=rotary, return_dict=False)[0]

    def one_inversion_step():
        return inversion_step(backbone, latents, timestep_from, timestep_to, prompt_embeds, rotary)

    forward_ms, step_ms = [], []
    for _ in range(args.warmup): plain_forward(); one_inversion_step()
    for _ in range(args.repeats):  # interleaved, so drift (clocks, temperature) affects both alike
        forward_ms += timed(plain_forward, device, 0, 1)
        step_ms += timed(one_inversion_step, device, 0, 1)
    with tempfile.TemporaryDirectory() as folder:
        step_result = one_inversion_step()
        save_ms = timed(lambda: _save_latents(Path(folder) / "t0883.safetensors", step_result), device, 1, args.repeats)
    forward_gib, step_gib = peak_memory_gib(plain_forward, device), peak_memory_gib(one_inversion_step, device)

    forward, step, save = statistics.median(forward_ms), statistics.median(step_ms), statistics.median(save_ms)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "diffusers": diffusers.__version__, "dtype": str(dtype).removeprefix("torch."),
        "smoke": args.smoke, "transformer_config": config, "parameters_billion": sum(p.numel() for p in backbone.transformer.parameters()) / 1e9,
        "clip": {"frames": frames, "height": height, "width": width}, "latent_shape": [1, *grid.latent_shape],
        "sequence_length": grid.sequence_length, "timesteps": [timestep_from, timestep_to],
        "warmup": args.warmup, "repeats": args.repeats, "build_s": round(build_s, 2),
        "plain_forward_ms": {"median": round(forward, 2), "all": [round(t, 2) for t in forward_ms]},
        "inversion_step_ms": {"median": round(step, 2), "all": [round(t, 2) for t in step_ms]},
        "inversion_step_overhead_ms": round(step - forward, 2),
        "save_timestep_ms": {"median": round(save, 2), "all": [round(t, 2) for t in save_ms]},
        "peak_memory_gib": {"plain_forward": forward_gib, "inversion_step": step_gib},
        "estimated_full_inversion_s": round((250 * step + 50 * save) / 1000, 1),  # 250 steps, 50 saved timesteps
        "estimated_inversion_to_899_s": round((225 * step + 45 * save) / 1000, 1),
        "finite": bool(torch.isfinite(step_result).all()),
    }
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    (out / "bench_inversion.json").write_text(json.dumps(result, indent=1) + "\n")
    memory = (f"; peak GPU memory {forward_gib:.1f} GiB (forward) / {step_gib:.1f} GiB (inversion step)" if forward_gib else "")
    (out / "bench_inversion.md").write_text(
        f"# One DDIM inversion step vs one plain forward\n\n"
        f"{result['device']}, torch {torch.__version__}, diffusers {diffusers.__version__}, {result['dtype']}, "
        f"{'tiny smoke shapes' if args.smoke else 'CogVideoX-5B shapes, random weights'} "
        f"({result['parameters_billion']:.2f} B parameters), latents {result['latent_shape']}, {grid.sequence_length} tokens; "
        f"median of {args.repeats} after {args.warmup} warm-up calls{memory}.\n\n"
        f"| what | median ms |\n| --- | --- |\n| plain transformer forward | {forward:.1f} |\n"
        f"| inversion step (predict + NaN check + DDIM update) | {step:.1f} |\n| saving one timestep's latents | {save:.1f} |\n\n"
        f"Whole inversion (250 steps, 50 saved): about {result['estimated_full_inversion_s']} s; "
        f"up to t=899 (225 steps, 45 saved): about {result['estimated_inversion_to_899_s']} s.\n")
    print(json.dumps({k: result[k] for k in ("device", "plain_forward_ms", "inversion_step_ms", "save_timestep_ms", "peak_memory_gib", "estimated_full_inversion_s")}, indent=1))
    return result


if __name__ == "__main__":
    main()
