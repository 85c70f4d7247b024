#!/usr/bin/env bash
# The paper's Table 2 on the embedded model, both settings, on all 200 evaluation passages.
#
#   benchmarks/table2.sh [OUT]
#
# Every step resumes what an earlier invocation finished, so the same command continues a killed
# run (it takes days on a 2-core CPU). In order, the runs the targets depend on first:
#   1. single passage: ReST-EM with baselines (base, passage, external iter2), round 0 and three rounds,
#      each evaluated on the 200 passages;
#   2. CPT (one update on all 200 passages, 974 questions): base, passage, the model's own self-edits
#      and the final ReST-EM policy's (SEAL), the rows the CPT targets compare;
#   3. CPT with external self-edits: iter2 and GPT-4.1;
#   4. the tables: OUT/cpt.txt and OUT/restem/report.md.
# ROUNDS=N sets the number of ReST-EM rounds (default 3, the issue's limit; why two were not enough:
# docs/results.md); a finished run takes more rounds on resume. The CPT SEAL row takes the last
# round's policy.
# fp32 throughout, so that the numbers compare across machines (bf16 kernels differ between CPUs).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/table2}
SEAL=${SEAL:-.venv/bin/seal}
ROUNDS=${ROUNDS:-3}
SELF_EDITS=../shared/data/seal-reference/selfedits
# the runs started before all-linear became the default name their layers
common=(--model smollm2-135m --lora.base_precision fp32
        --lora.target_modules "[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]" --resume --quiet)
cpt=(--setting cpt --split eval --n_passages 200 "${common[@]}")

"$SEAL" knowledge train "${common[@]}" --executor.kind ray --executor.workers 2 --executor.parallel 8 \
  --out "$OUT/restem" --restem.rounds "$ROUNDS" --n_train_passages 64 --restem.k 5 --restem.eval_repeats 2 --n_passages 200 \
  --external_self_edits "$SELF_EDITS/iter2_val.json"

"$SEAL" knowledge eval --condition base "${cpt[@]}" --out "$OUT/cpt/base"
"$SEAL" knowledge eval --condition passage "${cpt[@]}" --out "$OUT/cpt/passage"
"$SEAL" knowledge eval --condition self-edit "${cpt[@]}" --out "$OUT/cpt/self-edit"
"$SEAL" knowledge eval --condition self-edit --policy "$OUT/restem/round-$ROUNDS/policy" "${cpt[@]}" --out "$OUT/cpt/seal"
for source in iter2 gpt4_1; do
  "$SEAL" knowledge eval --condition external --self_edits_file "$SELF_EDITS/${source}_val.json" "${cpt[@]}" \
    --out "$OUT/cpt/external-$source"
done

{
  echo "# $(date -u +%Y-%m-%dT%H:%MZ)  benchmarks/table2.sh $OUT"
  "$SEAL" knowledge compare "$OUT/cpt/base" "$OUT/cpt/passage" "$OUT/cpt/self-edit" "$OUT/cpt/external-iter2" \
    "$OUT/cpt/external-gpt4_1" "$OUT/cpt/seal"
  echo
  "$SEAL" knowledge compare "$OUT/cpt/self-edit" "$OUT/cpt/seal" "$OUT/cpt/passage"
} > "$OUT/cpt.txt"
cat "$OUT/cpt.txt"
"$SEAL" knowledge report "$OUT/restem"
