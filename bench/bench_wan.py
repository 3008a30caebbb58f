"""Wan 2.1 at full scale with random bf16 weights: the DynVFX step's cost and the memory settings for small cards.

The transformers are built in code from Wan 2.1's configs (diffusers' `WanTransformer3DModel`, no download) directly
on the device in bfloat16, with the parameters `from_pretrained(torch_dtype=bfloat16)` keeps in float32 (the model's
`_keep_in_fp32_modules`) in float32. They are wrapped by `dynvfx.wan.WanBackbone` (the rest of the pipeline is
`dynvfx.wan.tiny_wan()`'s: only the transformer is timed) and called through `backbone.predict` with random latents
of the clip's full latent shape and random text embeddings (512 tokens of 4096).

  1.3b  Wan2.1-T2V-1.3B: 30 blocks, 12 heads of 128, ffn 8960 (1.42e9 parameters as diffusers counts them)
  14b   Wan2.1-T2V-14B:  40 blocks, 40 heads of 128, ffn 13824 (1.43e10)
  480p  81 frames at 832x480: latents 21 x 16 x 60 x 104, 21 x 30 x 52 = 32,760 video tokens
  720p  81 frames at 1280x720: latents 21 x 16 x 90 x 160, 75,600 video tokens

Parts:
  --part forward  for --model and --size: the median of --repeats CUDA-event timings (after one warm-up, per case)
                  and the peak memory of
                    plain_3          a plain batch-3 forward through diffusers' own processors
                    anchored_3       a DynVFX step: `controller.begin_step(800)` (inside `wan_anchor_window()`) and a
                                     batch-3 forward [conditional, unconditional, source] with Anchor Extended
                                     Attention on every block's attn1 (anchor object on ~20% of each frame, moving)
                    plain_1, plain_2 plain forwards of batch 1 and 2
                    ours_inactive_2  batch 2 with our processor installed, extension inactive (t=999, above the window)
                  the ratio anchored_3 / plain_3 (the goal: <= 1.05) and each case's time per sample. The JSON is
                  written after every case; --cases runs some of them and merges them into an existing --out of the
                  same model and size (14b at 720p takes about ten minutes: split it, or use --repeats 1)
  --part memory   480p settings for small cards, measured: the 1.3B transformer alone on the GPU (what model CPU
                  offload leaves there) for a batch-1 forward and the batch-3 DynVFX step, goal 8 GiB (if the step
                  does not fit, or with --always-offload, again with group offloading); the 14B with diffusers' group
                  offloading (`ModelMixin.enable_group_offload(onload_device=cuda, offload_device=cpu,
                  offload_type="block_level", num_blocks_per_group=1, use_stream=True)`), goal 24 GiB. A setting
                  fits when its peak reserved memory plus 0.5 GiB for the CUDA context is within the goal. --model
                  measures one of the two only

  python -m bench.bench_wan --part forward --model 1.3b --size 480p    # GPU: bench/results/wan_1.3b_480p.json
  python -m bench.bench_wan --part forward --model 14b --size 720p --repeats 1
  python -m bench.bench_wan --part memory                               # GPU: bench/results/wan_memory_480p.json
  python -m bench.bench_wan --part forward --smoke                      # tiny, on the CPU (checks the script)
  python -m bench.bench_wan --part memory --smoke                       # (group offloading is skipped off CUDA)

--smoke runs the same code with a tiny model (1 block, 2 heads of 12, float32) on a 9-frame 32x48 clip with 16 text
tokens, and writes to a temporary folder; results go to bench/results only from full runs without --out.
"""
from __future__ import annotations

import argparse
import inspect
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from bench.common import (RESULTS_DIR, PeakMemory, Stopwatch, device_name, json_text, moving_object, pick_device,
                          time_cases, write_json)
from dynvfx.anchor_attention import SDPA_KERNELS, AnchorController
from dynvfx.wan import WAN_TEXT_LENGTH, WanBackbone, tiny_wan, wan_anchor_window

PARTS = ("forward", "memory")
WAN_21_1_3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                   out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                   eps=1e-6, rope_max_seq_len=1024, qk_norm="rms_norm_across_heads")
WAN_21_14B = dict(WAN_21_1_3B, num_attention_heads=40, ffn_dim=13824, num_layers=40)
SMOKE_WAN = dict(WAN_21_1_3B, num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
                 text_dim=16, freq_dim=32, ffn_dim=32, num_layers=1, rope_max_seq_len=32)  # as tiny_wan()'s
