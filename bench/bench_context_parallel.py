"""CogVideoX-5B's forwards with their video tokens split over N GPUs (`dynvfx.parallel.context_parallel`) against one.

Every process builds the same random bf16 model at CogVideoX-5B's shapes (49 frames of 720x480: 17,550 video tokens
+ 226 text tokens, 48 heads of 64; seed 0, checked equal over the processes) on its GPU (cuda:LOCAL_RANK) and the
same seeded inputs (drawn on the CPU), then times three forwards, the device synchronized, the median of --repeats
after a warm-up:

  batch_1_t999   batch 1 at t=999: an inversion step (extension inactive)
  batch_2_t999   batch 2 at t=999: a step outside the anchor window (conditional, unconditional)
  batch_3_t800   batch 3 at t=800: an anchored DynVFX step (anchors drawn from an object on ~20% of the frame)

With one process (WORLD_SIZE 1, or no torchrun) the forwards run through `anchor_extended_attention`: the baseline.
With N > 1 processes they run through `context_parallel` (every process takes part; process 0 records). Each case
records the median seconds (and process 0's and the slowest process's times of every repeat), every process's peak
GPU memory and, with --reference, the largest difference of the output from the saved one-process output over the
output's scale (bf16 on GPUs: expect ~1e-2; float32 on the CPU: 0 or ~1e-7). --compile compiles each transformer block
(`block.compile(dynamic=False)`) after the eager cases and times them again (the first calls, compiling, apart).
The JSON is written by process 0 after every case.

On a machine with two H200 (from the repository root):

  python -m bench.bench_context_parallel --save-outputs /tmp/cp_1gpu.pt                      # one GPU: the baseline
  torchrun --nproc-per-node 2 -m bench.bench_context_parallel --reference /tmp/cp_1gpu.pt    # two GPUs (NCCL)
  python -m bench.bench_context_parallel --report bench/results/context_parallel_1gpu.json \\
      bench/results/context_parallel_2gpu.json                                                # speed-up, efficiency

  (add --compile to both runs for compiled blocks; --backend cudnn for another attention backend)

Checks of the script on the CPU (tiny model, float32, gloo; results in a temporary folder):

  python -m bench.bench_context_parallel --smoke --save-outputs /tmp/cp1.pt
  OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 -m bench.bench_context_parallel --smoke --reference /tmp/cp1.pt
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from bench.common import (RESULTS_DIR, PeakMemory, Stopwatch, build_pipeline, clip_size, device_name,
                          moving_object, write_json)
from dynvfx.anchor_attention import AnchorController, anchor_extended_attention
from dynvfx.backbone import configure_pipeline
from dynvfx.config import ModelSettings
from dynvfx.parallel import context_parallel, join_process_group, torchrun_env

CASES = {"batch_1_t999": (1, 999), "batch_2_t999": (2, 999), "batch_3_t800": (3, 800)}  # name: (batch, timestep)
OBJECT_SHARE = 0.2  # the anchored object's share of a frame


# -- processes -------------------------------------------------------------------------------------------------------

def start_processes(smoke: bool) -> tuple[int, int, torch.device]:
    "This process's rank, the number of processes and its device; joins the process group when there are several."
    env = torchrun_env()
    cuda = not smoke
    if cuda and not torch.cuda.is_available(): raise SystemExit("no GPU here: run with --smoke to check the script")
    device = torch.device(f"cuda:{env.local_rank}") if cuda else torch.device("cpu")
    if env.world_size > 1: join_process_group(device)  # alone, local rank 0's GPU is the current one already
    return env.rank, env.world_size, device


def barrier(world: int) -> None:
    "Wait for every process (nothing to wait for alone)."
    if world > 1: dist.barrier()


def gather(value: Any, world: int) -> list:
    "`value` of every process, in rank order (every process gets the list)."
    if world == 1: return [value]
    values = [None] * world
    dist.all_gather_object(values, value)
    return values


@torch.no_grad()
def weights_checksum(transformer: torch.nn.Module) -> float:
    "A number that differs when two processes' transformers differ."
    return float(sum(p.float().sum() for p in list(transformer.parameters())[::7]))


# -- model and inputs ------------------------------------------------------------------------------------------------

def build_model(smoke: bool, device: torch.device, dtype: torch.dtype) -> tuple:
    "The backbone (random weights, seed 0) without its text encoder, and the seconds it took to build."
    with Stopwatch(device) as build:
        backbone = configure_pipeline(build_pipeline(smoke, device, dtype),
                                      ModelSettings(device=str(device), dtype="float32" if smoke else "bfloat16"))
    backbone.pipe.text_encoder = backbone.text_encoder = None  # random embeddings instead: its memory back
    if device.type == "cuda": torch.cuda.empty_cache()
    return backbone, build.seconds


def make_inputs(backbone, grid, device: torch.device, dtype: torch.dtype) -> tuple:
    "Seeded latents (3, F_lat, C, h, w) and text embeddings (3, text, dim), drawn on the CPU: the same everywhere."
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(3, *grid.latent_shape, generator=generator)
    embeds = torch.randn(3, grid.text_length, backbone.config.text_embed_dim, generator=generator)
    return latents.to(device, dtype), embeds.to(device, dtype), backbone.rotary_embedding(grid)


def forward(backbone, controller: AnchorController, inputs: tuple, batch: int, timestep: int) -> Callable:
    "One forward of the case: the same anchors every call (the controller reset first), the output (float32)."
    latents, embeds, rotary = inputs

    def run() -> torch.Tensor:
        controller.reset()
        controller.begin_step(timestep)
        return backbone.predict(latents[:batch], timestep, embeds[:batch], rotary)
    return run


# -- measuring -------------------------------------------------------------------------------------------------------

def timed(run: Callable, device: torch.device, world: int) -> tuple[float, torch.Tensor]:
    "Seconds of one call of `run`, every process starting together and the device synchronized; and its output."
    barrier(world)
    with Stopwatch(device) as watch: out = run()
    return watch.seconds, out


def difference(out: torch.Tensor, reference: dict | None, key: str) -> dict | None:
    "The largest and mean absolute difference from the reference's output of `key`, also over its scale."
    if reference is None: return None
    saved = reference["outputs"]  # a compiled output against the compiled one saved, else the eager one
    expected = saved.get(key, saved.get("eager/" + key.split("/", 1)[1]))
    if expected is None: return dict(error=f"the reference has no output {key!r}")
    if expected.shape != out.shape: return dict(error=f"shapes differ: {tuple(out.shape)} vs {tuple(expected.shape)}")
    gap, scale = (out.cpu().float() - expected.float()).abs(), expected.float().abs()
    return dict(max_abs=gap.max().item(), mean_abs=gap.mean().item(), output_max_abs=scale.max().item(),
                max_over_scale=gap.max().item() / scale.max().item(),
                mean_over_scale=gap.mean().item() / scale.mean().item())


def measure_case(run: Callable, args: argparse.Namespace, device: torch.device, world: int, warmup: int,
                 first_call: bool = False) -> tuple[dict, torch.Tensor]:
    "Warm-up calls (the first one timed apart with `first_call`), then the repeats: the record and the first output."
    record: dict[str, Any] = {}
    with PeakMemory(device) as memory:
        seconds, out = timed(run, device, world)
        if first_call: record["first_call_s"] = seconds
        for _ in range(warmup - 1): timed(run, device, world)
        times = [timed(run, device, world)[0] for _ in range(args.repeats)]
    every = gather(times, world)
    slowest = [max(column) for column in zip(*every)]
    added = None if memory.added_bytes is None else memory.added_bytes / 2**30
    record.update(median_s=statistics.median(times), times_s=times, slowest_process_times_s=slowest,
                  median_slowest_process_s=statistics.median(slowest), peak_gib=gather(memory.gib, world),
                  peak_added_gib=gather(added, world))
    return record, out.detach().cpu()


# -- results ---------------------------------------------------------------------------------------------------------

def result_path(args: argparse.Namespace, world: int) -> Path:
    "--out, or the default: bench/results/context_parallel_<N>gpu.json (a temporary folder with --smoke)."
    if args.out: return args.out
    folder = Path(tempfile.mkdtemp(prefix="bench-cp-")) if args.smoke else RESULTS_DIR
    return folder / f"context_parallel_{world}gpu.json"


def load_reference(path: Path | None) -> dict | None:
    return None if path is None else torch.load(path, map_location="cpu", weights_only=False)


def summary_line(name: str, record: dict) -> str:
    "One case's record as a line of text."
    peak = ", ".join("-" if gib is None else f"{gib:.1f}" for gib in record["peak_gib"])
    gap = record.get("difference")
    gap = "" if gap is None else (f"  diff/scale max {gap['max_over_scale']:.2e} mean {gap['mean_over_scale']:.2e}"
                                  if "error" not in gap else f"  diff: {gap['error']}")
    first = f"  first call {record['first_call_s']:.2f} s" if "first_call_s" in record else ""
    return f"{name:22s} {record['median_s']:.4f} s (slowest process {record['median_slowest_process_s']:.4f} s)" \
           f"  peak GiB per process [{peak}]{first}{gap}"


def run_cases(label: str, cases: dict, args: argparse.Namespace, device: torch.device, rank: int, world: int,
              results: dict, outputs: dict, reference: dict | None, path: Path, first_call: bool) -> None:
    "Measure every case, recording it in `results[label]` and writing the JSON (process 0) after each."
    for name, run in cases.items():
        record, out = measure_case(run, args, device, world, 1 if first_call else args.warmup, first_call)
        key = f"{label}/{name}"
        if rank == 0:
            outputs[key] = out
            record["difference"] = difference(out, reference, key)
            results.setdefault(label, {})[name] = record
            write_json(path, results, 2)
            print(summary_line(key, record), flush=True)


def compile_blocks(transformer: torch.nn.Module) -> None:
    "Compile each transformer block (fixed shapes), forgetting graphs compiled before in this process."
    torch._dynamo.reset()
    for block in transformer.transformer_blocks: block.compile(dynamic=False)


def installed(backbone, controller: AnchorController, world: int) -> AbstractContextManager:
    "The processors of this run: the tokens split over the processes, or the one-process anchor processors."
    if world > 1: return context_parallel(backbone.transformer, controller, "all")
    return anchor_extended_attention(backbone.transformer, controller, "all")


def bench(args: argparse.Namespace) -> dict:
    "The measurements of this process (process 0 records, writes and returns them)."
    rank, world, device = start_processes(args.smoke)
    dtype = torch.float32 if args.smoke else torch.bfloat16
    if args.smoke: torch.set_num_threads(1)
    backbone, build_s = build_model(args.smoke, device, dtype)
    heads = backbone.config.num_attention_heads
    if heads % world: raise SystemExit(f"{heads} attention heads do not divide among {world} processes")
    checksum = weights_checksum(backbone.transformer)
    checksums = gather(checksum, world)
    if len(set(checksums)) > 1: raise SystemExit(f"the processes built different weights: {checksums}")
    grid = backbone.token_grid(*clip_size(args.smoke))
    inputs = make_inputs(backbone, grid, device, dtype)
    controller = AnchorController(object_tokens=moving_object(grid, OBJECT_SHARE).to(device), seed=0,
                                  attention_backend=args.backend)
    path, reference = (result_path(args, world), load_reference(args.reference)) if rank == 0 else (None, None)
    if reference is not None and reference["meta"].get("weights_checksum") != checksum:
        print(f"warning: the reference's weights differ ({reference['meta'].get('weights_checksum')} vs {checksum})")
    video = grid.grid_frames * grid.grid_height * grid.grid_width
    results: dict[str, Any] = dict(
        world_size=world, mode="context_parallel" if world > 1 else "one process", device=device_name(device),
        torch=torch.__version__, dtype=str(dtype), backend=args.backend, smoke=args.smoke, compile=args.compile,
        warmup=args.warmup, repeats=args.repeats, video_tokens=video, text_tokens=grid.text_length, heads=heads,
        anchor_object_share=OBJECT_SHARE, weights_checksum=checksum, build_s=build_s,
        reference=str(args.reference) if args.reference else None)
    outputs: dict[str, torch.Tensor] = {}
    cases = {name: forward(backbone, controller, inputs, batch, t) for name, (batch, t) in CASES.items()}
    with installed(backbone, controller, world):
        run_cases("eager", cases, args, device, rank, world, results, outputs, reference, path, False)
        results["video_tokens_per_process"] = getattr(backbone.transformer.transformer_blocks[0].attn1.processor,
                                                      "counts", None) or [video]  # as the last forward split them
        if args.compile:
            from torch._dynamo.utils import counters
            counters.clear()
            compile_blocks(backbone.transformer)
            run_cases("compiled", cases, args, device, rank, world, results, outputs, reference, path, True)
            if rank == 0:
                results["compiled_graphs"] = counters["stats"]["unique_graphs"]
                results["compiled_graph_breaks"] = sum(counters["graph_break"].values())
    if rank == 0:
        write_json(path, results, 2)
        if args.save_outputs:
            torch.save(dict(meta=dict(world_size=world, smoke=args.smoke, dtype=str(dtype), backend=args.backend,
                                      weights_checksum=checksum), outputs=outputs), args.save_outputs)
            print(f"outputs saved to {args.save_outputs}")
        print(f"results written to {path}")
    barrier(world)
    if world > 1: dist.destroy_process_group()
    return results


# -- the report ------------------------------------------------------------------------------------------------------

def report(first: Path, second: Path) -> str:
    "A table of two runs' per-case medians: the speed-up (t_A / t_B) and the efficiency (t_A N_A / (t_B N_B))."
    a, b = (json.loads(Path(p).read_text()) for p in (first, second))
    na, nb = a["world_size"], b["world_size"]
    lines = [f"A: {first} ({na} process(es), {a['device']}, {a['backend']}, {a['dtype']})",
             f"B: {second} ({nb} process(es), {b['device']}, {b['backend']}, {b['dtype']})",
             f"{'case':24s} {'A s':>9s} {'B s':>9s} {'speed-up':>9s} {'efficiency':>10s} {'A GiB':>7s} {'B GiB':>7s}"
             f" {'B diff/scale':>12s}"]
    for label in ("eager", "compiled"):
        for name in (a.get(label) or {}):
            if name not in (b.get(label) or {}): continue
            ra, rb = a[label][name], b[label][name]
            ta, tb = ra["median_s"], rb["median_s"]
            gib_a, gib_b = (max((g for g in r["peak_gib"] if g is not None), default=None) for r in (ra, rb))
            gib_a, gib_b = ("-" if gib is None else f"{gib:.1f}" for gib in (gib_a, gib_b))
            gap = (rb.get("difference") or {}).get("max_over_scale")
            gap = "-" if gap is None else f"{gap:.2e}"
            lines.append(f"{label + '/' + name:24s} {ta:9.4f} {tb:9.4f} {ta / tb:9.2f} {ta * na / (tb * nb):10.2f}"
                         f" {gib_a:>7s} {gib_b:>7s} {gap:>12s}")
            if "first_call_s" in ra and "first_call_s" in rb:
                lines.append(f"{'  first call':24s} {ra['first_call_s']:9.2f} {rb['first_call_s']:9.2f}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="sdpa", help="the controller's attention_backend")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before the repeats (at least 1)")
    parser.add_argument("--compile", action="store_true", help="then compile each block and time again")
    parser.add_argument("--out", type=Path, default=None,
                        help="the JSON (default bench/results/context_parallel_<N>gpu.json; a temporary folder with"
                             " --smoke)")
    parser.add_argument("--save-outputs", type=Path, default=None, help="save the outputs (.pt) for --reference")
    parser.add_argument("--reference", type=Path, default=None, help="outputs of a one-process run to compare with")
    parser.add_argument("--report", type=Path, nargs=2, default=None, metavar=("A.json", "B.json"),
                        help="print the table of two runs (A: one GPU, B: N GPUs) and stop")
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU (gloo), float32: checks it")
    args = parser.parse_args(argv)
    args.warmup = max(1, args.warmup)
    if args.smoke and args.backend != "sdpa":
        parser.error("--smoke runs on the CPU: --backend sdpa only")
    return args


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.report:
        print(report(*args.report))
        return None
    started = time.perf_counter()
    results = bench(args)
    if int(os.environ.get("RANK", 0)) == 0: print(f"{time.perf_counter() - started:.1f} s in all")
    return results


if __name__ == "__main__":
    main()
