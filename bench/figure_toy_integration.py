"""Where the new object's tokens look in the source, per configuration, on the toy integration scenes (issue 25).

For the first case of each kind of `bench/eval_toy_integration.py` (sampling seed 0), every configuration but
`one_pass` (the default's first pass) runs again exactly as there, now with a `dynvfx.attention_viz`
`AttentionRecorder` whose query points are all the video tokens of one grid frame: the one holding the middle frame in
which the ground truth shows the new object. After the edit, the new object's tokens are those its blob covers in that
frame of the result. For each configuration the script draws `show_correspondence(kind="anchor")` for the token at
the new object's centre: its real attention weights on the source branch's anchor tokens, averaged over every
recorded step inside the anchor window and every layer, over the source frames (`anchors_off` has none: the
extension never runs). And it measures, averaged over all the new object's tokens:

- `anchor_share`: how much of a token's attention goes to the anchors at all (the rest: its own text and video);
- `on_expected_share`: of that, the share on anchor tokens within one token of where the new object should be in
  each source frame (its centre in the result's query frame, moved as the ground truth's new object moves: with the
  pan for `still_in_pan`), against `on_expected_area`, those tokens' share of all anchors (what attention spread
  evenly over the anchors would give).

Figures: bench/results/figures/toy_integration_<kind>_<configuration>.png; numbers:
bench/results/toy_integration_attention.json (with each edit's integration reading, as the evaluation measures it).

  nice -n 10 python -m bench.figure_toy_integration                 # three cases, six configurations (CPU, ~15 min)
  python -m bench.figure_toy_integration --smoke                    # one case, few steps, temporary folder
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from bench.common import RESULTS_DIR, write_json
from bench.eval_toy_dynvfx import SMOKE_OVERRIDES, load_model
from bench.eval_toy_integration import (KINDS, MAIN_CONFIGURATIONS, colour_blobs, integration_cases, object_track,
                                       run_case)
from dynvfx.attention_viz import AttentionRecorder, grid_frame_pixels, show_correspondence, token_point
from dynvfx.toy_world import TOY_CLIP, render_scenes

FIGURES = RESULTS_DIR / "figures"
NUMBERS = RESULTS_DIR / "toy_integration_attention.json"
SHOWN = [name for name in MAIN_CONFIGURATIONS if name != "one_pass"]


def query_frame(case: dict, grid) -> tuple[int, torch.Tensor]:
    """The pixel frame whose grid frame's tokens are recorded as queries (the middle frame where the truth shows the
    new object), and the truth's track (F, 2) (x, y)."""
    truth = render_scenes(case["truth"]).pixels[0]
    centres, seen, _ = object_track(truth, case["new"].colour)
    return int(seen.nonzero()[len(seen.nonzero()) // 2]), centres


def frame_points(grid, frame: int) -> list[tuple[int, int, int]]:
    "Every video token of the grid frame that holds pixel frame `frame`, as recorder points."
    grid_frame = token_point(grid, frame, 0, 0)[0]
    return [(grid_frame, row, column) for row in range(grid.grid_height) for column in range(grid.grid_width)]


def new_object_points(case: dict, grid, pixels: torch.Tensor, frame: int) -> tuple[list[int], tuple[float, float]]:
    "Indices into `frame_points` of the tokens the result's new object covers in `frame`, and its centre (x, y)."
    centres, seen, _ = object_track(pixels[frame:frame + 1], case["new"].colour)
    if not seen[0]: return [], (float("nan"), float("nan"))
    blob = colour_blobs(pixels[frame:frame + 1], case["new"].colour)[0]
    tokens = {token_point(grid, frame, y + 0.5, x + 0.5)[1:] for y, x in blob.nonzero().tolist()}
    return sorted(row * grid.grid_width + column for row, column in tokens), tuple(centres[0].tolist())


def expected_tokens(grid, frame: int, centre: tuple[float, float], truth: torch.Tensor) -> torch.Tensor:
    """(F_grid, gh, gw) True within one token of where the new object should be in each grid frame: its centre in
    `frame`, moved as the truth's new object moves from `frame` (with the pan for `still_in_pan`)."""
    near = torch.zeros(grid.grid_frames, grid.grid_height, grid.grid_width, dtype=torch.bool)
    for grid_frame, pixels in enumerate(grid_frame_pixels(grid)):
        middle = pixels[len(pixels) // 2]
        x, y = (torch.tensor(centre) + truth[middle] - truth[frame]).tolist()
        _, row, column = token_point(grid, middle, min(max(y, 0), grid.height - 1), min(max(x, 0), grid.width - 1))
        near[grid_frame, max(row - 1, 0):row + 2, max(column - 1, 0):column + 2] = True
    return near


def attention_numbers(recorder: AttentionRecorder, points: list[int], near: torch.Tensor) -> dict:
    "The new object's tokens' share of attention on the anchors, and how much of it lands where it should."
    records = recorder.records_at("mean", "mean", active_only=True)
    maps = torch.stack([r.point_anchor[points].mean(1) for r in records]).mean(0)      # (P, F, gh, gw)
    anchors = torch.zeros(maps[0].numel(), dtype=torch.bool)
    for record in records: anchors[record.anchor_indices] = True
    anchors, totals = anchors.view_as(maps[0]), maps.flatten(1).sum(-1)
    return dict(tokens=len(points), anchor_share=totals.mean().item(),
                on_expected_share=((maps * near).flatten(1).sum(-1) / totals.clamp(min=1e-12)).mean().item(),
                on_expected_area=(anchors & near).sum().item() / max(anchors.sum().item(), 1), records=len(records))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="one case, few steps, into a temporary folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    figures, numbers_path, overrides = FIGURES, NUMBERS, {}
    if args.smoke:
        figures = Path(tempfile.mkdtemp(prefix="toy-integration-figures-")); numbers_path = figures / NUMBERS.name
        overrides = dict(SMOKE_OVERRIDES)
    backbone = load_model("toy")
    grid = backbone.token_grid(TOY_CLIP["num_frames"], TOY_CLIP["height"], TOY_CLIP["width"])
    cases = integration_cases(1 if args.smoke else 10)
    chosen = [next(c for c in cases if c["kind"] == kind) for kind in (KINDS[:1] if args.smoke else KINDS)]
    numbers = {}
    for case in chosen:
        frame, truth = query_frame(case, grid)
        points = frame_points(grid, frame)
        names = SHOWN[:2] if args.smoke else SHOWN
        observers = {(name, 0): AttentionRecorder(grid, points=points) for name in names}
        results, records = {}, {}
        with tempfile.TemporaryDirectory(prefix="toy-integration-figure-") as work:
            run_case(backbone, case, [(name, 0) for name in names], Path(work), overrides,
                     lambda name, seed, record: records.__setitem__(name, record), max_threads=args.threads,
                     observers=observers, results=results)
        original = render_scenes(case["scene"]).pixels[0]
        entry = numbers[case["kind"]] = dict(case=case["index"], instruction=case["instruction"], frame=frame,
                                             configurations={})
        for name in names:
            recorder, reading = observers[name, 0], dict(integration=records[name]["integration"])
            pixels = results[name, 0].pixels
            covered, centre = new_object_points(case, grid, pixels, frame)
            if covered and any(r.active for r in recorder.records.values()):
                reading.update(attention_numbers(recorder, covered, expected_tokens(grid, frame, centre, truth)))
                middle = frame_points(grid, frame).index(token_point(grid, frame, centre[1], centre[0]))
                shown = middle if middle in covered else covered[len(covered) // 2]
                figure = show_correspondence(recorder, shown, call="mean", layer="mean", kind="anchor",
                                             pixels=pixels, source_pixels=original)
                figure.suptitle(f"{case['kind']}, {name}: \"{case['instruction']}\"\nthe new object's token "
                                f"{points[shown]} on the source's anchors (mean over steps and layers)", fontsize=8)
                figures.mkdir(parents=True, exist_ok=True)
                figure.savefig(figures / f"toy_integration_{case['kind']}_{name}.png", dpi=80)
                plt.close(figure)
            elif not covered: reading["note"] = f"the new object is not in frame {frame} of the result"
            entry["configurations"][name] = reading
            print(case["kind"], name, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in reading.items()
                                       if k != "integration"}, flush=True)
    write_json(numbers_path, numbers)
    print(f"figures in {figures}, numbers in {numbers_path}")


if __name__ == "__main__":
    main()
