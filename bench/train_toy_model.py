"""Train dynvfx's toy text-to-video model (issue 11) on scenes from `dynvfx.toy_world`, drawn on the GPU on the fly.

Two phases, each on a wall-clock budget (the schedules are on the fraction of the budget spent, so a slower machine
trains fewer steps but the same way; the step counts are written to the log):

1. the VAE (`AutoencoderKLCogVideoX`, 4x spatial and 4x temporal compression): mean squared error plus a little L1
   and a tiny KL term, on latents sampled from the posterior; then its `scaling_factor` is set to 1 / (standard
   deviation of the latents);
2. the transformer (`CogVideoXTransformer3DModel`) and the T5 text encoder together: v-prediction with
   CogVideoX-5B's scheduler (zero terminal SNR), logit-normal timesteps (or uniform), 10% empty captions for
   classifier-free guidance, AdamW with warm-up and cosine decay, an exponential moving average of the weights.
   Clips are encoded by the frozen VAE into a bank of latents, a slice of which is replaced by fresh clips every
   few steps. `--compile` compiles each transformer block for training (one compiled graph serves all of them).

The result is a diffusers CogVideoXPipeline folder in half precision (`--out DIR/toy_model`), evaluated after it is
saved and loaded back through `dynvfx.backbone.load_backbone`, with `train_log.json` and a model card. Every step
can be run on its own and taken up again: `--no-evaluation` stops once the model is saved and `--evaluate-only`
evaluates it later; `--pause-after SECONDS` writes the transformer's training state (weights, optimizer, EMA, step,
time spent) to OUT/train_state.pt and stops, and `--continue` takes it up where it stopped, with the paused run's
settings, the learning-rate schedule going on over the same budget.

    python -m bench.train_toy_model --out runs/toy --compile    # on a GPU: about 9 minutes
    python -m bench.train_toy_model --out /tmp/toy --smoke      # on a CPU: a quick check that everything runs
    python -m bench.train_toy_model --out runs/toy2 --resume data/toy_model --vae-seconds 0   # continue training

The committed data/toy_model was made in stages on H100s (see its README.md): its VAE in stages 1 and 2 (250 s),
its transformer and text encoder from scratch in stage 4 (520 s; 778 s of GPU time in all for the parts that ship,
filling the latent bank included):

    python -m bench.train_toy_model --out s1 --timesteps uniform --batch 128 --refresh 32 --refresh-every 1 \
        --ema 0.998 --lr 4e-4 --warmup 300 --vae-seconds 200 --deadline 530 --eval-reserve 80 --text-layers 2
    python -m bench.train_toy_model --out s2 --resume s1/toy_model --decoder-only --vae-seconds 50 --vae-lr 3e-4 \
        --timesteps uniform --transformer-seconds 400 --batch 256 --lr 5e-4 --warmup 200 --ema 0.999 --refresh 256 \
        --refresh-every 8 --deadline 550 --eval-reserve 60
    python -m bench.train_toy_model --out s4 --resume s2/toy_model --fresh-transformer --vae-seconds 0 --batch 256 \
        --lr 6e-4 --warmup 200 --ema 0.999 --bank 8192 --refresh 256 --refresh-every 16 --timesteps logit-normal \
        --timestep-mean 0.8 --timestep-std 1.3 --text-layers 3 --compile --transformer-seconds 520 --deadline 572 \
        --eval-reserve 25 --no-evaluation
    python -m bench.train_toy_model --out s4 --evaluate-only

Stage 3 (a transformer trained like stage 4 but with timesteps of mean -0.3 and deviation 1.2, a 2-layer text
encoder, the whole transformer compiled and the bank refreshed every 8 steps; 502 s) was replaced by stage 4. On the
lent GPU machine they ran from the repository's root with the wheels of diffusers and transformers put on PYTHONPATH
(stages 1 and 2 through bench/run_toy_training.sh).

Where a transformer step's time goes (`--resume data/toy_model --fresh-transformer --probe --vae-seconds 0
--transformer-seconds 35 --batch 256`, one H100, uncompiled): 117 ms a step of 256 clips with the bank refreshed by
256 clips every 8 steps, 100 ms with no refresh (filling the 8,192-clip bank took 4.4 s), 115 ms with
`--cudnn-benchmark`; batches of 1,024 take 369 ms (2,776 clips/s against 2,250 at batch 256: the step is bound by
its arithmetic and memory traffic, not by launches). Compiling the whole transformer and the text encoder made the
first step take 93 to 100 s and every later one 65 ms (stage 3, refresh every 8 steps); compiling each block instead
(stage 4, refresh every 16 steps) made the first step 27.7 s and every later one 66 ms (7,489 steps in 520 s).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import write_json
from dynvfx.backbone import CogVideoXBackbone, load_backbone
from dynvfx.config import ModelSettings
from dynvfx.core import atomic_write, atomic_write_text
from dynvfx.toy_world import (EVAL_SEED, TOY_CLIP, TOY_TEXT_LENGTH, VALIDATION_SEED, encode_clips, evaluate_toy_model,
                              generate_clips, render_scenes, sample_scenes, scene_captions, toy_pipeline)

STARTED = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f}s] {message}", flush=True)


def learning_rate(progress: float, step: int, peak: float, warmup: int, floor: float = 0.05) -> float:
    "Linear warm-up over `warmup` steps, then cosine decay from `peak` to `floor * peak` as `progress` goes 0 -> 1."
    cosine = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return peak * min(1.0, (step + 1) / warmup) * cosine


def add_shared_options(add) -> None:
    "The options both toy trainers take alike: the VAE's and the transformer's optimisation, the bank, the evaluation."
    add("--vae-batch", type=int, default=32)
    add("--vae-lr", type=float, default=1e-3)
    add("--vae-l1", type=float, default=0.1)
    add("--vae-kl", type=float, default=1e-5)
    add("--batch", type=int, default=256)
    add("--lr", type=float, default=6e-4)
    add("--warmup", type=int, default=200)
    add("--ema", type=float, default=0.999)
    add("--text-dropout", type=float, default=0.1)
    add("--bank", type=int, default=8192, help="latent clips kept for sampling batches")
    add("--refresh", type=int, default=256, help="bank clips replaced by fresh ones every --refresh-every steps")
    add("--refresh-every", type=int, default=16)
    add("--eval-count", type=int, default=100)
    add("--validation-count", type=int, default=48)
    add("--eval-steps", type=int, default=50)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add_shared_options(add)
    add("--out", type=Path, required=True, help="output folder (toy_model/, train_log.json)")
    add("--seed", type=int, default=0)
    add("--resume", type=Path, default=None, help="start from this pipeline folder instead of random weights")
    add("--deadline", type=float, default=530.0,
        help="seconds from start by which everything, evaluation included, must be done")
    add("--vae-seconds", type=float, default=200.0)
    add("--transformer-seconds", type=float, default=300.0, help="at most this long (less if the deadline needs it)")
    add("--timesteps", choices=("uniform", "logit-normal"), default="logit-normal",
        help="how training timesteps are drawn: uniformly, or t/1000 = sigmoid(normal(--timestep-mean, "
             "--timestep-std))")
    add("--timestep-mean", type=float, default=0.8,
        help="logit-normal timesteps: mean of the normal (0.8: median t about 690)")
    add("--timestep-std", type=float, default=1.3, help="logit-normal timesteps: standard deviation of the normal")
    add("--eval-reserve", type=float, default=80.0, help="seconds kept for validation, saving and evaluation")
    add("--decoder-only", action="store_true",
        help="train only the VAE's decoder (keeps the latent space of a resumed model)")
    add("--fresh-transformer", action="store_true",
        help="with --resume: keep its VAE and tokenizer, start the transformer and text encoder from random weights")
    add("--text-layers", type=int, default=3, help="layers of a fresh T5 text encoder")
    add("--compile", action="store_true",
        help="torch.compile each transformer block for training (one compiled graph serves all blocks)")
    add("--pause-after", type=float, default=None,
        help="seconds of transformer training in this run after which its state is written to --state and the run "
             "stops (continue with --continue)")
    add("--state", type=Path, default=None, help="the transformer training state file (default: OUT/train_state.pt)")
    add("--continue", dest="continue_training", action="store_true",
        help="continue the transformer training paused in --state")
    add("--cudnn-benchmark", action="store_true", help="let cuDNN pick its fastest convolution kernels (the VAE)")
    add("--probe", action="store_true",
        help="only time the transformer's training steps (no validation, saving or evaluation)")
    add("--no-evaluation", action="store_true",
        help="stop after saving OUT/toy_model and train_log.json (evaluate later with --evaluate-only)")
    add("--evaluate-only", action="store_true",
        help="evaluate the model saved in OUT/toy_model, draw the figure clips and write its card")
    add("--smoke", action="store_true", help="tiny batches and budgets: checks that everything runs, on a CPU")
    args = parser.parse_args(argv)
    if args.smoke:
        args.vae_seconds, args.vae_batch, args.transformer_seconds, args.batch = min(args.vae_seconds, 6), 2, 8, 4
        args.bank, args.refresh, args.refresh_every, args.warmup = 8, 4, 2, 3
        args.eval_count, args.validation_count, args.eval_steps = 3, 2, 2
        args.eval_reserve, args.deadline = 0, 10_000
    args.state = args.state or args.out / "train_state.pt"
    if args.pause_after is not None and args.vae_seconds > 0:
        parser.error("--pause-after saves only the transformer's training; train the VAE in a run of its own "
                     "(--vae-seconds 0 here)")
    return args


# what a continued run takes from its own command line; every other setting comes from the paused run
RUN_SETTINGS = ("out", "state", "continue_training", "pause_after", "deadline", "eval_reserve", "eval_count",
                "validation_count", "eval_steps", "probe")


def paused_training(args: argparse.Namespace) -> dict | None:
    "With --continue: the paused run's state, its settings copied into `args`."
    if not args.continue_training: return None
    if not args.state.exists():
        raise SystemExit(f"{args.state}: no paused training to continue; start one with --pause-after")
    state = torch.load(args.state, map_location="cpu", weights_only=False)
    for key, value in state["args"].items():
        if key not in RUN_SETTINGS: setattr(args, key, Path(value) if key == "resume" and value else value)
    return state


# -- phase 1: the VAE --------------------------------------------------------------------------------------------

def train_vae(vae, args, device, history: list) -> dict:
    vae.train().requires_grad_(True)
    if args.decoder_only: vae.encoder.requires_grad_(False)
    if args.decoder_only and vae.quant_conv is not None: vae.quant_conv.requires_grad_(False)
    trained = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=args.vae_lr, betas=(0.9, 0.99), weight_decay=0.0)
    started, step = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - started) < args.vae_seconds:
        rate = learning_rate(elapsed / args.vae_seconds, step, args.vae_lr, 100)
        for group in optimizer.param_groups: group["lr"] = rate
        scenes = sample_scenes(args.vae_batch, seed=1_000_000 * (args.seed + 1) + step, split="train", **TOY_CLIP)
        video = render_scenes(scenes, device).pixels.permute(0, 2, 1, 3, 4) * 2 - 1      # (B, 3, F, H, W) in [-1, 1]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            posterior = vae.encode(video).latent_dist
            latents = posterior.mode() if args.decoder_only else posterior.sample()
            reconstruction = vae.decode(latents).sample
        mse = F.mse_loss(reconstruction.float(), video)
        l1 = F.l1_loss(reconstruction.float(), video)
        kl = 0.5 * (posterior.mean.float() ** 2 + posterior.var.float() - 1 - posterior.logvar.float()).mean()
        loss = mse + args.vae_l1 * l1 + args.vae_kl * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        if step % 25 == 0:
            psnr = 10 * math.log10(4 / max(mse.item(), 1e-12))                           # pixels span 2 in [-1, 1]
            history.append(dict(step=step, seconds=round(elapsed, 1), loss=loss.item(), mse=mse.item(), kl=kl.item(),
                                train_psnr_db=psnr, grad_norm=grad_norm.item()))
            if step % 100 == 0:
                log(f"vae step {step}: loss {loss.item():.5f} train PSNR {psnr:.2f} dB kl {kl.item():.3f}")
        step += 1
    vae.eval().requires_grad_(False)
    return dict(steps=step, seconds=time.perf_counter() - started, clips=step * args.vae_batch)


@torch.no_grad()
def set_scaling_factor(pipe, device, seed: int) -> float:
    "Set the VAE's scaling_factor so that scaled latents of training clips have unit standard deviation."
    pipe.vae.register_to_config(scaling_factor=1.0)
    backbone = CogVideoXBackbone(pipe, device=device)
    pixels = render_scenes(sample_scenes(128, seed=seed, split="train", **TOY_CLIP), device).pixels
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        latents = encode_clips(backbone, pixels, batch_size=32).float()
    scaling = 1 / latents.std().item()
    pipe.vae.register_to_config(scaling_factor=scaling)
    return scaling


# -- phase 2: the transformer and the text encoder -------------------------------------------------------------

class LatentBank:
    "Latents and caption tokens of recent training clips; `refresh` replaces the oldest with fresh ones."
    def __init__(self, backbone, size: int, seed: int, device):
        self.backbone, self.size, self.seed, self.device, self.cursor, self.drawn = backbone, size, seed, device, 0, 0
        grid = backbone.token_grid(**TOY_CLIP)
        self.latents = torch.zeros(size, *grid.latent_shape, device=device)
        self.tokens = torch.zeros(size, TOY_TEXT_LENGTH, dtype=torch.long, device=device)
        self.refresh(size)

    def tokenize(self, captions: list[str]) -> torch.Tensor:
        return self.backbone.tokenizer(captions, padding="max_length", max_length=TOY_TEXT_LENGTH, truncation=True,
                                       add_special_tokens=True, return_tensors="pt").input_ids.to(self.device)

    @torch.no_grad()
    def refresh(self, count: int) -> None:
        for start in range(0, count, 512):
            n = min(512, count - start)
            scenes = sample_scenes(n, seed=2_000_000 * (self.seed + 1) + self.drawn, split="train", **TOY_CLIP)
            self.drawn += 1
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                pixels = render_scenes(scenes, self.device).pixels
                latents = encode_clips(self.backbone, pixels, batch_size=128).float()
            index = (self.cursor + torch.arange(n, device=self.device)) % self.size
            self.latents[index], self.tokens[index] = latents, self.tokenize(scene_captions(scenes))
            self.cursor = (self.cursor + n) % self.size


def training_timesteps(args, count: int, device) -> torch.Tensor:
    """(batch,) timestep indices in [0, count): uniform, or logit-normal. The default logit-normal (mean 0.8,
    deviation 1.3) draws 44% of its timesteps between t = 700 and 950, where objects' places, hence their motions, are
    settled."""
    if args.timesteps == "uniform": return torch.randint(0, count, (args.batch,), device=device)
    fraction = torch.sigmoid(args.timestep_mean + args.timestep_std * torch.randn(args.batch, device=device))
    return (fraction * count).long().clamp(0, count - 1)


def compile_blocks(blocks: torch.nn.ModuleList) -> list:
    "Replace each block by its compiled version (one graph serves blocks of one structure); returns the originals."
    originals = list(blocks)
    for index, block in enumerate(originals): blocks[index] = torch.compile(block)
    return originals


def transformer_optimizer(modules: list, args, device) -> torch.optim.AdamW:
    "AdamW over the modules' parameters: weight decay 0.01 on matrices that are neither norms nor embeddings."
    parameters = [p for m in modules for p in m.parameters()]
    decay = [p for m in modules for n, p in m.named_parameters()
             if p.ndim >= 2 and "norm" not in n and "embed" not in n]
    no_decay = [p for p in parameters if all(p is not q for q in decay)]
    return torch.optim.AdamW([dict(params=decay, weight_decay=0.01), dict(params=no_decay, weight_decay=0.0)],
                             lr=args.lr, betas=(0.9, 0.98), eps=1e-8, fused=device.type == "cuda")


def velocity_loss(pipe, bank: LatentBank, empty: torch.Tensor, alphas_cumprod: torch.Tensor, rotary, args,
                  device) -> torch.Tensor:
    "The v-prediction loss of one batch drawn from the bank, with `args.text_dropout` of its captions left empty."
    index = torch.randint(args.bank, (args.batch,), device=device)
    clean, tokens = bank.latents[index], bank.tokens[index]
    tokens = torch.where(torch.rand(args.batch, 1, device=device) < args.text_dropout, empty, tokens)
    timesteps = training_timesteps(args, len(alphas_cumprod), device)
    noise = torch.randn_like(clean)
    signal = alphas_cumprod[timesteps].sqrt().view(-1, 1, 1, 1, 1)
    sigma = (1 - alphas_cumprod[timesteps]).sqrt().view(-1, 1, 1, 1, 1)
    noisy, velocity = signal * clean + sigma * noise, signal * noise - sigma * clean
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        embeds = pipe.text_encoder(tokens)[0]
        predicted = pipe.transformer(hidden_states=noisy, encoder_hidden_states=embeds, timestep=timesteps,
                                     image_rotary_emb=rotary, return_dict=False)[0]
    return F.mse_loss(predicted.float(), velocity)


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, parameters: list, ema: list,
                   ema_decay: float, step: int) -> torch.Tensor:
    "Backward, clip the gradient to norm 1, step, and move the EMA of the weights; returns the gradient's norm."
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    optimizer.step()
    with torch.no_grad():
        rate = min(ema_decay, (1 + step) / (10 + step))
        torch._foreach_mul_(ema, rate); torch._foreach_add_(ema, [p.detach() for p in parameters], alpha=1 - rate)
    return grad_norm


def keep_history(history: list, step: int, elapsed: float, loss: torch.Tensor, grad_norm: torch.Tensor,
                 optimizer: torch.optim.Optimizer) -> None:
    "Every 50th step's numbers into `history` (and the log, every 250th)."
    if step % 50: return
    lr = optimizer.param_groups[0]["lr"]
    history.append(dict(step=step, seconds=round(elapsed, 1), loss=loss.item(), grad_norm=grad_norm.item(), lr=lr))
    if step % 250 == 0: log(f"transformer step {step}: loss {loss.item():.4f} lr {lr:.2e}")


def train_transformer(pipe, args, device, seconds: float, history: list,
                      state: dict | None = None) -> tuple[dict, list, list]:
    """Train the transformer and text encoder for `seconds` in all (the learning rate follows the fraction spent), from
    `state` if given (a paused run). With `args.pause_after`, stop after that many seconds of this run and return the
    state to save in `result["state"]`."""
    backbone = CogVideoXBackbone(pipe, device=device)
    rotary = backbone.rotary_embedding(backbone.token_grid(**TOY_CLIP))
    alphas_cumprod = backbone.scheduler.alphas_cumprod.to(device, torch.float32)
    filling = time.perf_counter()
    bank = LatentBank(backbone, args.bank, args.seed + (state["step"] if state else 0), device)
    log(f"latent bank of {args.bank} clips filled in {time.perf_counter() - filling:.1f} s; "
        f"latent std {bank.latents.std().item():.3f}")
    empty = bank.tokenize([""])
    modules = [pipe.transformer, pipe.text_encoder]
    parameters = [p for m in modules for p in m.parameters()]
    for m in modules: m.train().requires_grad_(True)
    optimizer = transformer_optimizer(modules, args, device)
    ema = [p.detach().clone() for p in parameters]
    step, spent, first_step_seconds = 0, 0.0, None
    if state:
        optimizer.load_state_dict(state["optimizer"])
        with torch.no_grad(): torch._foreach_copy_(ema, [v.to(device) for v in state["ema"]])
        step, spent, history[:] = state["step"], state["seconds"], state["history"]
        log(f"continuing at step {step} after {spent:.1f} s of training")
    originals = compile_blocks(pipe.transformer.transformer_blocks) if args.compile else None
    started, first_step, paused = time.perf_counter(), step, False
    while (elapsed := spent + time.perf_counter() - started) < seconds:
        if args.pause_after is not None and time.perf_counter() - started >= args.pause_after: paused = True; break
        for group in optimizer.param_groups: group["lr"] = learning_rate(elapsed / seconds, step, args.lr, args.warmup)
        if step > 0 and step % args.refresh_every == 0: bank.refresh(args.refresh)
        loss = velocity_loss(pipe, bank, empty, alphas_cumprod, rotary, args, device)
        grad_norm = optimizer_step(loss, optimizer, parameters, ema, args.ema, step)
        keep_history(history, step, elapsed, loss, grad_norm, optimizer)
        if step == first_step:
            if device.type == "cuda": torch.cuda.synchronize()
            first_step_seconds = time.perf_counter() - started
            log(f"first transformer step of this run took {first_step_seconds:.1f} s"
                + (" (compiling included)" if args.compile else ""))
        step += 1
    if originals:
        for index, block in enumerate(originals): pipe.transformer.transformer_blocks[index] = block
    for m in modules: m.eval().requires_grad_(False)
    run_seconds = time.perf_counter() - started
    spent += run_seconds
    runs = (state or {}).get("runs", []) + [dict(first_step=first_step, steps=step - first_step, seconds=run_seconds,
                                                 first_step_seconds=first_step_seconds)]
    result = dict(steps=step, seconds=spent, runs=runs, clips_seen=step * args.batch,
                  fresh_clips=args.bank * len(runs)
                  + sum(max(r["steps"] - 1, 0) // args.refresh_every for r in runs) * args.refresh)
    if paused:
        result["state"] = dict(step=step, seconds=spent, history=history, runs=runs, optimizer=optimizer.state_dict(),
                               ema=[v.cpu() for v in ema], transformer=pipe.transformer.state_dict(),
                               text_encoder=pipe.text_encoder.state_dict())
    return result, parameters, ema


def swap(parameters: list, values: list) -> list:
    "Put `values` into `parameters`; returns the values they held."
    held = [p.detach().clone() for p in parameters]
    with torch.no_grad(): torch._foreach_copy_(parameters, values)
    return held


def adherence_score(result: dict) -> float:
    rates = result["all_objects"]
    return rates["colour"] + rates["shape"] + rates["motion"]


# -- saving and the model card -----------------------------------------------------------------------------------

def save_pipeline(pipe, folder: Path) -> Path:
    "Save the pipeline in float16 to `folder`, whole or not at all (it goes on in float32)."
    with atomic_write(folder) as partial:
        pipe.to(torch.float16)
        pipe.save_pretrained(partial, safe_serialization=True)
        pipe.to(torch.float32)
    return folder


def folder_megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def model_card(log_data: dict) -> str:
    "The model card (README.md) of a trained and evaluated model, from its log."
    e, v, t, a = log_data["evaluation"], log_data["vae"], log_data["transformer"], log_data["args"]
    rates = lambda r: f"{r['colour']:.0%} | {r['shape']:.0%} | {r['motion']:.0%} | {r['objects']}"
    made = [
        f"- Script: `bench/train_toy_model.py` (seed {a['seed']}), on {log_data['device_name']}, "
        f"torch {log_data['torch']}, diffusers {log_data['diffusers']}.",
        f"- Data: scenes drawn on the fly by `dynvfx.toy_world.sample_scenes(split=\"train\")` (captions whose CRC-32 "
        f"is divisible by 10 are held out and never trained on), rendered at {TOY_CLIP['num_frames']} frames of "
        f"{TOY_CLIP['height']}x{TOY_CLIP['width']}.",
        f"- VAE (`AutoencoderKLCogVideoX`, channels 32/64/64, 16 latent channels, 4x spatial and 4x temporal "
        f"compression): {v['steps']} steps of {a['vae_batch']} clips in {v['seconds']:.0f} s; loss MSE + "
        f"{a['vae_l1']} L1 + {a['vae_kl']} KL; AdamW, peak learning rate {a['vae_lr']}, cosine decay; scaling factor "
        f"{log_data['scaling_factor']:.4f} (unit standard deviation of the scaled latents).",
        f"- Transformer (`CogVideoXTransformer3DModel`, 8 layers, 4 heads of 64, patch 2, rotary positions, text "
        f"length {TOY_TEXT_LENGTH}) and text encoder (T5, {log_data['text_layers']} layers, width 128, word-level "
        f"tokenizer over `TOY_WORDS`), trained together: {t['steps']} steps of {a['batch']} clips in "
        f"{t['seconds']:.0f} s ({t['fresh_clips']} distinct clips); v-prediction with CogVideoX-5B's scheduler "
        f"settings (`CogVideoXDDIMScheduler`, zero terminal SNR, trailing spacing), {a['timesteps']} timesteps, "
        f"{a['text_dropout']:.0%} empty captions; AdamW, peak learning rate {a['lr']}, {a['warmup']} warm-up steps, "
        f"cosine decay; EMA {a['ema']}. Weights kept: {log_data['weights_kept']} (chosen on {a['validation_count']} "
        f"validation captions, seed {VALIDATION_SEED}, not the evaluation captions).",
        f"- Final training losses: VAE {log_data['vae_history'][-1]['loss']:.5f}, transformer "
        f"{log_data['transformer_history'][-1]['loss']:.4f} (full curves in `train_log.json`).",
        f"- Stored in float16: {log_data['megabytes']:.1f} MB in all.",
        log_data.get("resumed_note", ""),
    ]
    return f"""# dynvfx toy model

