"""Benchmark the attention recorder on one layer at CogVideoX-5B scale (48 heads of 64, 49 frames at 720x480).

One layer call as the anchor processor's observer sees it: queries, keys, values (3, 226 + 17550, 48, 64) in bf16
for the batch [conditional, unconditional, source], anchors drawn by an `AnchorController` (reference keep rates,
an object on ~20% of every frame). For each setting (heads "mean" or "all", chunk bound `max_elements`) it reports
the time of one recorder call (CUDA events, warm-up, median of `--repeats`), the peak memory it adds, and the size of
the attention matrix it never builds; then it checks sampled queries against a direct float64 computation.

With `--model`, it also builds a CogVideoX-5B-sized transformer (random bf16 weights; needs diffusers) and runs one
DynVFX step (batch of three, anchors on every block) with and without capturing three layers, and checks that the
capture leaves the output unchanged (bit for bit).

  python bench/bench_attention_viz.py           # GPU, full scale
  python bench/bench_attention_viz.py --model   # and a whole step of the model with capture
  python bench/bench_attention_viz.py --smoke   # tiny sizes on the CPU (checks the script)
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dynvfx.anchor_attention import AnchorController, extended_attention  # noqa: E402
from dynvfx.attention_viz import AttentionRecorder, capture  # noqa: E402
from dynvfx.backbone import TokenGrid  # noqa: E402

FULL = dict(grid=dict(num_frames=49, height=480, width=720, vae_spatial=8, vae_temporal=4, latent_channels=16, patch_size=2,
                      patch_size_t=1, text_length=226), heads=48, head_dim=64)
SMOKE = dict(grid=dict(num_frames=9, height=32, width=48, vae_spatial=4, vae_temporal=4, latent_channels=4, patch_size=2,
                       patch_size_t=1, text_length=16), heads=2, head_dim=16)
COGVIDEOX_5B = dict(num_attention_heads=48, attention_head_dim=64, in_channels=16, out_channels=16, time_embed_dim=512,
                    text_embed_dim=4096, num_layers=42, sample_width=90, sample_height=60, sample_frames=49, patch_size=2,
                    temporal_compression_ratio=4, max_text_seq_length=226, use_rotary_positional_embeddings=True, norm_eps=1e-5)
SMOKE_MODEL = dict(COGVIDEOX_5B, num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=8,
                   text_embed_dim=16, num_layers=3, sample_width=12, sample_height=8, sample_frames=9, max_text_seq_length=16)


def object_tokens(grid: TokenGrid, share: float = 0.2) -> torch.Tensor:
    "A centred rectangle on `share` of every frame's tokens."
    gh, gw = grid.grid_height, grid.grid_width
    height = max(1, round(gh * share ** 0.5)); width = max(1, round(share * gh * gw / height))
    tokens = torch.zeros(grid.grid_shape, dtype=torch.bool)
    tokens[:, (gh - height) // 2:(gh - height) // 2 + height, (gw - width) // 2:(gw - width) // 2 + width] = True
    return tokens


def timed(fn, device: torch.device, repeats: int) -> tuple[float, int]:
    "Median seconds of `fn()` and the peak memory it adds over what is allocated before (bytes; 0 on the CPU)."
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(); base = torch.cuda.memory_allocated(); torch.cuda.reset_peak_memory_stats()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(); fn(); end.record(); torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000); peak = torch.cuda.max_memory_allocated() - base
        else:
            begin = time.perf_counter(); fn(); times.append(time.perf_counter() - begin); peak = 0
    return statistics.median(times), peak


def direct_check(recorder: AttentionRecorder, query, key, anchors, samples: int, generator) -> dict[str, float]:
    "Max |recorded - direct float64| over sampled video queries of the conditional branch, per quantity."
    grid, text = recorder.grid, recorder.grid.text_length
    record = recorder.records[recorder.call, 0]
    picked = torch.randperm(grid.video_tokens, generator=generator)[:samples].to(query.device)
    keys = torch.cat([key[0], key[2, text:].index_select(0, anchors)]).double()
    logits = torch.einsum("qhd,khd->hqk", query[0, text + picked].double(), keys) / math.sqrt(query.shape[-1])
    weights = torch.softmax(logits, -1)
    own = key.shape[1]
    direct = dict(text=weights[..., :text].sum(-1), video=weights[..., text:own].sum(-1), anchor=weights[..., own:].sum(-1),
                  word=weights[..., recorder.words["word"]].sum(-1))
    errors = {}
    for name, values in direct.items():
        recorded = (record.word["word"] if name == "word" else getattr(record, name)).flatten(1)[:, picked.cpu()]
        expected = values.mean(0, keepdim=True) if recorded.shape[0] == 1 else values
        errors[name] = (recorded.double() - expected.cpu()).abs().max().item()
    return errors


def model_step(config: dict, grid: TokenGrid, device: torch.device, dtype: torch.dtype, points, repeats: int) -> dict:
    "One DynVFX step of a random CogVideoX transformer, without and with capture of three layers: times, equality."
    from types import SimpleNamespace
    from diffusers import CogVideoXTransformer3DModel
    from dynvfx.anchor_attention import anchor_extended_attention
    from dynvfx.backbone import CogVideoXBackbone
    torch.manual_seed(0)
    with torch.device(device): model = CogVideoXTransformer3DModel(**config)
    model = model.to(dtype).eval()
    rotary = CogVideoXBackbone.rotary_embedding(SimpleNamespace(config=model.config, device=device), grid)
    generator = torch.Generator(device).manual_seed(0)
    latents = torch.randn(3, *grid.latent_shape, generator=generator, device=device).to(dtype)
    embeds = torch.randn(3, grid.text_length, config["text_embed_dim"], generator=generator, device=device).to(dtype)
    timestep = torch.full((3,), 800, device=device)
    layers = sorted({0, config["num_layers"] // 2, config["num_layers"] - 1})
    controller = AnchorController(object_tokens=object_tokens(grid).to(device), seed=0)
    def forward():
        controller.reset(); controller.begin_step(800)
        with torch.no_grad(): return model(hidden_states=latents, encoder_hidden_states=embeds, timestep=timestep, image_rotary_emb=rotary, return_dict=False)[0]
    result = {}
    with anchor_extended_attention(model, controller):
        plain, plain_again = forward(), forward()
        result["plain_step"] = dict(zip(("seconds", "peak_gb"), timed(forward, device, repeats)))
        recorder = AttentionRecorder(grid, words={"word": [3, 4]}, points=points, layers=layers)
        with capture(controller, recorder):
            captured = forward()
            result["captured_step"] = dict(zip(("seconds", "peak_gb"), timed(forward, device, repeats)))
    result.update(layers=layers, repeatable=torch.equal(plain, plain_again), unchanged_by_capture=torch.equal(plain, captured),
                  max_difference=(plain.float() - captured.float()).abs().max().item(), records=len(recorder.records),
                  records_mb=round(recorder.nbytes / 1e6, 2))
    for step in ("plain_step", "captured_step"): result[step] = dict(seconds=round(result[step]["seconds"], 4), peak_gb=round(result[step]["peak_gb"] / 1e9, 2))
    assert result["unchanged_by_capture"] or not result["repeatable"], result
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=256, help="queries checked against float64")
    parser.add_argument("--model", action="store_true", help="also a whole model step with and without capture")
    args = parser.parse_args()
    scale = SMOKE if args.smoke else FULL
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    grid = TokenGrid(**scale["grid"])
    generator = torch.Generator().manual_seed(0)
    shape = (3, grid.sequence_length, scale["heads"], scale["head_dim"])
    query, key, value = (torch.randn(shape, generator=generator).to(device, dtype) for _ in range(3))
    controller = AnchorController(object_tokens=object_tokens(grid).to(device), layers=(0,), seed=0)
    controller.begin_step(800)
    anchors = controller.anchor_indices[0]
    points = [(grid.grid_frames // 2, grid.grid_height // 2, grid.grid_width // 2), (0, 0, 0), (grid.grid_frames - 1, 1, 2), (3 % grid.grid_frames, 4 % grid.grid_height, 5)]
    result = dict(device=torch.cuda.get_device_name() if device.type == "cuda" else "cpu", dtype=str(dtype),
                  sequence=grid.sequence_length, heads=scale["heads"], anchors=anchors.numel(),
                  full_matrix_gb_one_branch=scale["heads"] * grid.sequence_length * (grid.sequence_length + anchors.numel()) * 4 / 1e9,
                  inputs_gb=3 * query.numel() * query.element_size() / 1e9)
    attention_time, attention_peak = timed(lambda: extended_attention(query, key, value, grid.text_length, anchors), device, args.repeats)
    result["layer_attention"] = dict(seconds=round(attention_time, 4), peak_gb=round(attention_peak / 1e9, 3))
    runs = []
    for heads, max_elements in (("mean", 2**27), ("all", 2**27), ("mean", 2**25), ("mean", 2**29)):
        recorder = AttentionRecorder(grid, words={"word": [3, 4]}, points=points, heads=heads, max_elements=max_elements)
        recorder.controller = controller
        seconds, peak = timed(lambda: recorder(0, query, key, value, anchors), device, args.repeats)
        errors = direct_check(recorder, query, key, anchors, args.samples, generator)
        record = recorder.records[recorder.call, 0]
        runs.append(dict(heads=heads, max_elements=max_elements, seconds=round(seconds, 4), peak_gb=round(peak / 1e9, 3),
                         record_mb=round(record.nbytes / 1e6, 2), max_error_vs_float64={k: float(f"{v:.2e}") for k, v in errors.items()}))
        assert max(errors.values()) < 1e-4, errors
        total = (record.text + record.video + record.anchor).mean().item()
        assert abs(total - 1) < 1e-4, total
    result["recorder"] = runs
    if args.model: result["model"] = model_step(SMOKE_MODEL if args.smoke else COGVIDEOX_5B, grid, device, dtype, points, args.repeats)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
