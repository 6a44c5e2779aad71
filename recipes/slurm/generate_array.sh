#!/bin/bash
# Submit generate as a Slurm job array plus a merge step that runs once every shard has finished.
#   recipes/slurm/generate_array.sh recipes/qwen2vl-2b/generate.yaml runs/qwen2vl-2b 16
# Output: runs/qwen2vl-2b/generate/traces.jsonl (one row per (id, sample_index)), shards under .../shards/.
set -euo pipefail
RECIPE=${1:?usage: generate_array.sh RECIPE.yaml RUN_DIR NUM_SHARDS [extra distill generate flags]}
RUN_DIR=${2:?run directory}
NUM_SHARDS=${3:?number of shards}
shift 3
HERE=$(dirname "$0")
mkdir -p logs "$RUN_DIR/generate/shards"
ARRAY=$(sbatch --parsable --array=0-$((NUM_SHARDS - 1)) "$HERE/generate_array.sbatch" "$RECIPE" \
    "$RUN_DIR/generate/shards" "$@")
sbatch --dependency=afterok:"$ARRAY" --job-name=distill-merge --output=logs/%x-%j.out --wrap \
    "distill merge --inputs $RUN_DIR/generate/shards/traces.shard*.jsonl --output $RUN_DIR/generate/traces.jsonl"
echo "submitted generate array $ARRAY ($NUM_SHARDS shards) and its merge step"
