#!/usr/bin/env bash
# The realistic mining pools of `stilts bench threshold` (issue 25): filler text of the two dev
# packs' domains from Debian packages that are neither training sources
# (training/recipes/*_packages.txt) nor dev-pack sources nor reserved (manpages-*), then the
# bench at 1, 2 and 5 % true pairs.
#
#   benchmarks/recipes/threshold_pools.sh fillers   # apt-get download + harvest (~10 min, ~1.8 GB)
#   benchmarks/recipes/threshold_pools.sh prose     # the prose fillers alone (stilts bench fillers)
#   benchmarks/recipes/threshold_pools.sh bench     # stilts bench threshold on the pools
#
# Settings (environment): STILTS (the CLI), WORK (debs/ and fillers/), OUT (bench JSON and
# report), SHARES, POOL_SIZE, SEED, INDEX (k-NN kind), CACHE (vector cache directory).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
STILTS="${STILTS:-$ROOT/.venv/bin/stilts}"
WORK="${WORK:-/work/data/pools}"
OUT="${OUT:-$ROOT/bench}"
SHARES="${SHARES:-0.01,0.02,0.05}"
POOL_SIZE="${POOL_SIZE:-50000}"
SEED="${SEED:-0}"
INDEX="${INDEX:-flat}"
CACHE="${CACHE:-$WORK/vectors}"
PACKS="${PACKS:-$ROOT/../shared/data}"
LANGS=(de es fr ja ru zh-cn)        # interface strings: the bitext-dev pairs
HELP_LANGS=(en de es fr it ja pt ru zh-cn)  # documentation prose: the docs-dev pairs
# interface catalogs: threshold_packages.txt and LibreOffice's UI in the six languages
read -r -a CATALOGS <<< "$(grep -v '^#' "$HERE/threshold_packages.txt" | tr '\n' ' ')"
for l in "${LANGS[@]}"; do CATALOGS+=("libreoffice-l10n-$l"); done
# documentation prose: GIMP's user manual and KiCad's manuals (KiCad has no pt)
HELP=()
for l in "${HELP_LANGS[@]}"; do HELP+=("gimp-help-$l"); done
for l in en de es fr it ja ru zh; do HELP+=("kicad-doc-$l"); done

fillers() {
  mkdir -p "$WORK/debs" "$WORK/fillers/bitext-dev" "$WORK/fillers/docs-dev"
  (cd "$WORK/debs" && apt-get download "${CATALOGS[@]}" "${HELP[@]}")
  local debs=()
  for p in "${CATALOGS[@]}"; do debs+=("$WORK"/debs/"${p}"_*.deb); done
  # (English, translation) pairs of the six languages; the dev pack's own texts excluded
  "$STILTS" data bitext "${debs[@]}" --out "$WORK/harvest" --exclude "$PACKS/bitext-dev" \
    --languages de,es,fr,ja,ru,zh --dev-fraction 0 --quiet
  cp "$WORK/harvest/pairs.tsv" "$WORK/fillers/bitext-dev/pairs.tsv"
  prose
}

prose() {
  local help=()
  for p in "${HELP[@]}"; do help+=("$WORK"/debs/"${p}"_*.deb); done
  "$STILTS" bench fillers "${help[@]}" --out "$WORK/fillers/docs-dev/pages.tsv" --quiet
}

bench() {
  mkdir -p "$OUT"
  "$STILTS" bench threshold --fillers "$WORK/fillers" --shares "$SHARES" \
    --pool-size "$POOL_SIZE" --seed "$SEED" --index "$INDEX" --vector-cache "$CACHE" \
    --output "$OUT/threshold-pools.json" --report "$OUT/threshold-pools.md" --quiet
}

case "${1:-}" in
  fillers) fillers ;;
  prose) prose ;;
  bench) bench ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
