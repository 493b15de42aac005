#!/usr/bin/env bash
# The CPU recipe of issue 17: harvest pairs, train a LoRA adapter on the `bitext` task in
# resumable pieces, judge base vs tuned on both dev packs.
#
#   training/recipes/bitext_cpu.sh harvest    # apt-get download + stilts data bitext (~5 min)
#   training/recipes/bitext_cpu.sh measure    # 20 timed steps per setting: s/step, bf16 on/off
#   training/recipes/bitext_cpu.sh train      # one piece (< PIECE); run again until it says done
#   training/recipes/bitext_cpu.sh status     # steps done, last checkpoint, last dev metric
#   training/recipes/bitext_cpu.sh bench-base # the base alone, filling the vector cache (optional)
#   training/recipes/bitext_cpu.sh bench      # stilts bench accuracy, both packs, base vs tuned
#   training/recipes/bitext_cpu.sh ship       # the goals' verdict; ship the adapter if no regression
#
# A piece is `stilts train` under `timeout PIECE` with --save-every-minutes 20: a piece cut at its
# time limit (or killed) loses at most 20 minutes; the next `train` resumes from the last complete
# checkpoint (weights, optimizer, schedule, sampler position, RNG) with the same settings. Start
# pieces in the background: nohup training/recipes/bitext_cpu.sh train > piece.log 2>&1 &
#
# Settings (environment): STILTS (the CLI), WORK (harvest: debs/ and data/bitext/), RUN (the run
# directory), PIECE (timeout of one piece), MAX_STEPS, BATCH, LR, RANK, EVAL_EVERY, LANGUAGES (how
# languages share the pairs), PACKS (the two dev packs), BENCH (where the bench JSON goes), BASE
# (the untuned model's name), ADAPTER (lora, or none: train the encoder itself), LAYER (pool and keep only the first LAYER layers: a shallower
# encoder), DISTILL (a teacher for --distill, e.g. default), DISTILL_WEIGHT, QUEUE (--bitext-queue:
# the last QUEUE sources and targets of earlier batches as negatives), INIT (--init-adapter: the
# adapter the run starts from, e.g. default), DATA (the folders
# of pairs.tsv and dev.tsv trained on; default WORK/data/bitext; with several, e.g. issue 27's
# "$WORK/data/bitext $WORK/data/help", the dev set takes an equal share of each folder's dev.tsv).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
STILTS="${STILTS:-$ROOT/.venv/bin/stilts}"
WORK="${WORK:-/work/data/bitext-harvest}"
RUN="${RUN:-$ROOT/runs/bitext-cpu}"
PIECE="${PIECE:-150m}"
MAX_STEPS="${MAX_STEPS:-5000}"
BATCH="${BATCH:-64}"
LR="${LR:-2e-4}"
RANK="${RANK:-8}"
EVAL_EVERY="${EVAL_EVERY:-1000}"
# 197 languages, 1 to 116k pairs each: temperature 2 gives Kabyle (6k pairs) 0.39% of the draws
# instead of 0.17%, German (75k) 1.35% instead of 2.0%
LANGUAGES="${LANGUAGES:-temperature:2}"
PACKS="${PACKS:-$ROOT/../shared/data/bitext-dev $ROOT/../shared/data/docs-dev}"
BENCH="${BENCH:-$ROOT/bench}"
ADAPTER="${ADAPTER:-lora}"
LAYER="${LAYER:-}"
DISTILL="${DISTILL:-}"
DISTILL_WEIGHT="${DISTILL_WEIGHT:-10}"
QUEUE="${QUEUE:-}"          # --bitext-queue: earlier batches' vectors as more negatives
INIT="${INIT:-}"            # --init-adapter: start from a saved adapter (default: the shipped one)
DATA="${DATA:-$WORK/data/bitext}"
TAG="${TAG:-issue17}"      # the bench files' prefix: $BENCH/$TAG-<pack>.json
COMPARE="${COMPARE:-}"     # models benched between BASE and the run's model (issue 27: default)
BASELINES="${BASELINES:---no-baselines}"  # or --baseline use (USE-multilingual v3 beside them)
BASE="${BASE:-default}"  # the untuned model as installed (multilingual-e5-small once tuned ships)

