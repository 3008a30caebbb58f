"""Benchmark Anchor Extended Attention at CogVideoX-5B scale (random bf16 weights, 49 frames at 720x480).

Times, in one run on one device (CUDA events, warm-up, median of `--repeats`):
  stock_3     a plain batch-3 forward with diffusers' CogVideoXAttnProcessor2_0
  dynvfx_3    a DynVFX denoising step: controller.begin_step(t) + batch-3 forward [conditional, unconditional, source]
              with AnchorExtendedAttnProcessor on every block, anchors on (reference keep rates, ~20% object)
  ours_off_3  batch-3 forward with our processor, extension inactive (same backend: the pure cost of the anchors)
  stock_2     batch-2 forward (conditional + unconditional), stock processor
  ours_off_2  batch-2 forward with our processor, extension inactive (the pipeline's layout outside the window)
plus the peak memory of each, the attention kernels that ran (torch profiler) and numerical checks
(branches that are not extended equal the stock model's; inactive equals stock).

  python bench/bench_anchor_attention.py                 # GPU, full scale, backend "sdpa"
  python bench/bench_anchor_attention.py --backend cudnn # or flash, efficient, _flash_3, sage, ...
  python bench/bench_anchor_attention.py --smoke         # tiny config on the CPU (checks the script)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dynvfx.anchor_attention import SDPA_KERNELS, AnchorController, anchor_extended_attention  # noqa: E402
from dynvfx.backbone import CogVideoXBackbone, TokenGrid  # noqa: E402

COGVIDEOX_5B = dict(num_attention_heads=48, attention_head_dim=64, in_channels=16, out_channels=16, time_embed_dim=512,
                    text_embed_dim=4096, num_layers=42, sample_width=90, sample_height=60, sample_frames=49, patch_size=2,
                    temporal_compression_ratio=4, max_text_seq_length=226, use_rotary_positional_embeddings=True, norm_eps=1e-5)
SMOKE = dict(COGVIDEOX_5B, num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=8,
             text_embed_dim=16, num_layers=2, sample_width=12, sample_height=8, sample_frames=9, max_text_seq_length=16)
ATTENTION_KERNEL = re.compile(r"flash|fmha|attention|attn|cudnn|sdpa|sage|mha", re.IGNORECASE)


def build_model(config: dict, device: torch.device, dtype: torch.dtype):
    "A CogVideoX transformer with random weights, built directly on `device`."
    from diffusers import CogVideoXTransformer3DModel
    torch.manual_seed(0)
    with torch.device(device): model = CogVideoXTransformer3DModel(**config)
    return model.to(dtype).eval()


def moving_object(grid: TokenGrid, share: float) -> torch.Tensor:
    "Token masks (grid_frames, gh, gw) of a rectangle covering `share` of each frame, moving right over the clip."
    gh, gw = grid.grid_height, grid.grid_width
    height = max(1, round(gh * share ** 0.5)); width = max(1, round(share * gh * gw / height))
    tokens = torch.zeros(grid.grid_shape, dtype=torch.bool)
    for f in range(grid.grid_frames):
        left = round((gw - width) * f / max(1, grid.grid_frames - 1))
        tokens[f, (gh - height) // 2:(gh - height) // 2 + height, left:left + width] = True
    return tokens


def time_once(run, device: torch.device) -> float:
    "Seconds of one `run()` (CUDA events on a GPU)."
    if device.type != "cuda":
        start = time.perf_counter(); run(); return time.perf_counter() - start
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record(); run(); end.record(); end.synchronize()
    return start.elapsed_time(end) / 1000


def time_cases(cases: dict, warmup: int, repeats: int, device: torch.device) -> dict:
    "Median seconds, all times and peak memory (GiB) of each case (context, run); repeats go round-robin over the cases."
    times = {name: [] for name in cases}
    for name, (context, run) in cases.items():
        with context():
            for _ in range(warmup): run()
    for _ in range(repeats):
        for name, (context, run) in cases.items():
            with context(): times[name].append(time_once(run, device))
    results = {}
    for name, (context, run) in cases.items():
        peak = None
        if device.type == "cuda":
            with context():
                torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); run(); torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated() / 2**30
        results[name] = dict(median_s=statistics.median(times[name]), times_s=times[name], peak_gib=peak)
    return results


def attention_kernels(run, device: torch.device) -> list[dict]:
    "The attention kernels (by name) that one `run()` launches, with calls and total device time."
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof: run()
    if device.type == "cuda": torch.cuda.synchronize()
    found = []
    for event in prof.key_averages():
        device_time = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0) or 0
        is_kernel = device.type == "cuda" and device_time > 0 and not event.key.startswith(("aten::", "cuda", "Memcpy", "Memset"))
        is_cpu_op = device.type == "cpu" and event.key.startswith("aten::_scaled_dot_product")
        if (is_kernel or is_cpu_op) and ATTENTION_KERNEL.search(event.key):
            found.append(dict(name=event.key[:160], calls=event.count, time_ms=round(device_time / 1000, 2)))
    return sorted(found, key=lambda k: -k["time_ms"])


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12)).item()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="sdpa", help="attention backend of our processor (ModelSettings.attention_backend)")
    parser.add_argument("--smoke", action="store_true", help="tiny config on the CPU (or the GPU if --device cuda)")
    parser.add_argument("--device", default=None, help="default: cuda if available, cpu for --smoke")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--object-share", type=float, default=0.2, help="share of each frame covered by the anchor object")
    parser.add_argument("--text-queries-see-extension", type=int, default=1)
    parser.add_argument("--out", default=None, help="JSON file for the results (default: $OUT/bench_anchor_attention.json if $OUT is set)")
    args = parser.parse_args(argv)

    device = torch.device(args.device or ("cpu" if args.smoke or not torch.cuda.is_available() else "cuda"))
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    config = SMOKE if args.smoke else COGVIDEOX_5B
    frames, height, width, vae_spatial = (9, 32, 48, 4) if args.smoke else (49, 480, 720, 8)
    grid = TokenGrid(num_frames=frames, height=height, width=width, vae_spatial=vae_spatial, vae_temporal=4,
                     latent_channels=config["in_channels"], patch_size=config["patch_size"], patch_size_t=1,
                     text_length=config["max_text_seq_length"])

    start = time.perf_counter()
    model = build_model(config, device, dtype)
    build_s = time.perf_counter() - start
    rotary = CogVideoXBackbone.rotary_embedding(SimpleNamespace(config=model.config, device=device), grid)
    generator = torch.Generator(device).manual_seed(0)
    latents = torch.randn(3, *grid.latent_shape, generator=generator, device=device).to(dtype)
    embeds = torch.randn(3, grid.text_length, config["text_embed_dim"], generator=generator, device=device).to(dtype)
    timestep = torch.full((3,), 800, device=device)
    object_tokens = moving_object(grid, args.object_share).to(device)

    # the same SDPA kernel for the stock processor where the backend is one; otherwise PyTorch's choice
    stock_context = contextlib.nullcontext
    if args.backend in SDPA_KERNELS:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        stock_context = lambda: sdpa_kernel(getattr(SDPBackend, SDPA_KERNELS[args.backend]))  # noqa: E731

    @torch.inference_mode()
    def forward(batch: int):
        return model(hidden_states=latents[:batch], encoder_hidden_states=embeds[:batch], timestep=timestep[:batch],
                     image_rotary_emb=rotary, return_dict=False)[0]

    controller = AnchorController(object_tokens=object_tokens, seed=0, attention_backend=args.backend,
                                  text_queries_see_extension=bool(args.text_queries_see_extension))

    def dynvfx_step():
        assert controller.begin_step(800)
        return forward(3)

    def inactive_step(batch):
        assert not controller.begin_step(999)
        return forward(batch)

    installed = lambda: anchor_extended_attention(model, controller, "all")  # noqa: E731
    cases = {"stock_3": (stock_context, lambda: forward(3)), "dynvfx_3": (installed, dynvfx_step),
             "ours_off_3": (installed, lambda: inactive_step(3)), "stock_2": (stock_context, lambda: forward(2)),
             "ours_off_2": (installed, lambda: inactive_step(2))}
    results = time_cases(cases, args.warmup, args.repeats, device)
    outputs = {}
    for name, (context, run) in cases.items():
        with context():
            outputs[name] = run()
            if name == "dynvfx_3":
                anchors_per_layer = statistics.mean(len(i) for i in controller.anchor_indices.values())
                kernels_dynvfx = attention_kernels(dynvfx_step, device)
            if name == "stock_3": kernels_stock = attention_kernels(lambda: forward(3), device)

    median = {name: r["median_s"] for name, r in results.items()}
    report = dict(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", torch=torch.__version__,
        config="smoke" if args.smoke else "CogVideoX-5B shape, random weights", dtype=str(dtype), backend=args.backend,
        tokens=dict(text=grid.text_length, video=grid.video_tokens, grid=grid.grid_shape,
                    object_share=round(object_tokens.float().mean().item(), 4),
                    anchors_per_layer=round(anchors_per_layer, 1), anchor_share=round(anchors_per_layer / grid.video_tokens, 4)),
        build_s=round(build_s, 1), times=results,
        ratios=dict(dynvfx_3_over_stock_3=median["dynvfx_3"] / median["stock_3"],
                    dynvfx_3_over_ours_off_3=median["dynvfx_3"] / median["ours_off_3"],
                    ours_off_3_over_stock_3=median["ours_off_3"] / median["stock_3"],
                    ours_off_2_over_stock_2=median["ours_off_2"] / median["stock_2"]),
        checks=dict(unextended_branches_vs_stock=relative_difference(outputs["dynvfx_3"][1:], outputs["stock_3"][1:]),
                    conditional_branch_vs_stock=relative_difference(outputs["dynvfx_3"][:1], outputs["stock_3"][:1]),
                    inactive_3_vs_stock=relative_difference(outputs["ours_off_3"], outputs["stock_3"]),
                    inactive_2_vs_stock=relative_difference(outputs["ours_off_2"], outputs["stock_2"]),
                    finite=bool(torch.isfinite(outputs["dynvfx_3"]).all())),
        attention_kernels=dict(stock_3=kernels_stock, dynvfx_3=kernels_dynvfx),
        limit=dict(dynvfx_3_over_stock_3_max=1.05))
    report["passed"] = report["ratios"]["dynvfx_3_over_stock_3"] <= 1.05

    for name, r in results.items():
        peak = f", peak {r['peak_gib']:.2f} GiB" if r["peak_gib"] is not None else ""
        print(f"{name:11s} median {r['median_s'] * 1000:9.1f} ms{peak}")
    for name, value in report["ratios"].items(): print(f"{name:28s} {value:.4f}")
    print("tokens:", report["tokens"])
    print("checks:", {k: (f"{v:.2e}" if isinstance(v, float) else v) for k, v in report["checks"].items()})
    for case, kernels in report["attention_kernels"].items():
        print(f"attention kernels ({case}):", [f"{k['name'][:90]} x{k['calls']} {k['time_ms']} ms" for k in kernels[:4]])
    print(f"DynVFX step / plain batch-3 forward = {report['ratios']['dynvfx_3_over_stock_3']:.4f} (limit 1.05): {'PASS' if report['passed'] else 'FAIL'}")

    out = args.out or (os.path.join(os.environ["OUT"], "bench_anchor_attention.json") if os.environ.get("OUT") else None)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out + ".tmp").write_text(json.dumps(report, indent=1, default=str)); os.replace(out + ".tmp", out)
        print("wrote", out)
    return report


if __name__ == "__main__":
    main()
