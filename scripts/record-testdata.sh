#!/bin/sh
# Re-records the lab captures of diag/testdata/lab with real strongSwan
# (test/lab; root), then rewrites the golden reports that read them.
# Usage: scripts/record-testdata.sh [scenario,scenario...]
set -eu
cd "$(dirname "$0")/.."
IKEFRAG_RECORD="${1:-}" go test -count=1 ./diag -run 'TestRecordLab' -record -v
go test -count=1 ./diag -run 'TestSynthCaptures|TestGolden$' -update
go test -count=1 ./cmd/ikefragctl -run 'TestAnalyzeGolden' -update
git status --short -- diag/testdata cmd/ikefragctl/testdata