# The recipe: everything a resumed piece must repeat unchanged (run.json checks it).
# Measured here on 2026-12-02 (2 cores with AMX, 20k harvested pairs, batch 64, 40 steps, mean
# s/step): LoRA r8 0.72 with --lora-dropout 0, 1.14 with dropout 0.05, 1.42 in fp32; without
# length groups the median step was 8.0 s instead of 0.78. At ~0.75 s/step, 20000 steps (1.28M
# pairs, a third of an epoch) take ~4.2 h plus evaluations: two pieces of 150 min. On a 2-core AMD
# EPYC with AVX-512 BF16 (no AMX): 0.67 s/step median with bf16, 1.22 in fp32 (same measure); the
# default 7000 steps (448k pairs drawn) fit one piece. Each piece
# first reads and tokenizes all 3.74M pairs: 2.5 min, peak RSS 5.6 GB (measured, full data).
recipe() {
    echo --model default --tasks bitext $(data) \
        $(lora) \
        --batch-size "$BATCH" --lr "$LR" --warmup 0.05 --max-steps "$MAX_STEPS" \
        --bitext-scale 50 --bitext-margin 0.05 --max-seq-len auto --language-sampling "$LANGUAGES" \
        --eval-every "$EVAL_EVERY" \
        --save-every "$EVAL_EVERY" --save-every-minutes 20 --save-total-limit 3 \
        ${LAYER:+--layer "$LAYER"} ${DISTILL:+--distill "$DISTILL" --distill-weight "$DISTILL_WEIGHT"} \
        ${QUEUE:+--bitext-queue "$QUEUE"} ${INIT:+--init-adapter "$INIT"}
}

