"""Issue 20 on one GPU: attention kernels, compiled blocks, float8 linear layers, SAM 3's cost, at CogVideoX-5B scale.

Random bf16 weights at CogVideoX-5B's shapes (49 frames of 720x480: 17,550 video tokens + 226 text tokens, 48 heads
of 64), built in this process (bench/common.py). Every ratio compares two numbers measured in the same process.

Parts:
  --part kernels   attention alone at the model's shapes, for each backend of `model.attention_backend` that runs
                   here ("cudnn", "flash", "flash_4", "efficient"): the median time of batch 1 and 2 (each query sees
                   its own 17,776 keys) and of the anchored call (one query row over 17,776 + 3,206 keys), TFLOP/s,
                   and its error against float32 attention on 1,024 queries; then the model's forwards through our
                   processors (batch 1 and 2 outside the anchor window, batch 3 inside it, fresh anchors each call)
                   eager and with compiled blocks, for the fastest exact backend and cudnn: times, graphs compiled
                   after the first calls and after timing (equal: nothing recompiled)
  --part fp8       the same forwards with the blocks' linear layers in float8 (model.quantization: fp8),
                   the compile time, and a short edit (inversion on a 25-step grid, one pass of 22 steps from t=879,
                   7 with anchors, a fixed new-object mask) run three ways with the same seed: bf16 eager, bf16
                   compiled, fp8 compiled; the relative difference of each one's sampled latents (the pass's x0 before
                   masking) and of its final latents inside the new object's mask, from bf16 eager
  --part sam3_profile  one SAM 3 segmentation (full size, random weights, threshold 0: 4 objects tracked) under
                   torch.profiler: the operators that take its time

  --part price     no GPU: the default edit and the presets priced from the JSON of the parts above (H200, this
                   repository's bench/results), against the reference's step pattern priced from the same numbers

  python -m bench.bench_fast --part kernels --smoke     # tiny, on the CPU (checks the script, measures nothing)
"""
from __future__ import annotations

import argparse
import math
from contextlib import nullcontext
from pathlib import Path

import torch

from bench.common import (COGVIDEOX_5B, SMOKE, PeakMemory, Stopwatch, build_pipeline, device_name, json_text,
                          moving_object, time_cases, write_json)
from dynvfx.anchor_attention import AnchorController, anchor_extended_attention, attention_function
from dynvfx.backbone import configure_pipeline
from dynvfx.core import DynVFXError

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("kernels", "fp8", "sam3_profile", "price")
RESULTS = ROOT / "bench" / "results"
TASK_REFERENCE_STEP_S = 3.56  # the authors' whole step on one H100, as the task statement measured it
BACKENDS = ("cudnn", "flash", "flash_4", "efficient")
ANCHOR_TOKENS = 3206  # anchor tokens a layer keeps on average in bench_anchor_attention's scene (18.3% of the video)


# -- attention alone --------------------------------------------------------------------------------------------------

def attention_shapes(smoke: bool) -> tuple[int, int, int]:
    "Tokens (text + video), heads and head size of one forward."
    config = SMOKE if smoke else COGVIDEOX_5B
    video = 13 * 30 * 45 if not smoke else 3 * 4 * 6
    return config["max_text_seq_length"] + video, config["num_attention_heads"], config["attention_head_dim"]


def reference_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    "Attention (B, S, H, D) in float32 on the device, one head at a time: the yardstick of the kernels' error."
    query, key, value = (t.float() for t in (query, key, value))
    out = torch.empty_like(query)
    for head in range(query.shape[2]):
        scores = torch.einsum("bqd,bkd->bqk", query[:, :, head], key[:, :, head]) / math.sqrt(query.shape[-1])
        out[:, :, head] = torch.einsum("bqk,bkd->bqd", scores.softmax(-1), value[:, :, head])
    return out


