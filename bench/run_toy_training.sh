#!/usr/bin/env bash
# Run `python -m bench.train_toy_model` on the lent GPU machine (see bench/train_toy_model.py).
# usage, from the repository root there: bash bench/run_toy_training.sh [training arguments...]
# Needs $OUT; packs the pipeline folder into $OUT/toy_model.tar.partNN (15 MB pieces: cat them to rebuild the tar).
# Installs the wheels of .whl/ (and of $EXTRA_WHEELS, a folder of wheels .whl lacks) unless SKIP_WHEELS is set.
set -o pipefail
if [ -z "$SKIP_WHEELS" ]; then
  extra=$([ -n "$EXTRA_WHEELS" ] && ls "$EXTRA_WHEELS"/*.whl 2>/dev/null)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl $extra || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader 2>/dev/null
python3 -c "import torch, diffusers, transformers, pydantic
print(*(f'{m.__name__} {m.__version__}' for m in (torch, diffusers, transformers, pydantic)))" || exit 1
run=${RUN_DIR:-/tmp/toy_run}
python3 -m bench.train_toy_model --out $run "$@" 2>&1 | grep --line-buffered -v "should be kept in float32" \
  | tee $OUT/run.log
status=$?
[ -d $run/toy_model ] && tar cf /tmp/toy_model.tar -C $run toy_model \
  && split -b 15m -d /tmp/toy_model.tar $OUT/toy_model.tar.part
[ -f $run/train_log.json ] && cp $run/train_log.json $OUT/
[ -f $run/figure_clips.pt ] && cp $run/figure_clips.pt $OUT/
[ -d $run/vae_checkpoint ] && [ ! -d $run/toy_model ] && tar cf $OUT/vae_checkpoint.tar -C $run vae_checkpoint
ls -la $OUT
exit $status
