"""Benchmark the attention recorder on one layer at CogVideoX-5B scale (48 heads of 64, 49 frames at 720x480).

One layer call as the anchor processor's observer sees it: queries, keys, values (3, 226 + 17550, 48, 64) in bf16
for the batch [conditional, unconditional, source], anchors drawn by an `AnchorController` (reference keep rates,
an object on ~20% of every frame). For each setting (heads "mean" or "all", chunk bound `max_elements`) it reports
the time of one recorder call (CUDA events, warm-up, median of `--repeats`), the peak memory it adds, and the size of
the attention matrix it never builds; then it checks sampled queries against a direct float64 computation.

With `--model`, it also builds a CogVideoX-5B-sized transformer (random bf16 weights; needs diffusers) and runs one
DynVFX step (batch of three, anchors on every block) with and without capturing three layers, and checks that the
capture leaves the output unchanged (bit for bit).

  python -m bench.bench_attention_viz           # GPU, full scale
  python -m bench.bench_attention_viz --model   # and a whole step of the model with capture
  python -m bench.bench_attention_viz --smoke   # tiny sizes on the CPU (checks the script)
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable

import torch

from bench.common import (COGVIDEOX_5B, SMOKE, PeakMemory, build_transformer, centred_object, device_name,
                          pick_device, step_inputs, time_once, token_grid)
from dynvfx.anchor_attention import AnchorController, anchor_extended_attention, extended_attention
from dynvfx.attention_viz import AttentionRecorder, capture
from dynvfx.backbone import TokenGrid

SMOKE_MODEL = dict(SMOKE, num_layers=3)  # three blocks: the first, the middle and the last are captured
RECORDER_SETTINGS = (("mean", 2**27), ("all", 2**27), ("mean", 2**25), ("mean", 2**29))  # heads, max_elements


def timed(fn: Callable, device: torch.device, repeats: int) -> tuple[float, int]:
    "Median seconds of `fn()` after a warm-up call, and the peak memory it adds (bytes; 0 on a CPU)."
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        with PeakMemory(device) as memory: times.append(time_once(fn, device))
    return statistics.median(times), memory.added_bytes or 0


def direct_check(recorder: AttentionRecorder, query, key, anchors, samples: int, generator) -> dict[str, float]:
    "Max |recorded - direct float64| over sampled video queries of the conditional branch, per quantity."
    grid, text = recorder.grid, recorder.grid.text_length
    record = recorder.records[recorder.call, 0]
    picked = torch.randperm(grid.video_tokens, generator=generator)[:samples].to(query.device)
    keys = torch.cat([key[0], key[2, text:].index_select(0, anchors)]).double()
    logits = torch.einsum("qhd,khd->hqk", query[0, text + picked].double(), keys) / math.sqrt(query.shape[-1])
    weights = torch.softmax(logits, -1)
    own = key.shape[1]
    direct = dict(text=weights[..., :text].sum(-1), video=weights[..., text:own].sum(-1),
                  anchor=weights[..., own:].sum(-1), word=weights[..., recorder.words["word"]].sum(-1))
    errors = {}
    for name, values in direct.items():
        recorded = (record.word["word"] if name == "word" else getattr(record, name)).flatten(1)[:, picked.cpu()]
        expected = values.mean(0, keepdim=True) if recorded.shape[0] == 1 else values
        errors[name] = (recorded.double() - expected.cpu()).abs().max().item()
    return errors


def query_points(grid: TokenGrid) -> list[tuple[int, int, int]]:
    "The recorded query points: the centre, a corner, the last frame and one more."
    return [(grid.grid_frames // 2, grid.grid_height // 2, grid.grid_width // 2), (0, 0, 0),
            (grid.grid_frames - 1, 1, 2), (3 % grid.grid_frames, 4 % grid.grid_height, 5)]


def model_step(config: dict, grid: TokenGrid, device: torch.device, dtype: torch.dtype, points, repeats: int) -> dict:
    "One DynVFX step of a random CogVideoX transformer, without and with capture of three layers: times, equality."
    model = build_transformer(config, device, dtype)
    latents, embeds, timestep, rotary = step_inputs(model, grid, device, dtype)
    layers = sorted({0, config["num_layers"] // 2, config["num_layers"] - 1})
    controller = AnchorController(object_tokens=centred_object(grid).to(device), seed=0)

    def forward():
        controller.reset(); controller.begin_step(800)
        with torch.no_grad():
            return model(hidden_states=latents, encoder_hidden_states=embeds, timestep=timestep,
                         image_rotary_emb=rotary, return_dict=False)[0]
    result = {}
    with anchor_extended_attention(model, controller):
        plain, plain_again = forward(), forward()
        result["plain_step"] = dict(zip(("seconds", "peak_gb"), timed(forward, device, repeats)))
        recorder = AttentionRecorder(grid, words={"word": [3, 4]}, points=points, layers=layers)
        with capture(controller, recorder):
            captured = forward()
            result["captured_step"] = dict(zip(("seconds", "peak_gb"), timed(forward, device, repeats)))
    result.update(layers=layers, repeatable=torch.equal(plain, plain_again),
                  unchanged_by_capture=torch.equal(plain, captured),
                  max_difference=(plain.float() - captured.float()).abs().max().item(), records=len(recorder.records),
                  records_mb=round(recorder.nbytes / 1e6, 2))
    for step in ("plain_step", "captured_step"):
        result[step] = dict(seconds=round(result[step]["seconds"], 4), peak_gb=round(result[step]["peak_gb"] / 1e9, 2))
    assert result["unchanged_by_capture"] or not result["repeatable"], result
    return result


def recorder_runs(grid: TokenGrid, controller: AnchorController, query, key, value, anchors, points, args,
                  device: torch.device, generator) -> list[dict]:
    "Time and check the recorder on one layer call in every setting of RECORDER_SETTINGS."
    runs = []
    for heads, max_elements in RECORDER_SETTINGS:
        recorder = AttentionRecorder(grid, words={"word": [3, 4]}, points=points, heads=heads,
                                     max_elements=max_elements)
        recorder.controller = controller
        seconds, peak = timed(lambda: recorder(0, query, key, value, anchors), device, args.repeats)
        errors = direct_check(recorder, query, key, anchors, args.samples, generator)
        record = recorder.records[recorder.call, 0]
        runs.append(dict(heads=heads, max_elements=max_elements, seconds=round(seconds, 4),
                         peak_gb=round(peak / 1e9, 3), record_mb=round(record.nbytes / 1e6, 2),
                         max_error_vs_float64={k: float(f"{v:.2e}") for k, v in errors.items()}))
        assert max(errors.values()) < 1e-4, errors
        total = (record.text + record.video + record.anchor).mean().item()
        assert abs(total - 1) < 1e-4, total
    return runs


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=256, help="queries checked against float64")
    parser.add_argument("--model", action="store_true", help="also a whole model step with and without capture")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    config = SMOKE if args.smoke else COGVIDEOX_5B
    heads, head_dim = config["num_attention_heads"], config["attention_head_dim"]
    device = pick_device(args.smoke)
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    grid, points = token_grid(args.smoke), query_points(token_grid(args.smoke))
    generator = torch.Generator().manual_seed(0)
    shape = (3, grid.sequence_length, heads, head_dim)
    query, key, value = (torch.randn(shape, generator=generator).to(device, dtype) for _ in range(3))
    controller = AnchorController(object_tokens=centred_object(grid).to(device), layers=(0,), seed=0)
    controller.begin_step(800)
    anchors = controller.anchor_indices[0]
    full_matrix_bytes = heads * grid.sequence_length * (grid.sequence_length + anchors.numel()) * 4
    result = dict(device=device_name(device), dtype=str(dtype), sequence=grid.sequence_length, heads=heads,
                  anchors=anchors.numel(), full_matrix_gb_one_branch=full_matrix_bytes / 1e9,
                  inputs_gb=3 * query.numel() * query.element_size() / 1e9)
    attention = lambda: extended_attention(query, key, value, grid.text_length, anchors)
    attention_time, attention_peak = timed(attention, device, args.repeats)
    result["layer_attention"] = dict(seconds=round(attention_time, 4), peak_gb=round(attention_peak / 1e9, 3))
    result["recorder"] = recorder_runs(grid, controller, query, key, value, anchors, points, args, device, generator)
    if args.model:
        result["model"] = model_step(SMOKE_MODEL if args.smoke else COGVIDEOX_5B, grid, device, dtype, points,
                                     args.repeats)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
