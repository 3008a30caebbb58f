"""Every lesson notebook, top to bottom, on a CogVideoX-5B-shaped pipeline with random weights (issue 24, item 2).

The script builds a CogVideoX pipeline of CogVideoX-5B's shapes with seeded random weights (transformer, VAE and a
T5-XXL-shaped text encoder: `bench.common.build_pipeline`) and a full-size SAM 3 with random weights
(`bench.bench_edit.build_sam3`), saves both with `save_pretrained` where a user's models would be, and runs each
lesson notebook with its lesson settings pointing there (`DYNVFX_LESSON_MODEL`, `DYNVFX_LESSON_DEVICE=cuda`,
`DYNVFX_LESSON_SEGMENTER`, `DYNVFX_LESSON_OVERRIDES`; 02_config, "What the lessons run on"). Each notebook runs in a
process of its own through the runner of the tests (`tools.build_docs.execute_notebook`), which records its wall
time, its peak GPU memory and how many of its cells said they were skipped (the checks on tiny models).

The clip is a toy-world scene of 49 frames (the demo's green square and brown box, 64x96, brought to 720x480 by
the lessons), so that one model window of CogVideoX-5B is filled; the sample clip has 17. Random weights draw
noise, so this checks that every cell runs at full size on the GPU (devices, dtypes, memory, progress) and what it
costs, not what the pictures show. `--overrides` shortens the lessons' edits so that all of them fit the device's
calls; the defaults below say by how much.

  python -m bench.run_lessons --models /tmp/lessons --out results/     # build the models once, run every lesson
  python -m bench.run_lessons --models /tmp/lessons --notebooks 03_backbone 04_inversion
  python -m bench.run_lessons --smoke                                   # tiny models on the CPU: checks the script
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import build_pipeline, json_text, write_json
from dynvfx.core import atomic_write

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ("03_backbone", "04_inversion", "06_segmentation", "07_anchor_attention", "14_pipeline",
           "15_attention_viz")
# a 50-step inversion grid and one refinement pass (from t = 899, the anchor window inside it): the lessons' edits at
# full size in minutes rather than the default edit's ten
FULL_SIZE_OVERRIDES = "inversion.steps=50 refinement.pass_timesteps=[899]"
SMOKE_OVERRIDES = ("video.num_frames=9 video.height=32 video.width=48 model.dtype=float32 inversion.steps=20 "
                   "sampling.steps=10 refinement.pass_timesteps=[899] anchors.window=[599,899]")


def build_models(folder: Path, smoke: bool, device: torch.device, dtype: torch.dtype) -> tuple[Path, Path, float]:
    "The CogVideoX pipeline and SAM 3 folders under `folder`, built and saved unless there; the seconds it took."
    from bench.bench_edit import build_sam3
    started, model, sam3 = time.perf_counter(), folder / "cogvideox", folder / "sam3"
    if not (model / "model_index.json").exists():
        pipeline = build_pipeline(smoke, device, dtype)
        with atomic_write(model) as partial: pipeline.save_pretrained(partial)
        del pipeline
    build_sam3(smoke, sam3, device, dtype)  # saves the checkpoint on its first call
    if device.type == "cuda": torch.cuda.empty_cache()
    return model, sam3, time.perf_counter() - started


def write_clip(folder: Path, num_frames: int) -> Path:
    "The lessons' clip: the demo's scene (a green square moving right, a brown box) for `num_frames` frames."
    from dynvfx.toy_world import ToyObject, make_scene, render_scenes
    from dynvfx.video_io import write_frames
    scene = make_scene([ToyObject("green", "square", "small", "right", x=14, y=40, speed=0.7),
                        ToyObject("brown", "box", "large", "still", x=34, y=34)], num_frames=num_frames, height=64,
                       width=96)
    return write_frames(render_scenes(scene).pixels[0], folder)


def run_one(name: str, result_file: Path) -> None:
    "Run one notebook in this process (the environment holds its lesson settings); write what it cost."
    from tools import build_docs
    if torch.cuda.is_available(): torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    record: dict = {"notebook": name}
    try:
        executed = build_docs.execute_notebook(build_docs.NBS / f"{name}.ipynb", cache=None)
        texts = ["".join(output.get("text", [])) for cell in executed.cells for output in cell.get("outputs", [])
                 if output.get("output_type") == "stream"]
        record.update(ok=True, skipped_cells=sum(text.startswith("skipped: ") for text in texts))
    except build_docs.NotebookError as error:
        record.update(ok=False, error=str(error)[-3000:])
    record["wall_s"] = round(time.perf_counter() - started, 1)
    if torch.cuda.is_available(): record["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    write_json(result_file, record, 2)


def run_lessons(names: list[str], environment: dict[str, str], work: Path) -> dict[str, dict]:
    "Each notebook in a fresh process with the lesson settings in its environment; their records."
    records = {}
    for name in names:
        result_file = work / f"{name}.json"
        command = [sys.executable, "-m", "bench.run_lessons", "--one", name, "--result", str(result_file)]
        done = subprocess.run(command, cwd=ROOT, env={**os.environ, **environment})
        records[name] = (json.loads(result_file.read_text()) if result_file.exists() else
                         {"notebook": name, "ok": False, "error": f"the process exited with {done.returncode}"})
        print(json_text({name: {k: v for k, v in records[name].items() if k != "error"}}, 1), flush=True)
        if not records[name]["ok"]: print(records[name]["error"], file=sys.stderr, flush=True)
    return records


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=None, help="folder for the built models (kept between calls)")
    parser.add_argument("--notebooks", nargs="+", default=list(LESSONS), choices=LESSONS)
    parser.add_argument("--overrides", default=None, help="DYNVFX_LESSON_OVERRIDES (default: see the module)")
    parser.add_argument("--out", type=Path, default=None, help="folder for lessons.json")
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one: return run_one(args.one, args.result)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    dtype = torch.float32 if args.smoke else torch.bfloat16
    with tempfile.TemporaryDirectory() as scratch:
        models = args.models or Path(scratch)
        model, sam3, build_s = build_models(models, args.smoke, device, dtype)
        overrides = args.overrides if args.overrides is not None else (
            SMOKE_OVERRIDES if args.smoke else FULL_SIZE_OVERRIDES)
        clip = write_clip(Path(scratch) / "clip", 9 if args.smoke else 49)
        environment = {"DYNVFX_LESSON_MODEL": str(model), "DYNVFX_LESSON_SEGMENTER": str(sam3),
                       "DYNVFX_LESSON_DEVICE": device.type, "DYNVFX_LESSON_OVERRIDES": overrides,
                       "DYNVFX_LESSON_CLIP": str(clip)}
        records = run_lessons(args.notebooks, environment, Path(scratch))
    results = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
               "models_build_s": round(build_s, 1), "settings": environment, "notebooks": records}
    if args.out: write_json(args.out / "lessons.json", results, 1)
    return results


if __name__ == "__main__":
    main()
