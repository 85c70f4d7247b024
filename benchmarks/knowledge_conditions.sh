#!/usr/bin/env bash
# The paper's Table 2 conditions on the SQuAD evaluation passages, grown in steps so that every
# step leaves a complete side-by-side table (each run resumes the previous step's directory).
#
#   benchmarks/knowledge_conditions.sh [MODEL] [OUT] [STEPS...]
#   e.g. benchmarks/knowledge_conditions.sh smollm2-135m benchmarks/results/knowledge_conditions 10 25 50
# The run directories are committed, so a later run resumes instead of recomputing. base, passage,
# external-iter2 and self-edit are links to the identical runs of benchmarks/results/restem.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-smollm2-135m}
OUT=${2:-benchmarks/results/knowledge_conditions}
shift $(( $# < 2 ? $# : 2 ))
STEPS=${*:-10 25 50}
SEAL=${SEAL:-.venv/bin/seal}
PRECISION=${PRECISION:-fp32}  # the committed runs were made in fp32 (before bf16 became the default on bf16 hardware)
# ... and predate all-linear as the default target: they name their layers
TARGETS="[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"
SELF_EDITS=../shared/data/seal-reference/selfedits
RESULT=benchmarks/results/knowledge_conditions.txt

for n in $STEPS; do
  common=(--model "$MODEL" --lora.base_precision "$PRECISION" --lora.target_modules "$TARGETS" --split eval --n_passages "$n" --resume --quiet)
  "$SEAL" knowledge eval --condition base "${common[@]}" --out "$OUT/base"
  "$SEAL" knowledge eval --condition passage "${common[@]}" --out "$OUT/passage"
  "$SEAL" knowledge eval --condition external --self_edits_file "$SELF_EDITS/iter2_val.json" "${common[@]}" --out "$OUT/external-iter2"
  "$SEAL" knowledge eval --condition external --self_edits_file "$SELF_EDITS/gpt4_1_val.json" "${common[@]}" --out "$OUT/external-gpt4_1"
  "$SEAL" knowledge eval --condition self-edit "${common[@]}" --out "$OUT/self-edit"
  {
    echo "# $(date -u +%Y-%m-%dT%H:%MZ)  benchmarks/knowledge_conditions.sh $MODEL $OUT $STEPS  (step n=$n)"
    "$SEAL" knowledge compare "$OUT/base" "$OUT/passage" "$OUT/self-edit" "$OUT/external-iter2" "$OUT/external-gpt4_1"
  } > "$RESULT"
  cat "$RESULT"
done
