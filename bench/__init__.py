"""dynvfx's benchmarks: run each from the repository root as a module, e.g. `python -m bench.bench_edit --help`.

`bench.common` holds what they share (CogVideoX-5B-shaped models with random weights, timing, writing results);
`bench/README.md` lists the scripts and what they measured; `bench/results/` keeps the raw results."""
