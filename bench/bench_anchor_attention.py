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

  python -m bench.bench_anchor_attention                 # GPU, full scale, backend "sdpa"
  python -m bench.bench_anchor_attention --backend cudnn # or flash, efficient, _flash_3, sage, ...
  python -m bench.bench_anchor_attention --smoke         # tiny config on the CPU (checks the script)
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import time
from collections.abc import Callable

import torch

from bench.common import (COGVIDEOX_5B, SMOKE, build_transformer, device_name, moving_object, pick_device,
                          step_inputs, synchronize, time_cases, token_grid, write_json)
from dynvfx.anchor_attention import SDPA_KERNELS, AnchorController, anchor_extended_attention

ATTENTION_KERNEL = re.compile(r"flash|fmha|attention|attn|cudnn|sdpa|sage|mha", re.IGNORECASE)
LIMIT = 1.05  # a DynVFX step may take at most this many plain batch-3 forwards


def attention_kernels(run, device: torch.device) -> list[dict]:
    "The attention kernels (by name) that one `run()` launches, with calls and total device time."
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof: run()
    synchronize(device)
    found = []
    for event in prof.key_averages():
        device_time = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0) or 0
        is_kernel = (device.type == "cuda" and device_time > 0
                     and not event.key.startswith(("aten::", "cuda", "Memcpy", "Memset")))
        is_cpu_op = device.type == "cpu" and event.key.startswith("aten::_scaled_dot_product")
        if (is_kernel or is_cpu_op) and ATTENTION_KERNEL.search(event.key):
            found.append(dict(name=event.key[:160], calls=event.count, time_ms=round(device_time / 1000, 2)))
    return sorted(found, key=lambda k: -k["time_ms"])


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12)).item()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="sdpa",
                        help="attention backend of our processor (ModelSettings.attention_backend)")
    parser.add_argument("--smoke", action="store_true", help="tiny config on the CPU (or the GPU if --device cuda)")
    parser.add_argument("--device", default=None, help="default: cuda if available, cpu for --smoke")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--object-share", type=float, default=0.2,
                        help="share of each frame covered by the anchor object")
    parser.add_argument("--text-queries-see-extension", type=int, default=1)
    parser.add_argument("--out", default=None,
                        help="JSON file for the results (default: $OUT/bench_anchor_attention.json if $OUT is set)")
    return parser.parse_args(argv)


def benchmark_cases(model, grid, controller: AnchorController, backend: str, device: torch.device,
                    dtype: torch.dtype) -> tuple[dict, Callable, Callable]:
    "The five cases, (context, run) each, and the runs of a DynVFX step and a plain batch-3 forward."
    latents, embeds, timestep, rotary = step_inputs(model, grid, device, dtype)
    # the same SDPA kernel for the stock processor where the backend is one; otherwise PyTorch's choice
    stock_context = contextlib.nullcontext
    if backend in SDPA_KERNELS:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        stock_context = lambda: sdpa_kernel(getattr(SDPBackend, SDPA_KERNELS[backend]))

    @torch.inference_mode()
    def forward(batch: int):
        return model(hidden_states=latents[:batch], encoder_hidden_states=embeds[:batch], timestep=timestep[:batch],
                     image_rotary_emb=rotary, return_dict=False)[0]

    def dynvfx_step():
        assert controller.begin_step(800)
        return forward(3)

    def inactive_step(batch):
        assert not controller.begin_step(999)
        return forward(batch)

    installed = lambda: anchor_extended_attention(model, controller, "all")
    cases = {"stock_3": (stock_context, lambda: forward(3)), "dynvfx_3": (installed, dynvfx_step),
             "ours_off_3": (installed, lambda: inactive_step(3)), "stock_2": (stock_context, lambda: forward(2)),
             "ours_off_2": (installed, lambda: inactive_step(2))}
    return cases, dynvfx_step, lambda: forward(3)


def outputs_and_kernels(cases: dict, controller: AnchorController, dynvfx_step, stock_step,
                        device: torch.device) -> tuple[dict, float, dict]:
    "One more call of each case: its output, the anchors a layer of the DynVFX step, the kernels of both batch-3 runs."
    outputs, kernels = {}, {}
    for name, (context, run) in cases.items():
        with context():
            outputs[name] = run()
            if name == "dynvfx_3":
                anchors_per_layer = statistics.mean(len(i) for i in controller.anchor_indices.values())
                kernels["dynvfx_3"] = attention_kernels(dynvfx_step, device)
            if name == "stock_3": kernels["stock_3"] = attention_kernels(stock_step, device)
    return outputs, anchors_per_layer, dict(stock_3=kernels["stock_3"], dynvfx_3=kernels["dynvfx_3"])