MODELS = {"1.3b": WAN_21_1_3B, "14b": WAN_21_14B}
NOMINAL_PARAMETERS = {"1.3b": 1.3e9, "14b": 14e9}  # the models' names; diffusers counts 1.42e9 and 1.43e10
SIZES = {"480p": (81, 480, 832), "720p": (81, 720, 1280)}  # frames, height, width
SMOKE_SIZE, SMOKE_TEXT_LENGTH = (9, 32, 48), 16
ACTIVE_T, INACTIVE_T = 800, 999  # inside wan_anchor_window() = (739, 947), above it
OBJECT_SHARE = 0.2               # the anchor object's share of each frame
LIMIT = 1.05                     # a DynVFX step may take at most this many plain batch-3 forwards
CONTEXT_GIB = 0.5                # the CUDA context's memory, outside PyTorch's allocator
MEMORY_GOALS_GIB = {"1.3b": 8.0, "14b": 24.0}
BATCHES = {"plain_3": 3, "anchored_3": 3, "plain_1": 1, "plain_2": 2, "ours_inactive_2": 2}
GROUP_OFFLOAD = dict(offload_type="block_level", num_blocks_per_group=1, use_stream=True)


# -- models ----------------------------------------------------------------------------------------------------------

def check_config(config: dict) -> None:
    "Raise if `config` names a keyword that the installed diffusers' `WanTransformer3DModel` does not take."
    from diffusers import WanTransformer3DModel
    known = inspect.signature(WanTransformer3DModel.__init__).parameters
    unknown = sorted(set(config) - set(known))
    if unknown: raise TypeError(f"WanTransformer3DModel (diffusers) takes no {unknown}; it takes {sorted(known)[1:]}")


def parameter_count(config: dict) -> int:
    "Parameters of a `WanTransformer3DModel` of `config`, counted on the meta device (nothing allocated)."
    from diffusers import WanTransformer3DModel
    check_config(config)
    with torch.device("meta"): model = WanTransformer3DModel(**config)
    return sum(p.numel() for p in model.parameters())


def build_transformer(config: dict, device: torch.device | str, dtype: torch.dtype) -> torch.nn.Module:
    """A `WanTransformer3DModel` of `config` with random weights (seed 0), made directly on `device` in `dtype` (a 14B
    model takes 28 GB, never 57), with the parameters diffusers keeps in float32 in float32."""
    from diffusers import WanTransformer3DModel
    check_config(config)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device): model = WanTransformer3DModel(**config)
    finally: torch.set_default_dtype(default)
    keep = tuple(model._keep_in_fp32_modules or ())  # as from_pretrained(torch_dtype=...) loads them
    for name, param in model.named_parameters():
        if any(part in keep for part in name.split(".")): param.data = param.data.float()
    return model.eval().requires_grad_(False)


def wan_backbone(transformer: torch.nn.Module, device: torch.device, smoke: bool) -> WanBackbone:
    "A `WanBackbone` of `transformer`, the rest of the pipeline tiny (its VAE has the transformer's latent channels)."
    pipe = tiny_wan(latent_channels=int(transformer.config.in_channels))
    pipe.transformer = transformer
    backbone = WanBackbone(pipe, model_id="random Wan 2.1 weights", device=device)
    backbone.text_length = SMOKE_TEXT_LENGTH if smoke else WAN_TEXT_LENGTH
    return backbone


def group_offload(transformer: torch.nn.Module, device: torch.device) -> dict:
    "diffusers' block-level group offloading with a prefetching stream: the blocks live on the CPU, one on `device`."
    transformer.to("cpu")
    if device.type == "cuda": torch.cuda.empty_cache()
    transformer.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"), **GROUP_OFFLOAD)
    return dict(api="ModelMixin.enable_group_offload", onload_device=str(device), offload_device="cpu",
                **GROUP_OFFLOAD)


