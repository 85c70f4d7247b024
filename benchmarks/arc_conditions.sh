#!/usr/bin/env bash
# The paper's Table 1 conditions on a small-grid ARC task set, on the embedded model (CPU budgets).
#
#   benchmarks/arc_conditions.sh [MODEL] [OUT]
# Evaluation tasks: arc1-eval with every grid at most 6x6 (13 tasks). The SEAL policy is trained for
# one ReST-EM round on the paper's seal-train tasks that fit the same limit (7 tasks); its round 0
# is the ttt-self-edit condition (the untouched model's own configurations, same tasks and seeds).
# Every run resumes, so the script can be re-run after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-smollm2-135m}
OUT=${2:-benchmarks/results/arc_conditions}
SEAL=${SEAL:-.venv/bin/seal}
PRECISION=${PRECISION:-fp32}  # the committed runs were made in fp32 (before bf16 became the default on bf16 hardware)
# ... and predate all-linear as the default target: they name their layers
TARGETS="[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"
RESULT=benchmarks/results/arc_conditions.txt
# the committed runs predate constrained configurations: free text, at most 96 tokens
common=(--model "$MODEL" --lora.base_precision "$PRECISION" --lora.target_modules "$TARGETS" --max_grid 6
        --budget.max_train_tokens 6000 --k 4 --constrain false --sampling.max_new_tokens 96 --resume --quiet)

"$SEAL" arc eval --condition icl --tasks arc1-eval "${common[@]}" --out "$OUT/icl" > /dev/null
"$SEAL" arc train --restem.rounds 1 --train_tasks seal-train --tasks arc1-eval "${common[@]}" --out "$OUT/train" > /dev/null
"$SEAL" arc eval --condition oracle --tasks arc1-eval "${common[@]}" --out "$OUT/oracle" > /dev/null
{
  echo "# $(date -u +%Y-%m-%dT%H:%MZ)  benchmarks/arc_conditions.sh $MODEL $OUT"
  .venv/bin/python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = [("icl", out / "icl"), ("ttt-self-edit", out / "train/round-0/eval"),
        ("seal (1 round)", out / "train/round-1/eval"), ("oracle", out / "oracle")]
print(f"{'condition':<16} {'tasks':>5} {'configs':>7} {'success':>8} {'95% CI':>16} {'solved':>7} {'rejected':>8} {'s/TTT':>6} {'tokens/TTT':>10}")
for name, path in rows:
    s = json.loads((path / "summary.json").read_text())
    lo, hi = s["ci95"]
    print(f"{name:<16} {s['n_tasks']:>5} {s['configs_per_task']:>7} {s['success_rate']:>8.1%} "
          f"{f'[{lo:.1%}, {hi:.1%}]':>16} {s['tasks_solved']:>7.1%} {s['n_rejected']:>8} "
          f"{s['mean_seconds_per_ttt']:>6.1f} {s['mean_train_tokens']:>10.0f}")
PY
} > "$RESULT"
cat "$RESULT"