def make_report(args, device, dtype, grid, object_tokens, anchors_per_layer: float, build_s: float, results: dict,
                outputs: dict, kernels: dict) -> dict:
    "The JSON report: tokens, times, ratios, numerical checks, kernels, and whether the step is within the limit."
    median = {name: r["median_s"] for name, r in results.items()}

    def difference(a: str, b: str, rows: slice = slice(None)) -> float:
        return relative_difference(outputs[a][rows], outputs[b][rows])

    report = dict(
        device=device_name(device), torch=torch.__version__,
        config="smoke" if args.smoke else "CogVideoX-5B shape, random weights", dtype=str(dtype), backend=args.backend,
        tokens=dict(text=grid.text_length, video=grid.video_tokens, grid=grid.grid_shape,
                    object_share=round(object_tokens.float().mean().item(), 4),
                    anchors_per_layer=round(anchors_per_layer, 1),
                    anchor_share=round(anchors_per_layer / grid.video_tokens, 4)),
        build_s=round(build_s, 1), times=results,
        ratios=dict(dynvfx_3_over_stock_3=median["dynvfx_3"] / median["stock_3"],
                    dynvfx_3_over_ours_off_3=median["dynvfx_3"] / median["ours_off_3"],
                    ours_off_3_over_stock_3=median["ours_off_3"] / median["stock_3"],
                    ours_off_2_over_stock_2=median["ours_off_2"] / median["stock_2"]),
        checks=dict(unextended_branches_vs_stock=difference("dynvfx_3", "stock_3", slice(1, None)),
                    conditional_branch_vs_stock=difference("dynvfx_3", "stock_3", slice(None, 1)),
                    inactive_3_vs_stock=difference("ours_off_3", "stock_3"),
                    inactive_2_vs_stock=difference("ours_off_2", "stock_2"),
                    finite=bool(torch.isfinite(outputs["dynvfx_3"]).all())),
        attention_kernels=kernels, limit=dict(dynvfx_3_over_stock_3_max=LIMIT))
    report["passed"] = report["ratios"]["dynvfx_3_over_stock_3"] <= LIMIT
    return report


def print_report(report: dict) -> None:
    for name, r in report["times"].items():
        peak = f", peak {r['peak_gib']:.2f} GiB" if r["peak_gib"] is not None else ""
        print(f"{name:11s} median {r['median_s'] * 1000:9.1f} ms{peak}")
    for name, value in report["ratios"].items(): print(f"{name:28s} {value:.4f}")
    print("tokens:", report["tokens"])
    print("checks:", {k: (f"{v:.2e}" if isinstance(v, float) else v) for k, v in report["checks"].items()})
    for case, kernels in report["attention_kernels"].items():
        print(f"attention kernels ({case}):",
              [f"{k['name'][:90]} x{k['calls']} {k['time_ms']} ms" for k in kernels[:4]])
    print(f"DynVFX step / plain batch-3 forward = {report['ratios']['dynvfx_3_over_stock_3']:.4f} "
          f"(limit {LIMIT}): {'PASS' if report['passed'] else 'FAIL'}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = pick_device(args.smoke, args.device)
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    grid = token_grid(args.smoke)
    start = time.perf_counter()
    model = build_transformer(SMOKE if args.smoke else COGVIDEOX_5B, device, dtype)
    build_s = time.perf_counter() - start
    object_tokens = moving_object(grid, args.object_share).to(device)
    controller = AnchorController(object_tokens=object_tokens, seed=0, attention_backend=args.backend,
                                  text_queries_see_extension=bool(args.text_queries_see_extension))
    cases, dynvfx_step, stock_step = benchmark_cases(model, grid, controller, args.backend, device, dtype)
    results = time_cases(cases, args.warmup, args.repeats, device)
    outputs, anchors_per_layer, kernels = outputs_and_kernels(cases, controller, dynvfx_step, stock_step, device)
    report = make_report(args, device, dtype, grid, object_tokens, anchors_per_layer, build_s, results, outputs,
                         kernels)
    print_report(report)
    out = args.out or (os.path.join(os.environ["OUT"], "bench_anchor_attention.json") if os.environ.get("OUT")
                       else None)
    if out: print("wrote", write_json(out, report))
    return report


if __name__ == "__main__":
    main()