A tiny text-to-video model of the CogVideoX architecture, trained from scratch on synthetic scenes of
`dynvfx.toy_world` (coloured circles, squares, triangles and boxes moving over plain or textured backgrounds,
captions like "a small green square moves right and a large brown box stays still on a gray background").
It exists so that the DynVFX demo, the tutorials and the attention maps run on a CPU with a model whose pictures
mean something. It is a diffusers `CogVideoXPipeline` folder: load it with
`dynvfx.backbone.load_backbone(ModelSettings(model_id=<this folder>, dtype="float32", device="cpu"))` or
`dynvfx.toy_world.load_toy_model()`.

## How it was made

{chr(10).join(made)}
## Evaluation

Measured by `dynvfx.toy_world.evaluate_toy_model` on the saved weights loaded back through `load_backbone`
({e['device']}, float32): {e['captions']} held-out captions (seed {e['seed']}), {e['steps']} DDIM steps, \
classifier-free
guidance {e['guidance_scale']}, each clip read back by the colour, shape and motion detectors of `dynvfx.toy_world`.

- VAE reconstruction of {e['captions']} held-out clips: **{e['vae_psnr_db']:.2f} dB** PSNR (target: 32 dB).

| captions | named colour found | named shape | named motion | objects |
| --- | --- | --- | --- | --- |
| every object of every caption | {rates(e['all_objects'])} |
| captions of one object | {rates(e['single_object_captions'])} |

