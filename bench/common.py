"""What the benchmarks share: CogVideoX-5B-shaped models with seeded random weights (no download), timing on a GPU
(CUDA events, warm-up, repeats, the device synchronized) or the CPU (wall clock), and results written whole through
`dynvfx.core`'s atomic writes."""
from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from dynvfx.backbone import COGVIDEOX_5B_SCHEDULER, CogVideoXBackbone, TokenGrid, tiny_tokenizer
from dynvfx.core import atomic_write_text

RESULTS_DIR = Path(__file__).resolve().parent / "results"  # the recorded results (data: never rewritten by hand)

# -- shapes ----------------------------------------------------------------------------------------------------------

# CogVideoX-5B's transformer (diffusers' defaults for the rest, such as temporal_compression_ratio 4, norm_eps 1e-5)
COGVIDEOX_5B = dict(num_attention_heads=48, attention_head_dim=64, in_channels=16, out_channels=16, time_embed_dim=512,
                    text_embed_dim=4096, num_layers=42, sample_width=90, sample_height=60, sample_frames=49,
                    patch_size=2, max_text_seq_length=226, use_rotary_positional_embeddings=True)
SMOKE = dict(COGVIDEOX_5B, num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
             time_embed_dim=8, text_embed_dim=16, num_layers=2, sample_width=12, sample_height=8, sample_frames=9,
             max_text_seq_length=16)  # the same structure, tiny: checks a script on the CPU in seconds
T5_XXL = dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64, feed_forward_proj="gated-gelu",
              relative_attention_num_buckets=32)  # CogVideoX-5B's text encoder
T5_SMOKE = dict(d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, feed_forward_proj="gated-gelu",
                relative_attention_num_buckets=8)
VAE_SMOKE = dict(block_out_channels=(8, 8, 8), latent_channels=4, norm_num_groups=2, layers_per_block=1,
                 down_block_types=("CogVideoXDownBlock3D",) * 3, up_block_types=("CogVideoXUpBlock3D",) * 3)
CLIP, SMOKE_CLIP = (49, 480, 720), (9, 32, 48)  # frames, height, width


def clip_size(smoke: bool) -> tuple[int, int, int]:
    "Frames, height and width of the benchmarks' clip: 49 frames of 720x480, or the smoke size."
    return SMOKE_CLIP if smoke else CLIP


def token_grid(smoke: bool) -> TokenGrid:
    "The token grid of that clip for CogVideoX-5B (17,550 video tokens + 226 text tokens), or for the smoke model."
    config, (frames, height, width) = (SMOKE if smoke else COGVIDEOX_5B), clip_size(smoke)
    return TokenGrid(num_frames=frames, height=height, width=width, vae_spatial=4 if smoke else 8, vae_temporal=4,
                     latent_channels=config["in_channels"], patch_size=config["patch_size"], patch_size_t=1,
                     text_length=config["max_text_seq_length"])


# -- models ----------------------------------------------------------------------------------------------------------

def build_transformer(config: dict, device: torch.device, dtype: torch.dtype):
    "A CogVideoX transformer of `config` with random weights (seed 0), built directly on `device`."
    from diffusers import CogVideoXTransformer3DModel
    torch.manual_seed(0)
    with torch.device(device):  # initialised on the GPU: seconds instead of minutes on the CPU
        model = CogVideoXTransformer3DModel(**config)
    return model.to(dtype).eval()


def build_pipeline(smoke: bool, device: torch.device, dtype: torch.dtype):
    "A CogVideoX pipeline of CogVideoX-5B's shapes (or tiny): transformer, VAE and T5 with seeded random weights."
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline
    from transformers import T5Config, T5EncoderModel
    tokenizer = tiny_tokenizer()
    transformer = build_transformer(SMOKE if smoke else COGVIDEOX_5B, device, dtype)  # seeds 0: the rest follows
    with torch.device(device):
        vae = AutoencoderKLCogVideoX(**(VAE_SMOKE if smoke else {})).to(dtype).eval()
        text_encoder = T5EncoderModel(T5Config(vocab_size=32128, **(T5_SMOKE if smoke else T5_XXL))).to(dtype).eval()
    return CogVideoXPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                             scheduler=CogVideoXDDIMScheduler(**COGVIDEOX_5B_SCHEDULER))


def step_inputs(model, grid: TokenGrid, device: torch.device, dtype: torch.dtype, batch: int = 3) -> tuple:
    "Seeded random latents and text embeddings of a batch, its timesteps (800) and the clip's rotary embeddings."
    rotary = CogVideoXBackbone.rotary_embedding(SimpleNamespace(config=model.config, device=device), grid)
    generator = torch.Generator(device).manual_seed(0)
    latents = torch.randn(batch, *grid.latent_shape, generator=generator, device=device).to(dtype)
    text_shape = (batch, grid.text_length, model.config.text_embed_dim)
    embeds = torch.randn(text_shape, generator=generator, device=device).to(dtype)
    return latents, embeds, torch.full((batch,), 800, device=device), rotary