def build_for_offloading(config: dict, device: torch.device, dtype: torch.dtype, parameters: int) -> tuple:
    """The transformer on the CPU, ready to be group-offloaded: made on the GPU when it has room (seconds) and moved
    to the CPU, else made on the CPU (minutes for 14B); returns it and where it was made."""
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0
    where = device if free > 1.5 * parameters * dtype.itemsize else torch.device("cpu")
    model = build_transformer(config, where, dtype).to("cpu")
    if device.type == "cuda": torch.cuda.empty_cache()
    return model, str(where)


# -- inputs and cases ------------------------------------------------------------------------------------------------

def clip_size(size: str, smoke: bool) -> tuple[int, int, int]:
    "Frames, height and width of the clip."
    return SMOKE_SIZE if smoke else SIZES[size]


def random_inputs(backbone: WanBackbone, grid, device: torch.device, dtype: torch.dtype,
                  batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    "Seeded random latents (batch, F_lat, C, h, w) and prompt embeddings (batch, text length, text dim)."
    generator = torch.Generator(device).manual_seed(0)
    latents = torch.randn(batch, *grid.latent_shape, generator=generator, device=device).to(dtype)
    text_shape = (batch, backbone.text_length, int(backbone.transformer.config.text_dim))
    return latents, torch.randn(text_shape, generator=generator, device=device).to(dtype)


def stock_context(backend: str) -> Callable:
    "The context of diffusers' own processors: the same SDPA kernel as ours where the backend names one."
    if backend not in SDPA_KERNELS: return nullcontext
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return lambda: sdpa_kernel(getattr(SDPBackend, SDPA_KERNELS[backend]))


def forward_cases(backbone: WanBackbone, controller: AnchorController, latents: torch.Tensor, embeds: torch.Tensor,
                  backend: str, stats: dict, names: tuple[str, ...] = tuple(BATCHES)) -> dict:
    "The chosen cases as (context, run) pairs; an anchored run records its anchors a layer in `stats`."
    installed = lambda: backbone.anchor_attention(controller, "all")

    def plain(batch: int) -> Callable:
        return lambda: backbone.predict(latents[:batch], ACTIVE_T, embeds[:batch])

    def ours(batch: int, timestep: int, active: bool) -> Callable:
        def run():
            if controller.begin_step(timestep) != active:
                raise RuntimeError(f"the extension should be {'in' * (not active)}active at t={timestep}")
            if active: stats["anchors_per_layer"] = statistics.mean(len(i) for i in controller.anchor_indices.values())
            return backbone.predict(latents[:batch], timestep, embeds[:batch])
        return run
    stock = stock_context(backend)
    cases = {"plain_3": (stock, plain(3)), "anchored_3": (installed, ours(3, ACTIVE_T, True)),
             "plain_1": (stock, plain(1)), "plain_2": (stock, plain(2)),
             "ours_inactive_2": (installed, ours(2, INACTIVE_T, False))}
    return {name: cases[name] for name in names}


def measure(name: str, case: tuple, device: torch.device, repeats: int) -> dict:
    """One case: the median of `repeats` timings after one warm-up, its time per sample, its peak memory allocated
    (`peak_gib`) and reserved; an out-of-memory error is recorded, not raised."""
    batch = BATCHES[name]
    try:
        with PeakMemory(device, empty_cache=True) as peak:
            timed = time_cases({name: case}, warmup=1, repeats=repeats, device=device)[name]
    except torch.OutOfMemoryError as error:
        if device.type == "cuda": torch.cuda.empty_cache()
        return dict(batch=batch, oom=True, error=str(error).splitlines()[0])
    return dict(batch=batch, **timed, per_sample_s=timed["median_s"] / batch, peak_reserved_gib=peak.reserved_gib)


def gib_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_table(rows: dict[str, dict]) -> None:
    "Case, batch, median, time per sample and peak memory, one line a case."
    print(f"{'case':34s} {'batch':>5s} {'median s':>10s} {'per sample s':>12s} {'peak GiB':>9s} {'reserved':>9s}")
    for name, r in rows.items():
        if r.get("oom"): print(f"{name:34s} {r['batch']:5d}  out of memory: {r['error'][:60]}"); continue
        print(f"{name:34s} {r['batch']:5d} {r['median_s']:10.4f} {r['per_sample_s']:12.4f} "
              f"{gib_text(r['peak_gib']):>9s} {gib_text(r['peak_reserved_gib']):>9s}")


# -- results ---------------------------------------------------------------------------------------------------------

def output_path(args: argparse.Namespace, stem: str) -> Path:
    "--out, else a temporary folder for --smoke, else bench/results/<stem>.json."
    if args.out: return Path(args.out)
    if args.smoke: return Path(tempfile.mkdtemp(prefix="bench-wan-")) / f"{stem}.json"
    return RESULTS_DIR / f"{stem}.json"


def header(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict:
    "What every result file starts with: the part, the machine, the software, the settings."
    import diffusers
    return dict(part=args.part, smoke=args.smoke, device=device_name(device), torch=torch.__version__,
                diffusers=diffusers.__version__, dtype=str(dtype), backend=args.backend, repeats=args.repeats,
                warmup=1, date=time.strftime("%Y-%m-%d %H:%M:%S"))


def model_record(name: str, config: dict, smoke: bool) -> dict:
    "The model's config and its parameter count, checked against its name (printed)."
    count = parameter_count(config)
    nominal = None if smoke else NOMINAL_PARAMETERS[name]
    print(f"model {name}{' (smoke config)' if smoke else ''}: {count:,} parameters"
          + (f" ({count / nominal:.2f}x the name's {nominal:.1e})" if nominal else ""))
    if nominal and not 0.9 <= count / nominal <= 1.2:
        print(f"WARNING: {count:.3e} parameters is far from {name}'s {nominal:.1e}: check the config")
    return dict(model=name, config=config, parameters=count, nominal_parameters=nominal)


# -- parts -----------------------------------------------------------------------------------------------------------

@torch.no_grad()
def part_forward(args: argparse.Namespace, device: torch.device, dtype: torch.dtype, out: Path) -> dict:
    "Plain forwards of batch 1, 2 and 3 against the anchored DynVFX step, for one model and clip size."
    model, size = args.model or "1.3b", args.size
    names = tuple(args.cases.split(",")) if args.cases else tuple(BATCHES)
    unknown = sorted(set(names) - set(BATCHES))
    if unknown: raise SystemExit(f"--cases: no case {unknown}; the cases are {list(BATCHES)}")
    config = SMOKE_WAN if args.smoke else MODELS[model]
    results = dict(header(args, device, dtype), size=size, **model_record(model, config, args.smoke), cases={})
    if args.cases and out.exists():  # a split run: keep the cases measured before
        before = json.loads(out.read_text())
        if (before.get("model"), before.get("size"), before.get("smoke")) == (model, size, args.smoke):
            results["cases"] = before.get("cases", {})
    with Stopwatch(device) as build: transformer = build_transformer(config, device, dtype)
    backbone = wan_backbone(transformer, device, args.smoke)
    frames, height, width = clip_size(size, args.smoke)
    grid = backbone.token_grid(frames, height, width)
    object_tokens = moving_object(grid, OBJECT_SHARE).to(device)
    controller = AnchorController(object_tokens=object_tokens, window=wan_anchor_window(), seed=0,
                                  attention_backend=args.backend)
    results.update(build_s=build.seconds, clip=dict(frames=frames, height=height, width=width),
                   latent_shape=grid.latent_shape, grid_shape=grid.grid_shape, video_tokens=grid.video_tokens,
                   text_tokens=backbone.text_length, object_share=object_tokens.float().mean().item(),
                   anchor_window=controller.window, timesteps=dict(active=ACTIVE_T, inactive=INACTIVE_T))
    print(f"built in {build.seconds:.1f} s; latents {grid.latent_shape}, {grid.video_tokens:,} video tokens, "
          f"{backbone.text_length} text tokens, object on {results['object_share']:.1%} of each frame")
    latents, embeds = random_inputs(backbone, grid, device, dtype)
    stats: dict[str, Any] = {}
    for name, case in forward_cases(backbone, controller, latents, embeds, args.backend, stats, names).items():
        results["cases"][name] = measure(name, case, device, args.repeats)
        if "anchors_per_layer" in stats:
            results.update(anchors_per_layer=stats["anchors_per_layer"],
                           anchor_share=stats["anchors_per_layer"] / grid.video_tokens)
        results.update(forward_ratios(results["cases"]))
        write_json(out, results)
        print(f"{name}: {json_text({k: v for k, v in results['cases'][name].items() if k != 'times_s'}, None)}")
    return results


def forward_ratios(cases: dict) -> dict:
    "The DynVFX step over a plain batch-3 forward (and whether within LIMIT), our inactive batch 2 over plain batch 2."
    median = {name: case["median_s"] for name, case in cases.items() if "median_s" in case}
    ratios = {}
    if {"anchored_3", "plain_3"} <= set(median):
        ratios["anchored_3_over_plain_3"] = median["anchored_3"] / median["plain_3"]
    if {"ours_inactive_2", "plain_2"} <= set(median):
        ratios["ours_inactive_2_over_plain_2"] = median["ours_inactive_2"] / median["plain_2"]
    if {"plain_3", "plain_1"} <= set(median):
        ratios["plain_3_over_3_plain_1"] = median["plain_3"] / 3 / median["plain_1"]
    result = dict(ratios=ratios, limit=dict(anchored_3_over_plain_3_max=LIMIT))
    if "anchored_3_over_plain_3" in ratios: result["passed"] = ratios["anchored_3_over_plain_3"] <= LIMIT
    return result


def memory_setting(name: str, backbone: WanBackbone, grid, device: torch.device, dtype: torch.dtype,
                   args: argparse.Namespace, goal_gib: float, results: dict, out: Path, extra: dict) -> dict:
    "A batch-1 forward and the batch-3 DynVFX step of one setting: times, peaks, whether it fits `goal_gib`."
    object_tokens = moving_object(grid, OBJECT_SHARE).to(device)
    controller = AnchorController(object_tokens=object_tokens, window=wan_anchor_window(), seed=0,
                                  attention_backend=args.backend)
    latents, embeds = random_inputs(backbone, grid, device, dtype)
    stats: dict[str, Any] = {}
    setting = results["settings"][name] = dict(extra, goal_gib=goal_gib, cases={})
    for case_name, case in forward_cases(backbone, controller, latents, embeds, args.backend, stats,
                                         ("plain_1", "anchored_3")).items():
        record = setting["cases"][case_name] = measure(case_name, case, device, args.repeats)
        if record.get("peak_reserved_gib") is not None:
            record["fits"] = record["peak_reserved_gib"] + CONTEXT_GIB <= goal_gib
        elif record.get("oom"): record["fits"] = False
        setting["fits"] = (all(c.get("fits") for c in setting["cases"].values())
                           if device.type == "cuda" else None)
        write_json(out, results)
        print(f"{name} {case_name}: {json_text({k: v for k, v in record.items() if k != 'times_s'}, None)}")
    del latents, embeds
    return setting


@torch.no_grad()
def part_memory(args: argparse.Namespace, device: torch.device, dtype: torch.dtype, out: Path) -> dict:
    "The 1.3B alone on the GPU (and group-offloaded if the step does not fit), the 14B group-offloaded; 480p."
    frames, height, width = clip_size("480p", args.smoke)
    results = dict(header(args, device, dtype), size="480p", clip=dict(frames=frames, height=height, width=width),
                   context_gib=CONTEXT_GIB, settings={})
    if "1.3b" in models_of(args):
        config = SMOKE_WAN if args.smoke else MODELS["1.3b"]
        extra = model_record("1.3b", config, args.smoke)
        with Stopwatch(device) as build: transformer = build_transformer(config, device, dtype)
        backbone = wan_backbone(transformer, device, args.smoke)
        grid = backbone.token_grid(frames, height, width)
        results.update(latent_shape=grid.latent_shape, video_tokens=grid.video_tokens)
        setting = memory_setting("1.3b_on_gpu", backbone, grid, device, dtype, args, MEMORY_GOALS_GIB["1.3b"],
                                 results, out, dict(extra, placement="the transformer alone on the device",
                                                    build_s=build.seconds))
        if device.type != "cuda": skipped(results, "1.3b_group_offload", out)
        elif args.always_offload or not setting["fits"]:
            offload = group_offload(transformer, device)
            memory_setting("1.3b_group_offload", backbone, grid, device, dtype, args, MEMORY_GOALS_GIB["1.3b"],
                           results, out, dict(extra, placement="group offloading", offload=offload))
        del backbone, transformer, setting
        if device.type == "cuda": torch.cuda.empty_cache()
    if "14b" in models_of(args):
        if device.type != "cuda": skipped(results, "14b_group_offload", out)
        else:
            config = MODELS["14b"]
            extra = model_record("14b", config, False)
            with Stopwatch(device) as build:
                transformer, made_on = build_for_offloading(config, device, dtype, extra["parameters"])
            print(f"14b made on {made_on} and moved to the CPU in {build.seconds:.1f} s")
            with Stopwatch(device) as offloading: offload = group_offload(transformer, device)
            backbone = wan_backbone(transformer, device, False)
            grid = backbone.token_grid(frames, height, width)
            results.update(latent_shape=grid.latent_shape, video_tokens=grid.video_tokens)
            memory_setting("14b_group_offload", backbone, grid, device, dtype, args, MEMORY_GOALS_GIB["14b"],
                           results, out, dict(extra, placement="group offloading", offload=offload,
                                              build_s=build.seconds, made_on=made_on,
                                              offload_setup_s=offloading.seconds))
    write_json(out, results)
    return results


def models_of(args: argparse.Namespace) -> tuple[str, ...]:
    "The models --part memory measures: --model's, else both."
    return (args.model,) if args.model else ("1.3b", "14b")


def skipped(results: dict, name: str, out: Path) -> None:
    "Record and print a setting that needs CUDA (group offloading) as skipped."
    results["settings"][name] = dict(skipped="group offloading needs a CUDA device")
    write_json(out, results)
    print(f"{name}: skipped (group offloading needs a CUDA device)")


# -- main ------------------------------------------------------------------------------------------------------------

def print_summary(results: dict, out: Path) -> None:
    "The table of every case measured, the ratios or the fits, and the JSON's path."
    print()
    if results["part"] == "forward":
        print(f"Wan {results['model']} at {results['size']} ({results['video_tokens']:,} video tokens, "
              f"{results['parameters']:,} parameters) on {results['device']}")
        print_table(results["cases"])
        for name, value in results.get("ratios", {}).items(): print(f"{name:34s} {value:.4f}")
        if "passed" in results:
            print(f"DynVFX step / plain batch-3 forward = {results['ratios']['anchored_3_over_plain_3']:.4f} "
                  f"(goal <= {LIMIT}): {'PASS' if results['passed'] else 'FAIL'}")
    else:
        print(f"Wan at 480p on {results['device']} (fits: peak reserved + {CONTEXT_GIB} GiB within the goal)")
        rows = {f"{name}/{case}": record for name, setting in results["settings"].items()
                for case, record in setting.get("cases", {}).items()}
        print_table(rows)
        for name, setting in results["settings"].items():
            if "skipped" in setting: print(f"{name:34s} skipped: {setting['skipped']}")
            else: print(f"{name:34s} goal {setting['goal_gib']:.0f} GiB: fits {setting['fits']}")
    print(f"results: {out}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=PARTS, required=True)
    parser.add_argument("--model", choices=tuple(MODELS), default=None,
                        help="forward: the model (default 1.3b); memory: only this one (default both)")
    parser.add_argument("--size", choices=tuple(SIZES), default="480p", help="forward: the clip (memory: 480p)")
    parser.add_argument("--cases", default="", help=f"forward: only these cases, comma-separated, of {list(BATCHES)}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="sdpa", help="attention backend of our processor (sdpa, cudnn, flash..)")
    parser.add_argument("--always-offload", action="store_true",
                        help="memory: measure the 1.3B group-offloaded even when it fits without")
    parser.add_argument("--device", default=None, help="default: cuda if available, cpu for --smoke")
    parser.add_argument("--out", default=None, help="the JSON file (default: bench/results/wan_<model>_<size>.json, "
                                                    "wan_memory_480p.json; a temporary folder with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="tiny config on the CPU: checks the script")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = pick_device(args.smoke, args.device)
    dtype = torch.float32 if args.smoke or device.type == "cpu" else torch.bfloat16
    if args.part == "forward": stem = f"wan_{args.model or '1.3b'}_{args.size}"
    else: stem = f"wan_memory_{args.model + '_' if args.model else ''}480p"
    out = output_path(args, stem)
    results = (part_forward if args.part == "forward" else part_memory)(args, device, dtype, out)
    print_summary(results, out)
    return results


if __name__ == "__main__":
    main()
