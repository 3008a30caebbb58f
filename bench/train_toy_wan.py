"""Train a toy Wan (a small diffusers `WanPipeline`) on scenes of `dynvfx.toy_world`, like data/toy_model's CogVideoX.

The same toy world, clip size (17 frames of 64x64), captions and held-out split as `bench/train_toy_model.py`, whose
functions this script reuses wherever they are not CogVideoX's (the VAE's training step, the learning-rate schedule,
the optimizer, the latent bank, compiling each block, the EMA swap, saving, the log); Wan's own parts are here. Two
phases, each on a wall-clock budget (the schedules follow the fraction of the budget spent):

1. the VAE (`AutoencoderKLWan`: 8x spatial and 4x temporal compression, causal 3D convolutions): MSE plus a little
   L1 and a tiny KL term (`train_toy_model.train_vae`); then its config's `latents_mean` / `latents_std` are set per
   channel from the encoded latents of training clips (Wan normalises each latent channel; CogVideoX scaled them all
   by one `scaling_factor`);
2. the transformer (`WanTransformer3DModel`, patch (1, 2, 2)) and the UMT5 text encoder together, by flow matching:
   sigma drawn logit-normally (or uniformly) and shifted as Wan's scheduler shifts it, s*sigma / (1 + (s-1)*sigma);
   x_sigma = (1 - sigma) x0 + sigma noise; target velocity = noise - x0; timestep = 1000 sigma; MSE. 10% empty
   captions (classifier-free guidance), AdamW with warm-up and cosine decay, an EMA of the weights, clips from a bank
   of latents refreshed with fresh clips every few steps; `--compile` compiles each block (`transformer.blocks`).

Then the EMA and the raw weights are validated on held-out validation captions (not the evaluation's) and the better
kept; the sampling flow shift of the saved `UniPCMultistepScheduler` (flow prediction, flow sigmas) is chosen among
`--shift-candidates` on the same captions (3.0, Wan 2.1's, unless another scores strictly higher). The pipeline is
saved in float16 to OUT/toy_wan (its size checked against `--max-megabytes`, 30), loaded back through
`dynvfx.backbone.load_backbone` and evaluated as the CogVideoX toy is (`dynvfx.toy_world.evaluate_toy_model`:
caption adherence of clips sampled from 100 held-out captions by `generate_clips`: the backbone's scheduler, guidance
6 and 3, 50 steps; VAE PSNR on 100 held-out clips); the numbers go to OUT/train_log.json and to OUT/toy_wan/README.md
(the model card, beside the CogVideoX toy's numbers read from data/toy_model/training/stage4_train_log.json).

    # one H200: about 14 minutes in all (VAE 210 s, transformer until 175 s before the deadline, then validation,
    # saving and evaluation); --deadline 840 guards the 15 minutes (seconds from the start, evaluation included)
    python -m bench.train_toy_wan --out runs/toy_wan --compile --cudnn-benchmark --deadline 840
    python -m bench.train_toy_wan --smoke --out /tmp/toywan_smoke      # CPU: tiny sizes, everything runs (< 2 min)
    python -m bench.train_toy_wan --size-only --out /tmp/toywan_size   # CPU: save the untrained full size, its MB
    python -m bench.train_toy_wan --out runs/toy_wan --evaluate-only   # evaluate OUT/toy_wan again
    python -m bench.train_toy_wan --out runs/tw2 --resume runs/toy_wan/toy_wan --vae-seconds 0 --fresh-transformer

The full size (`TOY_WAN`): VAE base 32 channels, multipliers 1/2/2, 2 residual blocks, 16 latent channels, 4x
spatial and 4x temporal compression (5 latent frames of 16x16 for a clip: 320 video tokens with patch (1, 2, 2), as
the CogVideoX toy has); transformer 8 blocks of 4 heads of 64, feed-forward 1024, frequency dimension 256; UMT5 text
encoder of 3 layers, width 128, over dynvfx's word tokenizer (`tiny_tokenizer(TOY_WORDS)`, 32 tokens). About 13.4 M
parameters: 26.9 MB in float16. Wan 2.1's own VAE compresses 8x in space; the toy's, like the CogVideoX toy's VAE,
compresses 4x, because at 8x (8x8 latents of 32 channels for a 64x64 clip) its VAE stayed at 14-15 dB on training
clips after 300 steps whatever the learning rate, precision or output clamp (one H200, 2026-12-01), where the 4x
one reached 21.7 dB in 569 steps. The pipeline reads the factor from the VAE's config (`scale_factor_spatial`).

How the shipped numbers were made (one H200, 2026-12-01; 562 + 265 s = 13.8 minutes of training):

    python -m bench.train_toy_wan --out tw --compile --cudnn-benchmark --deadline 545 --vae-seconds 190 \
        --eval-reserve 70 --shift-candidates 3 --no-evaluation
    python -m bench.train_toy_wan --out tw2 --resume tw/toy_wan --vae-seconds 0 --compile --cudnn-benchmark \
        --deadline 265 --eval-reserve 72 --shift-candidates 3 --no-evaluation
    python -m bench.train_toy_wan --out tw2 --evaluate-only --deadline 1000000      # on the CPU
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import write_json
from bench.train_toy_model import (STARTED, LatentBank, add_shared_options, adherence_score, compile_blocks,
                                   folder_megabytes, keep_history, learning_rate, log, optimizer_step, save_pipeline,
                                   start_log, swap, train_vae, transformer_optimizer)
from dynvfx.backbone import load_backbone
from dynvfx.config import ModelSettings
from dynvfx.core import atomic_write, atomic_write_text
from dynvfx.toy_world import (EVAL_SEED, TOY_CLIP, TOY_TEXT_LENGTH, TOY_WORDS, VAE_EVAL_SEED, VALIDATION_SEED,
                              encode_clips, evaluate_toy_model, render_scenes, sample_scenes, scene_captions,
                              toy_model_path)
from dynvfx.wan import WAN_SCHEDULER, WanBackbone, tiny_wan

# the toy Wan's sizes (`tiny_wan`'s arguments and the VAE's); SMOKE_* check the script on a CPU in seconds
TOY_WAN = dict(num_layers=8, heads=4, head_dim=64, ffn_dim=1024, freq_dim=256, latent_channels=16, text_dim=128,
               text_layers=3, text_heads=4, text_head_dim=32, text_ff=512, text_buckets=16)
TOY_WAN_VAE = dict(base_dim=32, dim_mult=[1, 2, 2], num_res_blocks=2, temperal_downsample=[True, True],
                   scale_factor_spatial=4)
SMOKE_WAN = dict(num_layers=2, heads=2, head_dim=16, ffn_dim=64, freq_dim=32, latent_channels=8, text_dim=32,
                 text_layers=1, text_heads=2, text_head_dim=16, text_ff=64, text_buckets=8)
SMOKE_WAN_VAE = dict(base_dim=8, dim_mult=[1, 1, 1], num_res_blocks=1, temperal_downsample=[True, True],
                     scale_factor_spatial=4)
COGVIDEOX_TOY_LOG = "stage4_train_log.json"   # the shipped CogVideoX toy's training log, in data/toy_model/training


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add_shared_options(add)
    add("--out", type=Path, default=None, help="output folder (toy_wan/, train_log.json); a temporary one for --smoke")
    add("--seed", type=int, default=0)
    add("--resume", type=Path, default=None, help="start from this saved toy Wan folder instead of random weights")
    add("--fresh-transformer", action="store_true",
        help="with --resume: keep its VAE and tokenizer, start the transformer and text encoder from random weights")
    add("--deadline", type=float, default=840.0,
        help="seconds from start by which everything, evaluation included, should be done")
    add("--max-megabytes", type=float, default=30.0, help="the saved float16 folder must not be larger")
    add("--vae-seconds", type=float, default=210.0)
    add("--initial-logvar", type=float, default=-8.0,
        help="a new VAE's posterior log-variance starts here (the quant_conv's bias): near-deterministic latents. At "
             "0 (diffusers' start) the first toy Wan's encoder kept std 1.0 noise against latents of std 1.3 for all "
             "170 s of its VAE training, and its decoder learnt a blur (18 dB; the CogVideoX toy's posterior std is "
             "0.005)")
    add("--decoder-only", action="store_true",
        help="train only the VAE's decoder (keeps the latent space and statistics of a resumed model)")
    add("--statistics-clips", type=int, default=256, help="training clips whose latents set latents_mean/std")
    add("--transformer-seconds", type=float, default=600.0, help="at most this long (less if the deadline needs it)")
    add("--sigmas", choices=("uniform", "logit-normal"), default="logit-normal",
        help="how training noise levels are drawn before the shift: uniformly, or sigmoid(normal(--sigma-mean, "
             "--sigma-std))")
    add("--sigma-mean", type=float, default=0.2,
        help="logit-normal: mean of the normal (0.2 with shift 3 puts 44%% of the draws between the noise levels of "
             "CogVideoX's t = 700 and 950, where motion is settled: as many as the CogVideoX toy's timesteps)")
    add("--sigma-std", type=float, default=1.0)
    add("--train-shift", type=float, default=3.0, help="flow shift applied to the training sigmas")
    add("--flow-shift", type=float, default=WAN_SCHEDULER["flow_shift"],
        help="the saved scheduler's flow shift (unless a --shift-candidates value validates strictly better)")
    add("--shift-candidates", type=str, default="2,3,5",
        help="comma-separated sampling flow shifts validated on the kept weights ('' for none)")
    add("--eval-reserve", type=float, default=175.0, help="seconds kept for validation, saving and evaluation")
    add("--compile", action="store_true", help="torch.compile each transformer block for training")
    add("--cudnn-benchmark", action="store_true", help="let cuDNN pick its fastest convolution kernels (the VAE)")
    add("--no-evaluation", action="store_true", help="stop after saving (evaluate later with --evaluate-only)")
    add("--evaluate-only", action="store_true", help="evaluate OUT/toy_wan and write its card")
    add("--size-only", action="store_true",
        help="build the untrained model, save it to OUT/toy_wan in float16, load it back, print its size, stop")
    add("--smoke", action="store_true", help="tiny model, batches and budgets on the CPU: checks that everything runs")
    args = parser.parse_args(argv)
    if args.out is None:
        if not args.smoke: parser.error("--out is required (it is optional only with --smoke)")
        args.out = Path(tempfile.mkdtemp(prefix="toywan-smoke-"))
    if args.resume is None and (args.fresh_transformer or args.decoder_only):
        parser.error("--fresh-transformer and --decoder-only need --resume (the model whose VAE to keep)")
    if args.smoke:
        args.vae_seconds, args.vae_batch, args.transformer_seconds, args.batch = min(args.vae_seconds, 5), 2, 8, 4
        args.bank, args.refresh, args.refresh_every, args.warmup, args.statistics_clips = 8, 4, 2, 3, 8
        args.eval_count, args.validation_count, args.eval_steps, args.shift_candidates = 2, 2, 3, "3,5"
        args.eval_reserve, args.deadline = 0, 10_000
    args.shifts = [float(s) for s in args.shift_candidates.split(",") if s.strip()]
    return args


# -- the model --------------------------------------------------------------------------------------------------------

def flow_scheduler(flow_shift: float):
    "Wan 2.1's scheduler (UniPC on flow sigmas, flow prediction) with this flow shift."
    from diffusers import UniPCMultistepScheduler
    return UniPCMultistepScheduler(**{**WAN_SCHEDULER, "flow_shift": flow_shift})


def toy_wan(seed: int = 0, smoke: bool = False, flow_shift: float = WAN_SCHEDULER["flow_shift"],
            initial_logvar: float = 0.0):
    """The toy Wan's architecture as an untrained, seeded WanPipeline: `tiny_wan` at TOY_WAN's sizes (word tokenizer
    over TOY_WORDS, 32 text tokens) with a wider AutoencoderKLWan (TOY_WAN_VAE) in place of tiny_wan's, whose
    posterior log-variance starts at `initial_logvar` (the bias of quant_conv's log-variance half)."""
    from diffusers import AutoencoderKLWan
    sizes, vae_sizes = (SMOKE_WAN, SMOKE_WAN_VAE) if smoke else (TOY_WAN, TOY_WAN_VAE)
    pipe = tiny_wan(seed, words=TOY_WORDS, text_length=TOY_TEXT_LENGTH, flow_shift=flow_shift, **sizes)
    channels = sizes["latent_channels"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        vae = AutoencoderKLWan(z_dim=channels, latents_mean=[0.0] * channels,
                               latents_std=[1.0] * channels, **vae_sizes)
        with torch.no_grad(): vae.quant_conv.bias[channels:] += initial_logvar
    pipe.register_modules(vae=vae.eval())
    return pipe


def parameter_counts(pipe) -> dict[str, int]:
    return {n: sum(p.numel() for p in getattr(pipe, n).parameters()) for n in ("vae", "transformer", "text_encoder")}


def starting_pipeline(args: argparse.Namespace, device: torch.device, log_data: dict):
    "Random weights, or the --resume model (with a fresh transformer and text encoder if asked), on `device`."
    if args.resume:
        pipe = load_backbone(ModelSettings(model_id=str(args.resume), dtype="float32", device=str(device))).pipe
        pipe.register_modules(scheduler=flow_scheduler(args.flow_shift))
        if args.fresh_transformer:
            fresh = toy_wan(args.seed, smoke=args.smoke, flow_shift=args.flow_shift)
            pipe.register_modules(transformer=fresh.transformer, text_encoder=fresh.text_encoder)
    else: pipe = toy_wan(args.seed, smoke=args.smoke, flow_shift=args.flow_shift, initial_logvar=args.initial_logvar)
    pipe.to(device)
    counts = log_data["parameters"] = parameter_counts(pipe)
    log_data["weights_megabytes"] = 2 * sum(counts.values()) / 1e6
    log(f"parameters {counts}: {sum(counts.values()) / 1e6:.2f} M, {log_data['weights_megabytes']:.2f} MB in float16")
    if log_data["weights_megabytes"] > args.max_megabytes:
        raise SystemExit(f"the model's float16 weights take {log_data['weights_megabytes']:.1f} MB, over "
                         f"--max-megabytes {args.max_megabytes}")
    return pipe


# -- phase 1: the VAE -------------------------------------------------------------------------------------------------

@torch.no_grad()
def set_latent_statistics(pipe, device: torch.device, count: int, seed: int) -> tuple[list, list]:
    "Set the VAE's latents_mean / latents_std per channel from the latents (posterior mode) of `count` training clips."
    pixels = render_scenes(sample_scenes(count, seed=seed, split="train", **TOY_CLIP), device).pixels
    latents = []
    for chunk in pixels.split(32):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            latents.append(pipe.vae.encode((chunk * 2 - 1).permute(0, 2, 1, 3, 4)).latent_dist.mode().float())
    latents = torch.cat(latents).transpose(0, 1).flatten(1)                     # (C, B * F * h * w)
    mean, std = latents.mean(1).tolist(), latents.std(1).clamp(min=1e-4).tolist()
    pipe.vae.register_to_config(latents_mean=mean, latents_std=std)
    return mean, std


def vae_phase(pipe, args: argparse.Namespace, device: torch.device, log_data: dict) -> None:
    "Train the VAE (train_toy_model's step) and set its latent statistics (saved to OUT/vae_checkpoint), or keep them."
    if args.vae_seconds > 0:
        log_data["vae"] = train_vae(pipe.vae, args, device, log_data["vae_history"])
        if not args.decoder_only:
            set_latent_statistics(pipe, device, args.statistics_clips, seed=3_000_000)
        log(f"vae done: {log_data['vae']}; latent std per channel {min(pipe.vae.config.latents_std):.3f}.."
            f"{max(pipe.vae.config.latents_std):.3f}")
        with atomic_write(args.out / "vae_checkpoint") as partial: pipe.vae.to(torch.float16).save_pretrained(partial)
        pipe.vae.to(torch.float32)
    else:
        log_data["vae"] = dict(steps=0, seconds=0.0, clips=0)
        log_data["resumed_note"] = (f"VAE and tokenizer from {args.resume}"
                                    + ("; transformer and text encoder from random weights."
                                       if args.fresh_transformer else "; transformer and text encoder continued."))
    log_data["latents_mean"], log_data["latents_std"] = pipe.vae.config.latents_mean, pipe.vae.config.latents_std
    log_data["vae_history"] = log_data["vae_history"] or [dict(loss=float("nan"))]


# -- phase 2: the transformer and the text encoder --------------------------------------------------------------------

class WanLatentBank(LatentBank):
    "train_toy_model's bank of latents and caption tokens, with Wan's per-channel normalised latents."
    @torch.no_grad()
    def refresh(self, count: int) -> None:
        for start in range(0, count, 512):
            n = min(512, count - start)
            scenes = sample_scenes(n, seed=2_000_000 * (self.seed + 1) + self.drawn, split="train", **TOY_CLIP)
            self.drawn += 1
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                latents = encode_clips(self.backbone, render_scenes(scenes, self.device).pixels, 128).float()
            index = (self.cursor + torch.arange(n, device=self.device)) % self.size
            self.latents[index], self.tokens[index] = latents, self.tokenize(scene_captions(scenes))
            self.cursor = (self.cursor + n) % self.size


def text_embeddings(text_encoder, tokens: torch.Tensor, pad_id: int) -> torch.Tensor:
    "UMT5 embeddings of caption tokens with the padding zeroed, as `WanBackbone.encode_prompt` makes them."
    mask = (tokens != pad_id).long()
    embeds = text_encoder(tokens, mask).last_hidden_state
    return embeds * mask.unsqueeze(-1).to(embeds.dtype)


def training_sigmas(args: argparse.Namespace, count: int, device: torch.device) -> torch.Tensor:
    "(count,) noise levels: uniform or logit-normal, then shifted as Wan's scheduler shifts its sigmas."
    if args.sigmas == "uniform": sigma = torch.rand(count, device=device)
    else: sigma = torch.sigmoid(args.sigma_mean + args.sigma_std * torch.randn(count, device=device))
    return args.train_shift * sigma / (1 + (args.train_shift - 1) * sigma)


def flow_matching_loss(pipe, bank: WanLatentBank, empty: torch.Tensor, args: argparse.Namespace,
                       device: torch.device) -> torch.Tensor:
    "The flow-matching loss (velocity = noise - clean) of one batch from the bank, `args.text_dropout` uncaptioned."
    index = torch.randint(args.bank, (args.batch,), device=device)
    clean, tokens = bank.latents[index].permute(0, 2, 1, 3, 4), bank.tokens[index]     # (B, C, F, h, w)
    tokens = torch.where(torch.rand(args.batch, 1, device=device) < args.text_dropout, empty, tokens)
    sigma = training_sigmas(args, args.batch, device)
    noise = torch.randn_like(clean)
    noisy = (1 - sigma.view(-1, 1, 1, 1, 1)) * clean + sigma.view(-1, 1, 1, 1, 1) * noise
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        embeds = text_embeddings(pipe.text_encoder, tokens, pipe.tokenizer.pad_token_id)
        predicted = pipe.transformer(hidden_states=noisy, timestep=sigma * 1000, encoder_hidden_states=embeds,
                                     return_dict=False)[0]
    return F.mse_loss(predicted.float(), noise - clean)


@torch.no_grad()
def check_conventions(pipe, bank: WanLatentBank, device: torch.device) -> dict:
    "The bank's latents and the training text embeddings against WanBackbone's own encode_video / encode_prompt."
    backbone = WanBackbone(pipe, device=device)
    scenes = sample_scenes(1, seed=5, split="train", **TOY_CLIP)
    pixels, caption = render_scenes(scenes, device).pixels, scene_captions(scenes)[0]
    latents = (encode_clips(backbone, pixels)[0] - backbone.encode_video(pixels[0])[0]).abs().max().item()
    ours = text_embeddings(pipe.text_encoder, bank.tokenize([caption, ""]), pipe.tokenizer.pad_token_id)
    text = (ours - backbone.encode_prompt([caption, ""])).abs().max().item()
    return dict(latents_max_difference=latents, text_max_difference=text)


def train_wan_transformer(pipe, args: argparse.Namespace, device: torch.device, seconds: float,
                          history: list) -> tuple[dict, list, list]:
    "Train the transformer and text encoder for `seconds`; returns the summary, the parameters and their EMA."
    filling = time.perf_counter()
    bank = WanLatentBank(WanBackbone(pipe, device=device), args.bank, args.seed, device)
    log(f"latent bank of {args.bank} clips filled in {time.perf_counter() - filling:.1f} s; latent mean "
        f"{bank.latents.mean().item():.3f} std {bank.latents.std().item():.3f}")
    checks = check_conventions(pipe, bank, device)
    log(f"bank and training text against WanBackbone: {checks}")
    if max(checks.values()) > 1e-3:
        raise RuntimeError(f"the training latents or text embeddings differ from WanBackbone's: {checks}")
    empty = bank.tokenize([""])
    modules = [pipe.transformer, pipe.text_encoder]
    parameters = [p for m in modules for p in m.parameters()]
    for m in modules: m.train().requires_grad_(True)
    optimizer = transformer_optimizer(modules, args, device)
    ema = [p.detach().clone() for p in parameters]
    originals = compile_blocks(pipe.transformer.blocks) if args.compile else None
    started, step, first_step_seconds = time.perf_counter(), 0, None
    while (elapsed := time.perf_counter() - started) < seconds:
        for group in optimizer.param_groups: group["lr"] = learning_rate(elapsed / seconds, step, args.lr, args.warmup)
        if step > 0 and step % args.refresh_every == 0: bank.refresh(args.refresh)
        loss = flow_matching_loss(pipe, bank, empty, args, device)
        grad_norm = optimizer_step(loss, optimizer, parameters, ema, args.ema, step)
        keep_history(history, step, elapsed, loss, grad_norm, optimizer)
        if step == 0:
            if device.type == "cuda": torch.cuda.synchronize()
            first_step_seconds = time.perf_counter() - started
            log(f"first transformer step took {first_step_seconds:.1f} s" + (" (compiling included)" * args.compile))
        step += 1
    if originals:
        for index, block in enumerate(originals): pipe.transformer.blocks[index] = block
    for m in modules: m.eval().requires_grad_(False)
    spent = time.perf_counter() - started
    fresh = args.bank + max(step - 1, 0) // args.refresh_every * args.refresh
    result = dict(steps=step, seconds=spent, first_step_seconds=first_step_seconds, clips_seen=step * args.batch,
                  fresh_clips=fresh, conventions=checks)
    if not history: history.append(dict(step=0, seconds=0.0, loss=float("nan")))
    return result, parameters, ema


# -- evaluation -------------------------------------------------------------------------------------------------------

def evaluate_toy_wan(backbone: WanBackbone, count: int, seed: int = EVAL_SEED, steps: int = 50,
                     guidance_scale: float = 6.0, vae_count: int | None = None) -> dict:
    "`toy_world.evaluate_toy_model` (the CogVideoX toy's measure, batches of 16 captions), with the flow shift used."
    return dict(evaluate_toy_model(backbone, count, seed, steps, guidance_scale, vae_count=vae_count, progress=False),
                flow_shift=backbone.scheduler.config.flow_shift)


def time_left(args: argparse.Namespace) -> float:
    return args.deadline - (time.perf_counter() - STARTED)


def validate(pipe, args: argparse.Namespace, device: torch.device, label: str) -> dict:
    "Adherence on the validation captions (not the evaluation's) of the pipeline's weights and scheduler as they are."
    result = evaluate_toy_wan(WanBackbone(pipe, device=device), args.validation_count, seed=VALIDATION_SEED,
                              steps=args.eval_steps, vae_count=min(8, args.validation_count))   # fresh prompt cache
    result.pop("records")
    log(f"validation ({label}): {result['all_objects']} in {result['seconds']:.1f} s")
    return result


def keep_best(pipe, args: argparse.Namespace, device: torch.device, log_data: dict, parameters: list,
              ema: list) -> None:
    """Keep the better of the EMA and raw weights on the validation captions, then the sampling flow shift among
    --shift-candidates that validates best (the configured one unless another is strictly better) while time lasts."""
    validation = {}
    for name in ("ema", "raw"):
        if name == "ema": raw = swap(parameters, ema)
        else: swap(parameters, raw)
        validation[name] = validate(pipe, args, device, f"{name} weights, flow shift {args.flow_shift:g}")
    kept = log_data["weights_kept"] = max(validation, key=lambda k: adherence_score(validation[k]))
    if kept == "ema": swap(parameters, ema)
    shifts = {args.flow_shift: validation[kept]}
    for shift in args.shifts:
        if shift in shifts: continue
        if time_left(args) < 2.5 * validation[kept]["seconds"] + 60:
            log(f"no time left to validate flow shift {shift:g}: skipped"); continue
        pipe.register_modules(scheduler=flow_scheduler(shift))
        shifts[shift] = validate(pipe, args, device, f"{kept} weights, flow shift {shift:g}")
    best = max(shifts, key=lambda s: (adherence_score(shifts[s]), s == args.flow_shift))
    pipe.register_modules(scheduler=flow_scheduler(best))
    log_data["validation"], log_data["flow_shift"] = validation, best
    log_data["shift_validation"] = {f"{s:g}": r for s, r in shifts.items()}
    log(f"kept the {kept} weights and flow shift {best:g}")


def cogvideox_toy_numbers() -> dict | None:
    "The shipped CogVideoX toy's evaluation, size and times, from its training log (None if it is not there)."
    try: path = toy_model_path() / "training" / COGVIDEOX_TOY_LOG
    except Exception: return None
    if not path.exists(): return None
    data = json.loads(path.read_text())
    return dict(source=f"data/toy_model/training/{COGVIDEOX_TOY_LOG}", megabytes=data.get("megabytes"),
                evaluation={k: v for k, v in data["evaluation"].items() if k != "records"},
                evaluation_guidance_3={k: v for k, v in data.get("evaluation_guidance_3", {}).items()
                                       if k != "records"} or None)


def evaluate_saved(args: argparse.Namespace, log_data: dict, device: torch.device) -> dict:
    "Evaluate OUT/toy_wan loaded back through load_backbone (guidance 6, and 3 if time allows); write card and log."
    started = time.perf_counter()
    folder = args.out / "toy_wan"
    loaded = load_backbone(ModelSettings(model_id=str(folder), dtype="float32", device=str(device)))
    if not isinstance(loaded, WanBackbone): raise RuntimeError(f"{folder} loaded as {type(loaded).__name__}")
    evaluation = evaluate_toy_wan(loaded, args.eval_count, seed=EVAL_SEED, steps=args.eval_steps)
    log_data["evaluation_records"] = evaluation.pop("records")
    log_data["evaluation"] = evaluation
    log(f"evaluation ({evaluation['seconds']:.0f} s): VAE {evaluation['vae_psnr_db']:.2f} dB; all objects "
        f"{evaluation['all_objects']}; single {evaluation['single_object_captions']}")
    if time_left(args) > evaluation["seconds"] + 5 or args.smoke:
        extra = evaluate_toy_wan(loaded, args.eval_count, seed=EVAL_SEED, steps=args.eval_steps, guidance_scale=3.0,
                                 vae_count=min(8, args.eval_count))
        extra.pop("records")
        log_data["evaluation_guidance_3"] = extra
        log(f"evaluation at guidance 3: {extra['all_objects']}")
    else: log("no time left for the evaluation at guidance 3: skipped")
    log_data["cogvideox_toy"] = cogvideox_toy_numbers()
    log_data["evaluation_seconds"] = time.perf_counter() - started
    log_data["total_seconds"] = time.perf_counter() - STARTED
    atomic_write_text(folder / "README.md", model_card(log_data))
    log_data["megabytes_with_card"] = folder_megabytes(folder)
    write_json(args.out / "train_log.json", log_data)
    log(f"evaluated in {log_data['evaluation_seconds']:.0f} s; {time.perf_counter() - STARTED:.0f} s in all; card "
        f"{folder / 'README.md'}")
    return log_data


# -- the model card ---------------------------------------------------------------------------------------------------

def model_card(log_data: dict) -> str:
    "The toy Wan's README.md, from its log, beside the CogVideoX toy's numbers."
    a, v, t, e = log_data["args"], log_data["vae"], log_data["transformer"], log_data["evaluation"]
    sizes, vae_sizes = (SMOKE_WAN, SMOKE_WAN_VAE) if a["smoke"] else (TOY_WAN, TOY_WAN_VAE)
    counts = log_data["parameters"]
    pct = lambda r: f"{r['colour']:.1%} | {r['shape']:.1%} | {r['motion']:.1%}"
    rows = [f"| toy Wan, every object ({e['all_objects']['objects']}) | {e['vae_psnr_db']:.2f} dB | "
            f"{pct(e['all_objects'])} |",
            f"| toy Wan, captions of one object ({e['single_object_captions']['objects']}) | | "
            f"{pct(e['single_object_captions'])} |"]
    if log_data.get("evaluation_guidance_3"):
        rows.append(f"| toy Wan, guidance 3, every object | | "
                    f"{pct(log_data['evaluation_guidance_3']['all_objects'])} |")
    cog = log_data.get("cogvideox_toy")
    if cog:
        c = cog["evaluation"]
        rows += [f"| CogVideoX toy (data/toy_model), every object ({c['all_objects']['objects']}) | "
                 f"{c['vae_psnr_db']:.2f} dB | {pct(c['all_objects'])} |",
                 f"| CogVideoX toy, captions of one object | | {pct(c['single_object_captions'])} |"]
        if cog.get("evaluation_guidance_3"):
            rows.append(f"| CogVideoX toy, guidance 3, every object | | "
                        f"{pct(cog['evaluation_guidance_3']['all_objects'])} |")
    sizes_line = f"Saved sizes: toy Wan {log_data['megabytes']:.1f} MB" + (
        f", CogVideoX toy {cog['megabytes']:.1f} MB (numbers from `{cog['source']}`)." if cog else ".")
    shifts = ", ".join(f"{s}: {adherence_score(r):.3f}" for s, r in log_data.get("shift_validation", {}).items())
    note = f"\n- {log_data['resumed_note']}" if log_data.get("resumed_note") else ""
    compiled = " (`--compile`: each block compiled)" if a["compile"] else ""
    return f"""# dynvfx toy Wan

A tiny text-to-video model of the Wan 2.1 architecture, trained from scratch on the synthetic scenes of
`dynvfx.toy_world` ({TOY_CLIP['num_frames']} frames of {TOY_CLIP['height']}x{TOY_CLIP['width']}, coloured circles,
squares, triangles and boxes moving over plain or textured backgrounds), the Wan counterpart of the CogVideoX toy in
`data/toy_model`. No pretrained weights or outside data went into it. It is a diffusers `WanPipeline` folder in
float16 ({log_data['megabytes']:.1f} MB): load it with
`dynvfx.backbone.load_backbone(ModelSettings(model_id=<this folder>, dtype="float32", device="cpu"))` (a
`WanBackbone`).

## The model

| part | configuration | parameters |
| --- | --- | --- |
| VAE | `AutoencoderKLWan`, base {vae_sizes['base_dim']} channels, multipliers {vae_sizes['dim_mult']}, \
{vae_sizes['num_res_blocks']} residual blocks, {sizes['latent_channels']} latent channels normalised per channel \
(`latents_mean` / `latents_std` from {a['statistics_clips']} training clips), \
{vae_sizes['scale_factor_spatial']}x spatial, 4x temporal compression | \
{counts['vae'] / 1e6:.2f} M |
| transformer | `WanTransformer3DModel`, {sizes['num_layers']} blocks, {sizes['heads']} heads of {sizes['head_dim']}, \
feed-forward {sizes['ffn_dim']}, patch (1, 2, 2), frequency dimension {sizes['freq_dim']} | \
{counts['transformer'] / 1e6:.2f} M |
| text encoder | `UMT5EncoderModel`, {sizes['text_layers']} layers, width {sizes['text_dim']}; word-level tokenizer \
over `TOY_WORDS` (`dynvfx.backbone.tiny_tokenizer`), {TOY_TEXT_LENGTH} tokens | {counts['text_encoder'] / 1e6:.2f} M |
| scheduler | `UniPCMultistepScheduler`, flow prediction, flow sigmas, flow shift {log_data['flow_shift']:g} | |

## How it was made

- Script: `bench/train_toy_wan.py` (seed {a['seed']}) on {log_data['device_name']}, torch {log_data['torch']}, \
diffusers {log_data['diffusers']}; {log_data['training_seconds']:.0f} s from start to the saved model, \
{log_data['total_seconds']:.0f} s with the evaluation.{note}
- Data: scenes drawn on the fly by `dynvfx.toy_world.sample_scenes(split="train")` (held-out captions never
  trained on).
- VAE: {v['steps']} steps of {a['vae_batch']} clips in {v['seconds']:.0f} s; loss MSE + {a['vae_l1']} L1 + \
{a['vae_kl']} KL (`bench.train_toy_model.train_vae`); final loss {log_data['vae_history'][-1]['loss']:.5f}.
- Transformer and text encoder together: {t['steps']} steps of {a['batch']} clips in {t['seconds']:.0f} \
s{compiled} ({t['fresh_clips']} distinct clips through a bank of {a['bank']}); flow matching (velocity = noise - \
clean, timestep = 1000 sigma), {a['sigmas']} sigmas (mean {a['sigma_mean']}, deviation {a['sigma_std']}) shifted \
by {a['train_shift']}; {a['text_dropout']:.0%} empty captions; AdamW, peak learning rate {a['lr']}, {a['warmup']} \
warm-up steps, cosine decay; EMA {a['ema']}. Final loss {log_data['transformer_history'][-1]['loss']:.4f}.
- Weights kept: {log_data['weights_kept']}; sampling flow shift {log_data['flow_shift']:g}, chosen on \
{a['validation_count']} validation captions (seed {VALIDATION_SEED}; colour + shape + motion by shift: {shifts}).

## Evaluation

As the CogVideoX toy's (`dynvfx.toy_world.caption_adherence` and its detectors), on the saved weights loaded back
through `load_backbone` ({e['device']}, float32): {e['captions']} held-out captions (seed {e['seed']}), each clip
sampled by `dynvfx.toy_world.generate_clips` with the model's scheduler ({e['steps']} steps, flow shift \
{e['flow_shift']:g}), classifier-free guidance {e['guidance_scale']:g} against the empty prompt; VAE PSNR on \
{e['captions']} held-out clips (seed {VAE_EVAL_SEED}).

| | VAE PSNR | named colour found | named shape | named motion |
| --- | --- | --- | --- | --- |
{chr(10).join(rows)}

{sizes_line} Targets of the CogVideoX toy (issue 11): VAE 32 dB, colour 90%, shape 70%, motion 70%. Full curves,
arguments and per-object records: `train_log.json` beside this folder. DynVFX on a toy Wan is measured as on the
CogVideoX toy by `python -m bench.eval_toy_dynvfx --model <this folder>`.
"""


# -- the run ----------------------------------------------------------------------------------------------------------

def size_only(args: argparse.Namespace, device: torch.device) -> dict:
    "Save the untrained model in float16, load it back through load_backbone and report its size."
    pipe = toy_wan(args.seed, smoke=args.smoke, flow_shift=args.flow_shift)
    log_data = dict(parameters=parameter_counts(pipe))
    folder = save_pipeline(pipe, args.out / "toy_wan")
    log_data["megabytes"] = folder_megabytes(folder)
    loaded = load_backbone(ModelSettings(model_id=str(folder), dtype="float32", device=str(device)))
    log(f"untrained {'smoke' if args.smoke else 'full'} size: {log_data['parameters']} "
        f"({sum(log_data['parameters'].values()) / 1e6:.2f} M parameters); saved {folder}: "
        f"{log_data['megabytes']:.2f} MB; loads as {type(loaded).__name__} (text length {loaded.text_length}, "
        f"grid {loaded.token_grid(**TOY_CLIP).latent_shape})")
    return log_data


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.size_only: return size_only(args, device)
    if args.evaluate_only:
        log_data = json.loads((args.out / "train_log.json").read_text())
        return evaluate_saved(args, log_data, device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    torch.manual_seed(args.seed)
    log_data = start_log(args, device)
    pipe = starting_pipeline(args, device, log_data)
    vae_phase(pipe, args, device, log_data)
    seconds = max(0.0, min(args.transformer_seconds, time_left(args) - args.eval_reserve))
    log(f"training the transformer for {seconds:.0f} s")
    log_data["transformer"], parameters, ema = train_wan_transformer(pipe, args, device, seconds,
                                                                     log_data["transformer_history"])
    log(f"transformer done: {log_data['transformer']}")
    keep_best(pipe, args, device, log_data, parameters, ema)
    folder = save_pipeline(pipe, args.out / "toy_wan")
    log_data["megabytes"] = folder_megabytes(folder)
    log_data["within_size_limit"] = log_data["megabytes"] <= args.max_megabytes
    log(f"saved {folder}: {log_data['megabytes']:.2f} MB (limit {args.max_megabytes:g} MB: "
        f"{'within' if log_data['within_size_limit'] else 'OVER'})")
    log_data["training_seconds"] = time.perf_counter() - STARTED
    write_json(args.out / "train_log.json", log_data)
    if args.no_evaluation:
        log(f"trained in {log_data['training_seconds']:.0f} s; evaluate with --evaluate-only")
        return log_data
    return evaluate_saved(args, log_data, device)


if __name__ == "__main__":
    main()
