"""Make data/sample/frames: the bundled sample clip (17 frames, 96x64), drawn from scratch with numpy and Pillow.

A toy scene in the style of dynvfx's synthetic world: a brown box stands on a grey floor in front of a pale wall
while a green square slides from left to right behind it. Every pixel is computed here from a fixed seed, so the
clip has no third-party origin. Run `python data/make_sample.py` from the repository root to rebuild it.
"""
from pathlib import Path

import numpy as np
from PIL import Image

FRAMES, HEIGHT, WIDTH = 17, 64, 96


def render(index: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    frame = np.empty((HEIGHT, WIDTH, 3), np.float32)
    frame[:] = (0.86, 0.84, 0.78)                      # wall
    floor = y >= 44
    frame[floor] = (0.55, 0.55, 0.57)                  # floor
    frame *= 1 - 0.08 * (x / WIDTH)[..., None]         # soft light from the left
    left = 6 + index * 4                               # green square slides right, 4 px a frame
    frame[24:38, left:left + 14] = (0.20, 0.70, 0.25)
    frame[34:54, 38:62] = (0.55, 0.36, 0.18)           # brown box, in front
    frame[34:36, 38:62] = (0.45, 0.28, 0.13)           # its lid edge
    frame += rng.normal(0, 0.01, frame.shape)          # a little sensor noise
    return (frame.clip(0, 1) * 255).round().astype(np.uint8)


if __name__ == "__main__":
    folder = Path(__file__).parent / "sample" / "frames"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(FRAMES): Image.fromarray(render(i, rng)).save(folder / f"{i:05d}.png")
    print(f"wrote {FRAMES} frames to {folder}")
