#!/usr/bin/env bash
# The paper's Table 1 conditions on the embedded model, with configurations sampled under their schema.
#
#   benchmarks/arc_table1.sh [OUT]
#
# Evaluation sets: A, the 13 arc1-eval tasks with every grid at most 6x6; B, the 5 seal-eval tasks at
# most 10x10. ReST-EM: 2 rounds, K = 8 configurations per task, on every training-set task at most
# 6x6 (seal-train and arc1-train: 46 tasks, none an evaluation task; 7 of seal-train's 12 are that
# small, the others up to 19x19 would cost many times more per TTT), evaluated on A each round with
# K = 8 (round 0 is ttt-self-edit, later rounds seal); each round keeps every configuration that beats
# answering in context (top_m = K), as the paper keeps every correct one. On B: icl, ttt-self-edit,
# seal (the final policy) and oracle. Each TTT at most 6,000 training tokens and 16 examples; every
# step on the same two Ray workers, so that seconds per TTT compare. That budget cuts most of the
# oracle's augmented configurations to under a tenth of their examples, so last the oracle runs again
# on A and B at four times the tokens and up to 64 examples (oracle-x4), and the model's own
# configurations and the final policy on B (ttt-self-edit-x4, seal-x4). Every step resumes, so rerun
# it to continue, with the same OUT as given first (runs record the policy's path as given).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/arc_table1}
SEAL=${SEAL:-.venv/bin/seal}
K=8
common=(--model smollm2-135m --lora.base_precision fp32 --k "$K" --resume --quiet
        --executor.kind ray --executor.workers 2 --executor.parallel 4)
budget=(--budget.max_train_tokens 6000)
larger=(--budget.max_train_tokens 24000 --budget.max_examples 64)
small=(--tasks arc1-eval --max_grid 6)
seal_eval=(--tasks seal-eval --max_grid 10)

"$SEAL" arc eval --condition icl "${small[@]}" "${common[@]}" "${budget[@]}" --out "$OUT/a/icl" > /dev/null
"$SEAL" arc eval --condition oracle "${small[@]}" "${common[@]}" "${budget[@]}" --out "$OUT/a/oracle" > /dev/null
"$SEAL" arc train "${common[@]}" "${budget[@]}" --restem.rounds 2 --restem.top_m "$K" \
  --train_tasks seal-train,arc1-train "${small[@]}" --out "$OUT/a/train" > /dev/null

policy="$OUT/a/train/round-2/policy"
"$SEAL" arc eval --condition icl "${seal_eval[@]}" "${common[@]}" "${budget[@]}" --out "$OUT/b/icl" > /dev/null
"$SEAL" arc eval --condition ttt-self-edit "${seal_eval[@]}" "${common[@]}" "${budget[@]}" --out "$OUT/b/ttt-self-edit" > /dev/null
"$SEAL" arc eval --condition seal --policy "$policy" "${seal_eval[@]}" "${common[@]}" "${budget[@]}" --out "$OUT/b/seal" > /dev/null
"$SEAL" arc eval --condition oracle "${seal_eval[@]}" "${common[@]}" "${budget[@]}" --out "$OUT/b/oracle" > /dev/null
"$SEAL" arc eval --condition oracle "${small[@]}" "${common[@]}" "${larger[@]}" --out "$OUT/a/oracle-x4" > /dev/null
"$SEAL" arc eval --condition oracle "${seal_eval[@]}" "${common[@]}" "${larger[@]}" --out "$OUT/b/oracle-x4" > /dev/null
"$SEAL" arc eval --condition ttt-self-edit "${seal_eval[@]}" "${common[@]}" "${larger[@]}" --out "$OUT/b/ttt-self-edit-x4" > /dev/null
"$SEAL" arc eval --condition seal --policy "$policy" "${seal_eval[@]}" "${common[@]}" "${larger[@]}" --out "$OUT/b/seal-x4" > /dev/null

.venv/bin/python benchmarks/arc_table.py "$OUT" --plot "$OUT.png" > "$OUT.txt"
cat "$OUT.txt"