# --train-file per DATA folder; the dev set: 2,000 pairs, an equal share of each folder's dev.tsv
# (the files are shuffled), written once into the run directory so resumed pieces read the same
data() {
    local dir dirs share
    read -r -a dirs <<< "$DATA"
    for dir in "${dirs[@]}"; do echo --train-file "bitext=$dir/pairs.tsv"; done
    if [ "${#dirs[@]}" -eq 1 ]; then
        echo --dev-file "bitext=${dirs[0]}/dev.tsv" --max-eval-examples 2000
        return
    fi
    share=$((2000 / ${#dirs[@]}))
    if [ ! -f "$RUN/dev-mixed.tsv" ]; then
        mkdir -p "$RUN"
        for dir in "${dirs[@]}"; do head -n "$share" "$dir/dev.tsv"; done > "$RUN/dev-mixed.tsv"
    fi
    echo --dev-file "bitext=$RUN/dev-mixed.tsv"
}

# ADAPTER=lora (default): a LoRA adapter of rank RANK; ADAPTER=none: the encoder's own weights
# (the word-embedding table stays frozen on CPU)
lora() {
    if [ "$ADAPTER" = lora ]; then
        echo --adapter lora --lora-rank "$RANK" --lora-alpha "$((2 * RANK))" --lora-dropout 0
    fi
}

has_checkpoint() {
    compgen -G "$RUN/trainer/checkpoint-*/stilts-complete" > /dev/null
}

cmd_harvest() {
    local pkgs
    pkgs="$(grep -v '^#' "$HERE/bitext_packages.txt")"
    if grep -q '^manpages' <<< "$pkgs"; then
        echo "bitext_packages.txt names a manpages-* package: reserved, never harvested" >&2
        exit 2
    fi
    mkdir -p "$WORK/debs"
    # shellcheck disable=SC2086
    (cd "$WORK/debs" && apt-get download $pkgs)
    local excludes=()
    for pack in $PACKS; do excludes+=(--exclude "$pack"); done
    "$STILTS" data bitext "$WORK"/debs/*.deb "${excludes[@]}" --out "$WORK/data/bitext" --quiet
}

cmd_measure() {
    local out
    for bf16 in on off; do
        out="$(mktemp -d)/run"
        # shellcheck disable=SC2046
        "$STILTS" train $(recipe | sed "s/--max-steps $MAX_STEPS/--max-steps 20/") \
            --max-train-examples 20000 --eval-every 0 --max-eval-examples 16 \
            --bf16 "$bf16" --no-export --quiet --measure-floor \
            --output "$out" | tail -1 |
            python3 -c "import json,sys; s=json.load(sys.stdin); print('bf16=$bf16', \
'median s/step', s['seconds_per_step_median'], 'cpu s/step', s['cpu_seconds_per_step_median'], \
'recipe', s['recipe'], 'floor', s['step_floor'])"
        rm -rf "$(dirname "$out")"
    done
}

cmd_train() {
    local resume=()
    has_checkpoint && resume=(--resume)
    set +e
    # shellcheck disable=SC2046
    timeout --signal=TERM --kill-after=5m "$PIECE" \
        "$STILTS" train $(recipe) --output "$RUN" "${resume[@]}"
    local rc=$?
    set -e
    if [ "$rc" -eq 0 ]; then
        echo "done: $RUN/model (adapter in $RUN/adapter); next: $0 bench"
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "piece stopped at its $PIECE limit; run '$0 train' again to continue"
    else
        echo "stilts train failed (exit $rc)" >&2
        exit "$rc"
    fi
}

cmd_status() {
    ls -d "$RUN"/trainer/checkpoint-* 2> /dev/null || echo "no checkpoint yet"
    [ -f "$RUN/metrics.jsonl" ] && tail -n 1 "$RUN/metrics.jsonl"
    return 0
}

# The base alone (while a piece trains, say): fills the vector cache, so `bench` encodes only the
# tuned model.
cmd_bench_base() {
    mkdir -p "$BENCH"
    for pack in $PACKS; do
        "$STILTS" bench accuracy --model "$BASE" --precision auto --kind bitext \
            --tatoeba "$pack/tatoeba" --bucc "$pack/bucc" --no-baselines \
            --vector-cache "$BENCH/vectors" --output "$BENCH/base-$(basename "$pack").json"
    done
}

cmd_bench() {
    local models=(--model "$BASE") m
    for m in $COMPARE; do models+=(--model "$m"); done
    mkdir -p "$BENCH"
    for pack in $PACKS; do
        "$STILTS" bench accuracy "${models[@]}" --model "$RUN/model" --precision auto \
            --kind bitext --tatoeba "$pack/tatoeba" --bucc "$pack/bucc" $BASELINES \
            --vector-cache "$BENCH/vectors" --output "$BENCH/$TAG-$(basename "$pack").json"
    done
}

cmd_ship() {
    local py verdict="$BENCH/issue17-verdict.json"
    py="$(dirname "$STILTS")/python"
    "$py" -m stilts.benchmarks.goals "$BENCH/issue17-bitext-dev.json" \
        "$BENCH/issue17-docs-dev.json" --out "$verdict" > /dev/null
    local flags=()
    if "$py" -c "import json,sys; sys.exit(not json.load(open('$verdict'))['serves_default'])"; then
        flags=(--serves-default)
    elif ! "$py" -c "import json,sys; sys.exit(not json.load(open('$verdict'))['no_regression'])"; then
        echo "the tuned model regresses on a pack: not shipped (see $verdict)" >&2
        exit 1
    fi
    "$py" -m stilts.sources.tuned_model "$RUN/adapter" "$RUN/model" --evidence "$verdict" "${flags[@]}"
}

case "${1:-}" in
    harvest | measure | train | status | bench | ship) "cmd_$1" ;;
    bench-base) cmd_bench_base ;;
    *)
        sed -n '2,/^set -euo/p' "$0" | sed '$d'
        exit 2
        ;;
esac