def kernel_timings(args, device: torch.device, dtype: torch.dtype) -> dict:
    "Each backend's time and error on the model's attention calls."
    tokens, heads, head_dim = attention_shapes(args.smoke)
    anchors = ANCHOR_TOKENS if not args.smoke else 7
    generator = torch.Generator(device).manual_seed(0)
    qkv = torch.randn(3, 2, tokens + anchors, heads, head_dim, generator=generator, device=device).to(dtype)
    query, key, value = qkv[0, :, :tokens], qkv[1, :, :tokens], qkv[2, :, :tokens]
    long_key, long_value = qkv[1, :1], qkv[2, :1]  # one branch over its tokens and the anchors
    rows = min(1024, tokens)
    expected = reference_attention(query[:1, :rows], long_key, long_value)
    results = {}
    for backend in BACKENDS:
        try: attend = attention_function(backend)
        except DynVFXError as error: results[backend] = dict(runs=False, why=str(error)); continue
        try: got = attend(query[:1, :rows], long_key, long_value).float()
        except RuntimeError as error: results[backend] = dict(runs=False, why=str(error).splitlines()[0]); continue
        cases = {"batch_1": (nullcontext, lambda attend=attend: attend(query[:1], key[:1], value[:1])),
                 "batch_2": (nullcontext, lambda attend=attend: attend(query, key, value)),
                 "anchored_1": (nullcontext, lambda attend=attend: attend(query[:1], long_key, long_value))}
        timed = time_cases(cases, warmup=2, repeats=args.repeats, device=device)
        flops = {"batch_1": 4 * heads * tokens * tokens * head_dim, "batch_2": 8 * heads * tokens * tokens * head_dim,
                 "anchored_1": 4 * heads * tokens * (tokens + anchors) * head_dim}
        results[backend] = dict(
            runs=True, median_s={k: v["median_s"] for k, v in timed.items()},
            tflops={k: flops[k] / timed[k]["median_s"] / 1e12 for k in cases},
            max_abs_error=(got - expected).abs().max().item(),
            relative_error=((got - expected).norm() / expected.norm()).item())
    return dict(tokens=tokens, heads=heads, head_dim=head_dim, anchor_tokens=anchors, dtype=str(dtype),
                backends=results)


# -- the model's forwards ---------------------------------------------------------------------------------------------

def forward_cases(backbone, controller: AnchorController, grid, device: torch.device, dtype: torch.dtype) -> dict:
    "The three forwards of an edit as timing cases: batch 1 and 2 outside the anchor window, batch 3 inside it."
    generator = torch.Generator(device).manual_seed(1)
    latents = torch.randn(3, *grid.latent_shape, generator=generator, device=device).to(dtype)
    embeds = backbone.encode_prompt(["a dog jumps over a box", "", "a box slides across a wall"])
    rotary = backbone.rotary_embedding(grid)

    def step(batch: int, timestep: int):
        def run():
            controller.begin_step(timestep)
            return backbone.predict(latents[:batch], timestep, embeds[:batch], rotary)
        return run
    return {"batch_1": (nullcontext, step(1, 19)), "batch_2": (nullcontext, step(2, 19)),
            "anchored_3": (nullcontext, step(3, 899))}


def compiled_forwards(backbone, cases: dict, device: torch.device, repeats: int) -> dict:
    "Compile the blocks, then: each case's first call (compiling), its timing, the graphs before and after timing."
    from torch._dynamo.utils import counters
    torch._dynamo.reset()  # graphs of an earlier model in this process would count against the recompile limit
    counters.clear()
    for block in backbone.transformer.transformer_blocks: block.compile(dynamic=False)
    first = {}
    for name, (_, run) in cases.items():
        with Stopwatch(device) as timer: run()
        first[name] = timer.seconds
    graphs_after_first = counters["stats"]["unique_graphs"]
    timed = time_cases(cases, warmup=1, repeats=repeats, device=device)
    return dict(median_s={k: v["median_s"] for k, v in timed.items()}, first_call_s=first,
                graphs_after_first_calls=graphs_after_first, graphs_after_timing=counters["stats"]["unique_graphs"],
                graph_breaks=sum(counters["graph_break"].values()))  # equal graph counts: nothing recompiled