def _object_size(grid: TokenGrid, share: float) -> tuple[int, int]:
    "Rows and columns of a rectangle of tokens covering about `share` of a frame."
    height = max(1, round(grid.grid_height * share ** 0.5))
    return height, max(1, round(share * grid.grid_height * grid.grid_width / height))


def moving_object(grid: TokenGrid, share: float) -> torch.Tensor:
    "Token masks (grid_frames, gh, gw) of a rectangle covering `share` of each frame, moving right over the clip."
    (gh, gw), (height, width) = (grid.grid_height, grid.grid_width), _object_size(grid, share)
    tokens = torch.zeros(grid.grid_shape, dtype=torch.bool)
    for f in range(grid.grid_frames):
        left = round((gw - width) * f / max(1, grid.grid_frames - 1))
        tokens[f, (gh - height) // 2:(gh - height) // 2 + height, left:left + width] = True
    return tokens


def centred_object(grid: TokenGrid, share: float = 0.2) -> torch.Tensor:
    "Token masks (grid_frames, gh, gw) of a centred rectangle on `share` of every frame."
    (gh, gw), (height, width) = (grid.grid_height, grid.grid_width), _object_size(grid, share)
    tokens = torch.zeros(grid.grid_shape, dtype=torch.bool)
    tokens[:, (gh - height) // 2:(gh - height) // 2 + height, (gw - width) // 2:(gw - width) // 2 + width] = True
    return tokens


# -- devices and timing ----------------------------------------------------------------------------------------------

def pick_device(smoke: bool, requested: str | None = None) -> torch.device:
    "`requested`, else the CPU for a smoke run or where there is no GPU, else the GPU."
    return torch.device(requested or ("cpu" if smoke or not torch.cuda.is_available() else "cuda"))


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def synchronize(device: torch.device) -> None:
    "Wait until the device has run what was queued on it (nothing to wait for off CUDA)."
    if device.type == "cuda": torch.cuda.synchronize(device)


def time_once(run: Callable, device: torch.device) -> float:
    "Seconds of one `run()`: CUDA events on a GPU, the wall clock elsewhere."
    if device.type != "cuda":
        start = time.perf_counter(); run(); return time.perf_counter() - start
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record(); run(); end.record(); end.synchronize()
    return start.elapsed_time(end) / 1000


def time_repeats(run: Callable, device: torch.device, warmup: int, repeats: int) -> list[float]:
    "Seconds of each of `repeats` calls of `run`, after `warmup` untimed calls."
    for _ in range(warmup): run()
    synchronize(device)
    return [time_once(run, device) for _ in range(repeats)]


class PeakMemory:
    """Peak memory allocated on a CUDA device inside a `with` block: `gib`, `reserved_gib`, and `added_bytes` above
    what was allocated when the block began (all None off CUDA). `empty_cache` empties the allocator's cache first."""
    def __init__(self, device: torch.device, empty_cache: bool = False):
        self.device, self.empty_cache = device, empty_cache
        self.gib = self.reserved_gib = self.added_bytes = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            if self.empty_cache: torch.cuda.empty_cache()
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *error) -> None:
        if self.device.type != "cuda": return
        synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device)
        self.gib, self.added_bytes = peak / 2**30, peak - self.base
        self.reserved_gib = torch.cuda.max_memory_reserved(self.device) / 2**30


def peak_memory_gib(run: Callable, device: torch.device) -> float | None:
    "Peak GPU memory allocated (GiB) while one `run()` runs; None off CUDA (where `run` is not called)."
    if device.type != "cuda": return None
    with PeakMemory(device) as peak: run()
    return peak.gib


class Stopwatch:
    "Wall-clock seconds of a `with` block, the device synchronized at both ends so that its queued work counts."
    def __init__(self, device: torch.device): self.device, self.seconds = device, None

    def __enter__(self) -> Stopwatch:
        synchronize(self.device)
        self.started = time.perf_counter()
        return self

    def __exit__(self, *error) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self.started


def time_cases(cases: dict, warmup: int, repeats: int, device: torch.device) -> dict:
    """Median seconds, all times and peak memory (GiB) of each case, a (context, run) pair: the warm-ups first, then
    the repeats round-robin over the cases (so that drift affects them alike), then on a GPU one call each for the
    memory."""
    times = {name: [] for name in cases}
    for context, run in cases.values():
        with context():
            for _ in range(warmup): run()
    for _ in range(repeats):
        for name, (context, run) in cases.items():
            with context(): times[name].append(time_once(run, device))
    results = {}
    for name, (context, run) in cases.items():
        peak = None
        if device.type == "cuda":
            with context(): peak = peak_memory_gib(run, device)
        results[name] = dict(median_s=statistics.median(times[name]), times_s=times[name], peak_gib=peak)
    return results


# -- results ---------------------------------------------------------------------------------------------------------

def json_text(data: Any, indent: int = 1) -> str:
    "`data` as JSON text (anything JSON does not know, such as a path or a dtype, as its string)."
    return json.dumps(data, indent=indent, default=str)


def write_json(path: str | Path, data: Any, indent: int = 1) -> Path:
    "Write `data` as JSON to `path`, whole or not at all; returns the path."
    return atomic_write_text(path, json_text(data, indent) + "\n")
