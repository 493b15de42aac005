#!/usr/bin/env bash
# The depth study of issue 28: encoders of the default's first L layers, pooled at L, trained on
# the bitext harvest with distillation from the 12-layer tuned default; accuracy on both dev packs
# and whole-process speed against depth; the chosen depth shipped as `default-fast`.
#
#   training/recipes/depth_cpu.sh cut L     # the tuned default cut to L layers, untrained (~1 min)
#   training/recipes/depth_cpu.sh train L   # one resumable piece of the L-layer run (bitext_cpu.sh)
#   training/recipes/depth_cpu.sh build L   # the trained checkpoint as fp16 weights -> RUN/fast-lL
#   training/recipes/depth_cpu.sh bench     # stilts bench accuracy, both packs: default, cuts, runs
#   training/recipes/depth_cpu.sh speed     # stilts bench speed --sections process, per depth
#   training/recipes/depth_cpu.sh table     # the depth table (accuracy and speed per L), Markdown
#   training/recipes/depth_cpu.sh ship L    # build L into the package (stilts/sources/weights)
#
# Settings (environment): DEPTHS (the depths bench and speed read, default "4 6 8 10"), STEPS,
# LR, DISTILL_WEIGHT, WORK (the bitext harvest of bitext_cpu.sh), RUNS (run directories), BENCH.
# Every run: the encoder itself (word table frozen), lr LR, batch 64, STEPS steps, distillation
# from `default` with weight DISTILL_WEIGHT beside the translation-ranking loss.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
STILTS="${STILTS:-$ROOT/.venv/bin/stilts}"
PY="$(dirname "$STILTS")/python"
DEPTHS="${DEPTHS:-4 6 8 10}"
STEPS="${STEPS:-3000}"
LR="${LR:-1e-4}"
DISTILL_WEIGHT="${DISTILL_WEIGHT:-10}"
WORK="${WORK:-/work/data/bitext-harvest}"
RUNS="${RUNS:-$ROOT/runs}"
BENCH="${BENCH:-$ROOT/bench}"
PACKS="${PACKS:-$ROOT/../shared/data/bitext-dev $ROOT/../shared/data/docs-dev}"
HOME_DIR="$("$PY" -c 'from stilts.home import stilts_home; print(stilts_home())')"
BASE_CKPT="$HOME_DIR/checkpoints/default"
ADAPTER="$ROOT/stilts/sources/adapters/default-bitext"

need_depth() {
    [[ "${1:-}" =~ ^[0-9]+$ ]] || { echo "give a depth L (1-11)" >&2; exit 2; }
}

cmd_cut() {
    need_depth "$1"
    "$STILTS" export --checkpoint "$BASE_CKPT" --adapter "$ADAPTER" --layer "$1" \
        --name "multilingual-e5-small-stilts-bitext-cut$1" --out "$RUNS/cut-$1"
}

cmd_train() {
    need_depth "$1"
    WORK="$WORK" RUN="$RUNS/depth-$1" ADAPTER=none LR="$LR" LAYER="$1" DISTILL=default \
        DISTILL_WEIGHT="$DISTILL_WEIGHT" MAX_STEPS="$STEPS" EVAL_EVERY=1000 \
        "$HERE/bitext_cpu.sh" train
}

cmd_build() {
    need_depth "$1"
    "$PY" -m stilts.sources.fast_model "$RUNS/depth-$1/checkpoint" "$RUNS/depth-$1/fast-l$1" \
        --weights-dir "$RUNS/depth-$1/weights"
}

models() {
    echo --model default
    for l in $DEPTHS; do
        [ -d "$RUNS/cut-$l" ] && echo --model "$RUNS/cut-$l"
        [ -d "$RUNS/depth-$l/fast-l$l" ] && echo --model "$RUNS/depth-$l/fast-l$l"
    done
    return 0
}

cmd_bench() {
    mkdir -p "$BENCH"
    for pack in $PACKS; do
        # shellcheck disable=SC2046
        "$STILTS" bench accuracy $(models) --precision auto --kind bitext \
            --tatoeba "$pack/tatoeba" --bucc "$pack/bucc" --no-baselines \
            --vector-cache "$BENCH/vectors" --output "$BENCH/depth-$(basename "$pack").json" \
            --report "$BENCH/depth-$(basename "$pack").md" --no-plots --quiet
    done
}

# one `stilts bench speed --sections process` per depth (each with USE-multilingual v3 in the same
# run): the trained model where there is one, else the untrained cut (the same shapes)
cmd_speed() {
    mkdir -p "$BENCH"
    "$STILTS" bench speed --sections process --model default \
        --output "$BENCH/depth-speed-12.json" --report "$BENCH/depth-speed-12.md"
    for l in $DEPTHS; do
        local m="$RUNS/depth-$l/fast-l$l"
        [ -d "$m" ] || m="$RUNS/cut-$l"
        [ -d "$m" ] || continue
        "$STILTS" bench speed --sections process --model "$m" \
            --output "$BENCH/depth-speed-$l.json" --report "$BENCH/depth-speed-$l.md"
    done
}

# the README's depth table from the JSON files above
cmd_table() {
    "$PY" -m stilts.benchmarks.depth_report --accuracy "$BENCH/depth-bitext-dev.json" \
        "$BENCH/depth-docs-dev.json" --speed "$BENCH"/depth-speed-*.json
}

cmd_ship() {
    need_depth "$1"
    "$PY" -m stilts.sources.fast_model "$RUNS/depth-$1/checkpoint" "$RUNS/depth-$1/fast-l$1" \
        ${EVIDENCE:+--evidence "$EVIDENCE"}
}

case "${1:-}" in
    cut | train | build | ship) "cmd_$1" "${2:-}" ;;
    bench | speed | table) "cmd_$1" ;;
    *)
        sed -n '2,/^set -euo/p' "$0" | sed '$d'
        exit 2
        ;;
esac