def model_forwards(args, device: torch.device, dtype: torch.dtype, backend: str, quantization: str = "none",
                   compile: bool = True) -> dict:
    "Eager and (with `compile`) compiled forwards of a fresh model with `backend` attention and `quantization`."
    from bench.bench_edit import edit_config, edit_inputs
    config = edit_config(args.smoke, args.workdir, str(device), backend, False)
    model = config.model.model_copy(update=dict(quantization=quantization))
    clip, _, _ = edit_inputs(args.smoke)
    with Stopwatch(device) as build:
        backbone = configure_pipeline(build_pipeline(args.smoke, device, dtype), model)
    grid = backbone.token_grid(clip.num_frames, *clip.size)
    controller = AnchorController.from_settings(config.anchors, moving_object(grid, 0.2).to(device), seed=0,
                                                attention_backend=backend)
    result = dict(backend=backend, quantization=quantization, build_s=build.seconds)
    with anchor_extended_attention(backbone.transformer, controller, "all"):
        cases = forward_cases(backbone, controller, grid, device, dtype)
        eager = time_cases(cases, warmup=1, repeats=args.repeats, device=device)
        result["eager_median_s"] = {k: v["median_s"] for k, v in eager.items()}
        result["eager_peak_gib"] = {k: v["peak_gib"] for k, v in eager.items()}
        if compile:
            with PeakMemory(device) as memory:
                result["compiled"] = compiled_forwards(backbone, cases, device, args.repeats)
            result["compiled_peak_gib"] = memory.gib
    del backbone
    if device.type == "cuda": torch.cuda.empty_cache()
    return result


def part_kernels(args, device: torch.device, dtype: torch.dtype) -> dict:
    "Attention alone for every backend, then the model's forwards with the fastest exact one and with cudnn."
    kernels = kernel_timings(args, device, dtype)
    exact = {name: record for name, record in kernels["backends"].items()
             if record["runs"] and record["relative_error"] < 1e-2}
    fastest = min(exact, key=lambda name: exact[name]["median_s"]["batch_2"]) if exact else "sdpa"
    backends = ["sdpa"] if args.smoke else [b for b in dict.fromkeys([fastest, "cudnn"]) if b in exact]
    models = {backend: model_forwards(args, device, dtype, backend) for backend in backends}
    return dict(kernels=kernels, fastest_exact_backend=fastest, models=models)


# -- float8 -----------------------------------------------------------------------------------------------------------