Targets (issue 11): colour 90%, shape 70%, motion 70%.
{log_data.get('extra_evaluation', '')}"""


# -- the run, part by part -------------------------------------------------------------------------------------------

def start_log(args: argparse.Namespace, device: torch.device) -> dict:
    "The run's log: its arguments, versions and device (histories filled as it trains)."
    import diffusers
    log_data = dict(args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                    torch=torch.__version__, diffusers=diffusers.__version__,
                    device_name=torch.cuda.get_device_name() if device.type == "cuda" else "CPU",
                    vae_history=[], transformer_history=[])
    log(f"device {log_data['device_name']}; output {args.out}")
    return log_data


def starting_pipeline(args: argparse.Namespace, device: torch.device, log_data: dict):
    "Random weights, or the --resume model (with a fresh transformer and text encoder if asked), on `device`."
    if args.resume:
        pipe = load_backbone(ModelSettings(model_id=str(args.resume), dtype="float32", device=str(device))).pipe
    else: pipe = toy_pipeline(seed=args.seed, text_layers=args.text_layers)
    if args.fresh_transformer:
        if not args.resume:
            raise SystemExit("--fresh-transformer needs --resume (the model whose VAE and tokenizer to keep)")
        fresh = toy_pipeline(seed=args.seed, text_layers=args.text_layers)
        pipe.register_modules(transformer=fresh.transformer, text_encoder=fresh.text_encoder)
    pipe.to(device)
    log_data["parameters"] = {n: sum(p.numel() for p in getattr(pipe, n).parameters())
                              for n in ("vae", "transformer", "text_encoder")}
    log_data["text_layers"] = pipe.text_encoder.config.num_layers
    log(f"parameters {log_data['parameters']}")
    return pipe


def vae_phase(pipe, args: argparse.Namespace, device: torch.device, log_data: dict) -> None:
    "Train the VAE and set its scaling factor (saving it to OUT/vae_checkpoint), or record the one kept."
    if args.vae_seconds > 0:
        log_data["vae"] = train_vae(pipe.vae, args, device, log_data["vae_history"])
        if args.decoder_only: log_data["scaling_factor"] = pipe.vae.config.scaling_factor
        else: log_data["scaling_factor"] = set_scaling_factor(pipe, device, seed=3_000_000)
        log(f"vae done: {log_data['vae']}; scaling factor {log_data['scaling_factor']:.4f}")
        with atomic_write(args.out / "vae_checkpoint") as partial: pipe.vae.to(torch.float16).save_pretrained(partial)
        pipe.vae.to(torch.float32)
    else:
        log_data["vae"] = dict(steps=0, seconds=0.0, clips=0)
        log_data["scaling_factor"] = pipe.vae.config.scaling_factor
        if args.resume:
            log_data["resumed_note"] = (
                f"- VAE and tokenizer from {args.resume}; transformer and text encoder trained from random weights."
                if args.fresh_transformer else f"- Continued from {args.resume} (VAE kept as it was).")
    log_data["vae_history"] = log_data["vae_history"] or [dict(loss=float("nan"))]


def transformer_phase(pipe, args: argparse.Namespace, device: torch.device, log_data: dict,
                      state: dict | None) -> tuple[float, list, list]:
    """Train the transformer and text encoder within the time left (from a paused state if given); returns the
    seconds of training in all (the schedule's length), the trained parameters and their moving average."""
    seconds = args.transformer_seconds
    if state:
        pipe.transformer.load_state_dict(state["transformer"])
        pipe.text_encoder.load_state_dict(state["text_encoder"])
        seconds = state["total_seconds"]
    room = args.deadline - (time.perf_counter() - STARTED)
    if args.pause_after is not None: args.pause_after = min(args.pause_after, room - 15)
    else: seconds = min(seconds, (state["seconds"] if state else 0.0) + room - args.eval_reserve)
    log(f"training the transformer for {seconds:.0f} s in all"
        + (f", pausing after {args.pause_after:.0f} s" if args.pause_after is not None else ""))
    log_data["transformer"], parameters, ema = train_transformer(pipe, args, device, seconds,
                                                                 log_data["transformer_history"], state)
    return seconds, parameters, ema


def pause(args: argparse.Namespace, log_data: dict, seconds: float) -> None:
    "Write the paused training's state (of a schedule `seconds` long) to --state, whole or not at all."
    paused = dict(log_data["transformer"].pop("state"), total_seconds=seconds, args=log_data["args"])
    with atomic_write(args.state) as partial: torch.save(paused, partial)
    log(f"paused after step {paused['step']} ({paused['seconds']:.1f} s of {seconds:.0f}); state in {args.state}; "
        f"continue with --continue")


def probe_report(args: argparse.Namespace, log_data: dict) -> None:
    "With --probe: the steps a second and clips a second after the first step."
    run = log_data["transformer"]["runs"][-1]
    if run["steps"] > 1:
        rate = (run["steps"] - 1) / max(run["seconds"] - run["first_step_seconds"], 1e-9)
        log(f"probe: {rate:.2f} steps/s after the first step ({1000 / rate:.1f} ms a step of {args.batch} clips; "
            f"{rate * args.batch:.0f} clips/s)")


def keep_best_weights(pipe, args: argparse.Namespace, device: torch.device, log_data: dict, parameters: list,
                      ema: list) -> None:
    "Validate the EMA and the raw weights on the validation captions and keep the better ones in the pipeline."
    validation = {}
    for name in ("ema", "raw"):
        if name == "ema": raw = swap(parameters, ema)
        else: swap(parameters, raw)
        backbone = CogVideoXBackbone(pipe, device=device)                      # a fresh prompt cache for these weights
        validation[name] = evaluate_toy_model(backbone, count=args.validation_count, seed=VALIDATION_SEED,
                                              steps=args.eval_steps, batch_size=64, vae_count=8, progress=False)
        validation[name].pop("records")
        log(f"validation ({name} weights): {validation[name]['all_objects']}")
    log_data["validation"] = validation
    log_data["weights_kept"] = max(validation, key=lambda k: adherence_score(validation[k]))
    if log_data["weights_kept"] == "ema": swap(parameters, ema)


def evaluate_only(args: argparse.Namespace, device: torch.device) -> dict:
    "With --evaluate-only: evaluate the model a run saved in OUT."
    if not (args.out / "train_log.json").exists() or not (args.out / "toy_model" / "model_index.json").exists():
        raise SystemExit(f"{args.out}: no trained model (toy_model/ and train_log.json) to evaluate; train one first")
    log_data = json.loads((args.out / "train_log.json").read_text())
    log_data["evaluation_device_name"] = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    return evaluate_saved(args, log_data, device)


def main(argv=None) -> dict:
    args = parse_args(argv)
    state = paused_training(args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.evaluate_only: return evaluate_only(args, device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    log_data = start_log(args, device)
    pipe = starting_pipeline(args, device, log_data)
    vae_phase(pipe, args, device, log_data)
    seconds, parameters, ema = transformer_phase(pipe, args, device, log_data, state)
    if "state" in log_data["transformer"]:
        pause(args, log_data, seconds)
        return log_data
    log(f"transformer done: {log_data['transformer']}")
    if args.probe:
        probe_report(args, log_data)
        return log_data
    keep_best_weights(pipe, args, device, log_data, parameters, ema)
    folder = save_pipeline(pipe, args.out / "toy_model")
    log_data["megabytes"] = folder_megabytes(folder)
    log(f"saved {folder} ({log_data['megabytes']:.1f} MB)")
    log_data["training_seconds"] = time.perf_counter() - STARTED
    write_json(args.out / "train_log.json", log_data)
    if args.no_evaluation:
        log(f"trained in {log_data['training_seconds']:.0f} s; evaluate with --evaluate-only")
        return log_data
    return evaluate_saved(args, log_data, device)


def evaluate_saved(args: argparse.Namespace, log_data: dict, device: torch.device) -> dict:
    "Evaluate the saved model of OUT/toy_model (captions, VAE), draw the figure clips, write the model card and log."
    started = time.perf_counter()
    folder = args.out / "toy_model"
    loaded = load_backbone(ModelSettings(model_id=str(folder), dtype="float32", device=str(device)))
    evaluation = evaluate_toy_model(loaded, count=args.eval_count, seed=EVAL_SEED, steps=args.eval_steps,
                                    batch_size=64, progress=False)
    log_data["evaluation_records"] = evaluation.pop("records")
    log_data["evaluation"] = evaluation
    log(f"evaluation: VAE {evaluation['vae_psnr_db']:.2f} dB; all objects {evaluation['all_objects']}; "
        f"single {evaluation['single_object_captions']}")
    if args.eval_count and not args.smoke: evaluate_guidance_3(args, loaded, log_data)
    figure_captions = scene_captions(sample_scenes(2 if args.smoke else 16, seed=VALIDATION_SEED + 1, split="heldout",
                                                   **TOY_CLIP))
    figure_clips = generate_clips(loaded, figure_captions, seed=VALIDATION_SEED + 1, steps=args.eval_steps,
                                  batch_size=64, progress=False)
    with atomic_write(args.out / "figure_clips.pt") as partial:
        torch.save(dict(captions=figure_captions, clips=(figure_clips * 255).round().to(torch.uint8)), partial)
    log_data["evaluation_seconds"] = time.perf_counter() - started
    atomic_write_text(folder / "README.md", model_card(log_data))
    write_json(args.out / "train_log.json", log_data)
    log(f"evaluated in {log_data['evaluation_seconds']:.0f} s")
    return log_data


def evaluate_guidance_3(args: argparse.Namespace, loaded, log_data: dict) -> None:
    "The same evaluation with guidance 3 instead of 6, for the model card."
    extra = evaluate_toy_model(loaded, count=args.eval_count, seed=EVAL_SEED, steps=args.eval_steps,
                               guidance_scale=3.0, batch_size=64, vae_count=8, progress=False)
    extra.pop("records")
    log_data["evaluation_guidance_3"] = extra
    rates = extra["all_objects"]
    log_data["extra_evaluation"] = (f"\nWith guidance 3 instead of 6 (same captions): colour {rates['colour']:.0%}, "
                                    f"shape {rates['shape']:.0%}, motion {rates['motion']:.0%} (every object).\n")
    log(f"evaluation at guidance 3: {extra['all_objects']}")


if __name__ == "__main__":
    main()
