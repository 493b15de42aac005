#!/usr/bin/env bash
# Issue 27, the data half: help prose and rare languages for the next bitext run.
#
#   training/recipes/help_harvest.sh download   # apt-get download the packages of the lists below
#   training/recipes/help_harvest.sh help       # stilts data help: help prose + the help-dev pack
#   training/recipes/help_harvest.sh interface  # stilts data bitext: catalogs, rare languages too
#   training/recipes/help_harvest.sh report     # pairs per language and domain, draw shares
#   training/recipes/help_harvest.sh check      # no training pair shares a text with help-dev
#   training/recipes/help_harvest.sh all        # download, help, interface, report, check
#
# Lists (one package a line, '#' comments): help_packages.txt (LibreOffice's help in every
# language the archive has, libreoffice-help-en-us, GNOME's user help and applications' Mallard
# help), bitext_packages.txt (the interface catalogs of issue 17) and rare_packages.txt (more
# catalogs: LibreOffice's interface in every language the archive has). None is a source of a dev
# pack (both packs' sources.tsv are checked by the harvesters, which refuse such packages and
# manpages-*).
#
# Settings (environment): STILTS (the CLI), WORK (debs/, data/help, data/bitext, help-dev; default
# /work/data/help), PACKS (the dev packs excluded), LANGUAGES (the sampling the report shows).
#
# The next training run reads both domains (the help-dev pack is a third dev domain):
#   stilts train --tasks bitext --train-file bitext=$WORK/data/bitext/pairs.tsv \
#       --train-file bitext=$WORK/data/help/pairs.tsv --dev-file bitext=$WORK/data/bitext/dev.tsv \
#       --dev-file bitext=$WORK/data/help/dev.tsv --language-sampling temperature:2 ...
#   stilts bench accuracy ... --tatoeba $WORK/help-dev/tatoeba --bucc $WORK/help-dev/bucc
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
STILTS="${STILTS:-$ROOT/.venv/bin/stilts}"
WORK="${WORK:-/work/data/help}"
PACKS="${PACKS:-$ROOT/../shared/data/bitext-dev $ROOT/../shared/data/docs-dev}"
LANGUAGES="${LANGUAGES:-temperature:2}"

packages() {  # the names of a list, refusing reserved ones
    local names
    names="$(grep -v '^\s*#' "$HERE/$1" | sed '/^\s*$/d')"
    if grep -q '^manpages' <<< "$names"; then
        echo "$1 names a manpages-* package: reserved, never harvested" >&2
        exit 2
    fi
    echo "$names"
}

excludes() {
    for pack in $PACKS; do printf -- '--exclude\n%s\n' "$pack"; done
}

cmd_download() {
    local list
    for list in help_packages.txt bitext_packages.txt rare_packages.txt; do
        mkdir -p "$WORK/debs/${list%%_*}"
        # shellcheck disable=SC2046
        (cd "$WORK/debs/${list%%_*}" && apt-get download $(packages "$list"))
    done
    du -sh "$WORK"/debs/*
}

cmd_help() {
    local ex
    mapfile -t ex < <(excludes)
    "$STILTS" data help "$WORK"/debs/help/*.deb "${ex[@]}" --out "$WORK/data/help" \
        --dev-pack "$WORK/help-dev" --work "$WORK" --quiet
}

cmd_interface() {
    local ex
    mapfile -t ex < <(excludes)
    # the help-dev pack is excluded too: an interface string equal to a held-out sentence
    "$STILTS" data bitext "$WORK"/debs/bitext/*.deb "$WORK"/debs/rare/*.deb "${ex[@]}" \
        --exclude "$WORK/help-dev" --out "$WORK/data/bitext" --quiet
}

cmd_report() {
    "$STILTS" data languages "$WORK/data/bitext" "$WORK/data/help" \
        --language-sampling "$LANGUAGES" --markdown | tee "$WORK/languages.md"
}

cmd_check() {
    "$(dirname "$STILTS")/python" - "$WORK" << 'PY'
import sys
from pathlib import Path

from stilts.benchmarks.data import read_bucc, read_tatoeba
from stilts.training.harvest import fold

work = Path(sys.argv[1])
held = set()
for s in read_tatoeba(work / "help-dev/tatoeba").values():
    held |= {fold(x) for x in s.src + s.en}
for splits in read_bucc(work / "help-dev/bucc").values():
    b = splits["training"]
    held |= {fold(x) for x in b.src + b.en}
held.discard("")
bad = 0
for f in ("data/help/pairs.tsv", "data/help/dev.tsv", "data/bitext/pairs.tsv", "data/bitext/dev.tsv"):
    with open(work / f, encoding="utf-8") as fh:
        hits = sum(1 for line in fh if any(fold(x) in held for x in line.split("\t")[:2]))
    print(f"{f}: {hits} pairs share a text with help-dev ({len(held)} texts)")
    bad += hits
sys.exit(1 if bad else 0)
PY
}

case "${1:-}" in
    download | help | interface | report | check) "cmd_$1" ;;
    all) cmd_download && cmd_help && cmd_interface && cmd_report && cmd_check ;;
    *)
        sed -n '2,/^set -euo/p' "$0" | sed '$d'
        exit 2
        ;;
esac