class FixedMaskSegmenter:
    """A segmenter that finds the new object where a fixed mask says (the short edits' masks then agree exactly); it
    keeps the clips it was handed (each pass's regenerated clip)."""
    def __init__(self, mask: torch.Tensor): self.mask, self.seen = mask, []

    def segment(self, pixels: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        self.seen.append(pixels.float().cpu())
        return {prompt: self.mask[:pixels.shape[0]].clone() for prompt in prompts}


def short_edit(args, device: torch.device, dtype: torch.dtype, compile: bool, quantization: str, backend: str,
               workdir: Path) -> dict:
    "The short edit with one setting changed: its sampled latents, final latents and times."
    from bench.bench_edit import edit_config, edit_inputs, invert_and_edit
    from dynvfx.pipeline import DynVFXPipeline
    torch._dynamo.reset()  # each run compiles afresh
    config = edit_config(args.smoke, workdir, str(device), backend, compile)
    steps, start = (10, 899) if args.smoke else (25, 879)
    schedule = dict(inversion=dict(steps=steps), sampling=dict(steps=steps),
                    refinement=dict(pass_timesteps=[start], save_intermediates=False))
    config = config.model_copy(update={name: getattr(config, name).model_copy(update=value)
                                       for name, value in schedule.items()})
    config = config.model_copy(update=dict(model=config.model.model_copy(update=dict(quantization=quantization))))
    clip, masks, protocol = edit_inputs(args.smoke)
    new_object = masks["box"].roll(clip.size[1] // 4, dims=2)  # beside the anchor, moving with it
    backbone = configure_pipeline(build_pipeline(args.smoke, device, dtype), config.model)
    segmenter = FixedMaskSegmenter(new_object)
    pipeline = DynVFXPipeline(backbone, segmenter, config)
    with Stopwatch(device) as timer:
        inversion_s, result = invert_and_edit(pipeline, clip, masks, protocol, device, args.quiet)
    record = dict(latents=result.latents.float().cpu(), mask=result.latent_target_mask.cpu(),
                  regenerated=segmenter.seen[0], seconds=timer.seconds, inversion_s=inversion_s, times=result.times)
    del backbone, pipeline
    if device.type == "cuda": torch.cuda.empty_cache()
    return record


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def part_fp8(args, device: torch.device, dtype: torch.dtype) -> dict:
    """The short edit run with the same seed as bf16 eager, bf16 compiled and fp8 (eager unless --fp8-compile),
    compared with bf16 eager; then fp8's forwards. Results are written after every run (a call may end early)."""
    results, runs = {}, {}
    fp8 = ("fp8_compiled", True, "fp8") if args.fp8_compile else ("fp8_eager", False, "fp8")
    plan = [("bf16_eager", False, "none"), fp8, ("bf16_compiled", True, "none")]
    for name, compile, quantization in plan:
        if (args.smoke and quantization == "fp8") or (args.runs and name not in args.runs.split(",")): continue
        runs[name] = short_edit(args, device, dtype, compile, quantization, args.backend, args.workdir / name)
        base = runs["bf16_eager"]
        inside = base["mask"].bool()
        results["mask_share"] = inside.float().mean().item()
        results["short_edit"] = {name: dict(
            seconds=run["seconds"], inversion_s=run["inversion_s"], times=run["times"],
            regenerated_pixels_relative_difference=relative(run["regenerated"], base["regenerated"]),
            final_latents_relative_difference=relative(run["latents"], base["latents"]),
            final_latents_relative_difference_inside_mask=relative(
                run["latents"][0].permute(1, 0, 2, 3)[:, inside], base["latents"][0].permute(1, 0, 2, 3)[:, inside]),
            ) for name, run in runs.items()}
        save_results(args, results)
    if not args.smoke and not args.runs:
        results["forwards"] = model_forwards(args, device, dtype, args.backend, "fp8", compile=args.fp8_compile)
    return results


# -- SAM 3 ------------------------------------------------------------------------------------------------------------

def part_sam3_profile(args, device: torch.device, dtype: torch.dtype) -> dict:
    "One full-size SAM 3 segmentation at threshold 0 under torch.profiler: the top operators by device time."
    from torch.profiler import ProfilerActivity, profile
    from bench.bench_edit import build_sam3, edit_inputs
    clip, _, protocol = edit_inputs(args.smoke)
    segmenter = build_sam3(args.smoke, args.workdir / "sam3", device, dtype, 1, score_threshold=0.0)
    segmenter.segment(clip.pixels[:3], [protocol.new_object])  # warm-up
    with Stopwatch(device) as plain: segmenter.segment(clip.pixels, [protocol.new_object])
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=False) as profiler, Stopwatch(device) as profiled:
        segmenter.segment(clip.pixels, [protocol.new_object])
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(profiler.key_averages(), key=lambda e: getattr(e, key), reverse=True)[:25]
    top = [dict(name=e.key, calls=e.count, self_device_s=getattr(e, key) / 1e6, cpu_total_s=e.cpu_time_total / 1e6)
           for e in events]
    by_cpu = sorted(profiler.key_averages(), key=lambda e: e.cpu_time_total, reverse=True)[:25]
    return dict(segment_s=plain.seconds, profiled_s=profiled.seconds, top_by_device_time=top,
                top_by_cpu_total=[dict(name=e.key, calls=e.count, cpu_total_s=e.cpu_time_total / 1e6) for e in by_cpu])


# -- the edit, priced -------------------------------------------------------------------------------------------------

EDIT = dict(steps_two=162, steps_three=28, passes=6)  # the default schedule's steps outside and inside the window
ONE_PASS = dict(steps_two=30, steps_three=15, passes=1)  # a pass from t = 899 on the 50-step schedule
FAST_PASSES = dict(steps_two=42, steps_three=9, passes=3)  # --preset fast: 879, 679, 479 on the 25-step schedule


def inversion_forwards(steps: int) -> int:
    "Forwards of an inversion up to t = 899 on the trailing grid of `steps` steps (1000/steps - 1, ..., 899)."
    return round(0.9 * steps)


def priced_edit(forward: dict, first_calls_s: float, decode_s: float, segment_s: float, inversion_steps: int,
                steps_two: int, steps_three: int, passes: int) -> dict:
    "An edit's seconds by stage from per-forward times: inversion, sampling, compiling, VAE decodes, segmentation."
    stages = {"inversion": inversion_forwards(inversion_steps) * forward["batch_1"],
              "sampling": steps_two * forward["batch_2"] + steps_three * forward["anchored_3"],
              "compiling (first calls)": first_calls_s, "VAE decodes": (passes + 1) * decode_s,
              "segmentation": passes * segment_s}
    return dict(stages_s=stages, total_s=sum(stages.values()))


def part_price(args, device: torch.device, dtype: torch.dtype) -> dict:
    "The default edit and the presets priced from the measured parts (kernels, short edits, SAM 3)."
    import json
    from dynvfx.config import PRESETS
    near_steps, fast_steps = PRESETS["near_exact"]["inversion.steps"], PRESETS["fast"]["inversion.steps"]
    draft_steps = PRESETS["draft"]["inversion.steps"]
    kernels = json.loads((RESULTS / "h200_kernels.json").read_text())
    short = json.loads((RESULTS / "h200_fp8_short_edit_1.json").read_text())["short_edit"]["bf16_eager"]
    segment_s = json.loads((RESULTS / "h200_sam3_one_session.json").read_text())["segment_s"]
    decode_s = short["times"]["vae decode"] / 2  # the pass's decode and the final one
    fast = kernels["models"]["flash_4"]
    forward, first_calls = fast["compiled"]["median_s"], sum(fast["compiled"]["first_call_s"].values())
    eager = kernels["models"]["cudnn"]["eager_median_s"]
    ours = {"exact (flash_4, compiled)": priced_edit(forward, first_calls, decode_s, segment_s, 250,
                                                     EDIT["steps_two"], EDIT["steps_three"], EDIT["passes"]),
            "near_exact (flash_4)": priced_edit(forward, first_calls, decode_s, segment_s, near_steps,
                                                EDIT["steps_two"], EDIT["steps_three"], EDIT["passes"]),
            "fast (flash_4)": priced_edit(forward, first_calls, decode_s, segment_s, fast_steps, **FAST_PASSES),
            "draft (flash_4)": priced_edit(forward, first_calls, decode_s, segment_s, draft_steps, **ONE_PASS),
            "exact, eager cuDNN": priced_edit(eager, 0.0, decode_s, segment_s, 250, EDIT["steps_two"],
                                              EDIT["steps_three"], EDIT["passes"])}
    steps = EDIT["steps_two"] + EDIT["steps_three"]
    references = {}
    for name, step in {"plain batch-2 + batch-1, eager cuDNN (lower bound)": eager["batch_2"] + eager["batch_1"],
                       "task statement's step (3.56 s, H100)": TASK_REFERENCE_STEP_S}.items():
        stages = {"inversion (250 batch-1 forwards)": 250 * eager["batch_1"], "sampling (190 steps)": steps * step,
                  "VAE decodes (6)": EDIT["passes"] * decode_s, "segmentation (6)": EDIT["passes"] * segment_s}
        references[name] = dict(step_s=step, stages_s=stages, total_s=sum(stages.values()))
    ratios = {ours_name: {ref_name: edit["total_s"] / reference["total_s"] for ref_name, reference in
                          references.items()} for ours_name, edit in ours.items()}
    forwards_alone = (inversion_forwards(250) * forward["batch_1"] + EDIT["steps_two"] * forward["batch_2"]
                      + EDIT["steps_three"] * forward["anchored_3"])
    return dict(device=kernels["device"], torch=kernels["torch"], ours=ours, references=references, ratios=ratios,
                exact_forwards_alone_s=forwards_alone,
                sources=["h200_kernels.json", "h200_fp8_short_edit_1.json", "h200_sam3_one_session.json"],
                note="priced, not run end to end: VAE encodes of the reference are left out (about 1 s each)")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=PARTS, required=True)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".devrun" / "bench-fast")
    parser.add_argument("--out", type=Path, default=None, help="folder for a copy of the results")
    parser.add_argument("--backend", default="cudnn", help="--part fp8: the attention backend")
    parser.add_argument("--fp8-compile", action="store_true", help="--part fp8: compile the fp8 model too")
    parser.add_argument("--runs", default="", help="--part fp8: only these runs (comma-separated; bf16_eager first)")
    parser.add_argument("--repeats", type=int, default=3); parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.smoke: args.backend = "sdpa"  # the CPU has no cuDNN attention
    args.workdir.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    dtype = torch.float32 if args.smoke else torch.bfloat16
    part = dict(kernels=part_kernels, fp8=part_fp8, sam3_profile=part_sam3_profile, price=part_price)[args.part]
    results = part(args, device, dtype)
    save_results(args, results)
    print(json_text(results, 2))
    return results


def save_results(args, results: dict) -> None:
    "Write what is measured so far to --workdir (and --out), with the machine's name."
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    results.setdefault("device", device_name(device))  # --part price: the machine its measurements came from
    results.setdefault("torch", torch.__version__)
    for folder in [args.workdir] + ([args.out] if args.out else []):
        write_json(folder / f"{args.part}.json", results, 2)


if __name__ == "__main__":
    main()
