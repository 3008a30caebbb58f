"""Why the toy Wan's VAE compresses 4x in space: the 8x VAE, trained alone, and its train PSNR (issue 22, item 5).

The toy Wan's second attempt used Wan 2.1's 8x spatial compression (`AutoencoderKLWan`, base 32, `dim_mult
[1, 2, 2, 2]`, 32 latent channels) with the posterior log-variance started at -8, and its VAE stayed at 14-15 dB. This
probe trains that VAE alone for a few minutes under one variant, to see whether the learning rate, the precision or the
decoder's output clamp (diffusers clamps the decoded video to [-1, 1], which stops the gradient of saturated pixels) is
the cause. Four variants ran side by side on one H200 (results/toy_wan_vae_8x_probe.json); all read 14.0-14.8 dB at
their last logged step (75-100), where the CogVideoX toy's VAE read 22.8 dB at step 100, and the 4x VAE of
data/toy_wan reached 20 dB by step 300. It is a GPU probe: a step of 32 clips takes minutes on a 2-core CPU.

    python -m bench.probe_toy_wan_vae base 1e-3 130 0 1      # name, learning rate, seconds, unclamped, bf16 autocast
    python -m bench.probe_toy_wan_vae noclamp 1e-3 130 1 1
"""
import math
import sys
import time

import torch
import torch.nn.functional as F

from dynvfx.toy_world import TOY_CLIP, render_scenes, sample_scenes

EIGHT_X = dict(base_dim=32, dim_mult=[1, 2, 2, 2], num_res_blocks=2, temperal_downsample=[False, True, True],
               scale_factor_spatial=8)  # the second attempt's VAE
LATENT_CHANNELS = 32


def eight_x_vae(initial_logvar: float = -8.0):
    "The second attempt's VAE as `bench.train_toy_wan.toy_wan` built it then (seed 1, log-variance bias at -8)."
    from diffusers import AutoencoderKLWan
    torch.manual_seed(1)
    vae = AutoencoderKLWan(z_dim=LATENT_CHANNELS, latents_mean=[0.0] * LATENT_CHANNELS,
                           latents_std=[1.0] * LATENT_CHANNELS, **EIGHT_X)
    with torch.no_grad(): vae.quant_conv.bias[LATENT_CHANNELS:] += initial_logvar
    return vae


def unclamped_decoder() -> None:
    "Let diffusers' Wan VAE decode without its final clamp to [-1, 1] (this probe's process only)."
    import diffusers.models.autoencoders.autoencoder_kl_wan as wan_vae

    class TorchWithoutClamp:
        def __getattr__(self, name): return getattr(torch, name)
        @staticmethod
        def clamp(x, min=None, max=None): return x
    wan_vae.torch = TorchWithoutClamp()


def main(name: str, lr: float, seconds: float, unclamped: bool, bf16: bool) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    vae = eight_x_vae().to(device).train()
    if unclamped: unclamped_decoder()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0)
    started, step = time.time(), 0
    while time.time() - started < seconds:
        scenes = sample_scenes(32, seed=step, split="train", **TOY_CLIP)
        video = render_scenes(scenes, device).pixels.permute(0, 2, 1, 3, 4) * 2 - 1
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda"):
            reconstruction = vae.decode(vae.encode(video).latent_dist.sample()).sample
        mse = F.mse_loss(reconstruction.float(), video)
        loss = mse + 0.1 * F.l1_loss(reconstruction.float(), video)
        optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        if step % 25 == 0:
            saturated = (reconstruction.detach().abs() >= 1).float().mean().item()
            psnr = 10 * math.log10(4 / mse.item())                       # pixels span 2 in [-1, 1]
            print(name, step, f"{psnr:.2f} dB gn {grad_norm.item():.3f} sat {saturated:.4f} "
                  f"{time.time() - started:.0f}s", flush=True)
        step += 1


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1", sys.argv[5] == "1")
