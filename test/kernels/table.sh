#!/bin/bash
# table.sh OUT VERSION...: prints the kernel matrix from the guests' results
# (OUT/VERSION/summary and OUT/VERSION/PKG.log): one row per package, one
# column per kernel with pass/fail/skip counts of top-level tests, then each
# failure's first line and each distinct skip reason.
set -u
out=$1; shift
vers=("$@")
status=0
pkgs=$(for v in "${vers[@]}"; do [ -r "$out/$v/summary" ] && awk '{print $1}' "$out/$v/summary"; done | awk '!s[$0]++')
counts() { # LOG -> "pass fail skip"
	awk '/^--- PASS/{p++} /^--- FAIL/{f++} /^--- SKIP/{s++} END{printf "%d %d %d", p, f, s}' "$1"
}
printf '%-14s' package
for v in "${vers[@]}"; do printf ' | %-26s' "$v"; done; echo
printf '%-14s' time
for v in "${vers[@]}"; do
	t=$(cat "$out/$v/seconds" 2>/dev/null || echo '?')
	printf ' | %-26s' "${t}s $(sed -n 's/^accel: //p' "$out/$v/facts" 2>/dev/null)"
done; echo
for p in $pkgs; do
	n=$(echo "$p" | tr / _)
	printf '%-14s' "$p"
	for v in "${vers[@]}"; do
		l=$out/$v/$n.log
		if [ ! -r "$l" ]; then cell="not run"; status=1
		else
			read -r pa fa sk < <(counts "$l")
			rc=$(awk -v p="$p" '$1==p{sub("rc=","",$2); print $2}' "$out/$v/summary")
			cell="ok $pa"
			[ "$fa" -gt 0 ] || [ "$rc" != 0 ] && { cell="FAIL $fa/$((pa+fa))"; status=1; }
			[ "$fa" -eq 0 ] && [ "$rc" != 0 ] && cell="FAIL rc=$rc"
			[ "$sk" -gt 0 ] && cell="$cell, skip $sk"
		fi
		printf ' | %-26s' "$cell"
	done
	echo
done
# What each kernel gives ikefragd (ikefragd --features in the guest); the
# README's "Supported kernels" table is this one.
field() { sed -n "s/^ *\"$1\": \"\(.*\)\",\{0,1\}$/\1/p" "$2" | head -1; }
word() { echo "${1%% *}"; }
echo
echo "| kernel | attach | observer build | ESP fast path | drop reasons |"
echo "|---|---|---|---|---|"
for v in "${vers[@]}"; do
	f=$out/$v/features.json
	[ -r "$f" ] || continue
	printf '| %s | %s | %s | %s | %s |\n' "$v" "$(word "$(field attach "$f")")" "$(word "$(field observer_build "$f")")" \
		"$(word "$(field fast_path "$f")" | tr -d :)" "$(word "$(field drop_reasons "$f")" | tr -d :)"
done
echo
for v in "${vers[@]}"; do
	[ -e "$out/$v/boot-error" ] && { echo "$v: $(cat "$out/$v/boot-error")"; status=1; }
	for l in "$out/$v"/*.log; do
		[ -r "$l" ] || continue
		case $l in */serial.log|*/guest.log) continue ;; esac
		p=$(basename "$l" .log)
		# the first message line of each failed top-level test
		awk -v who="$v $p" '
			/^=== (RUN|CONT|PAUSE|NAME)/ { split($3, a, "/"); cur=a[1]; next }
			/^[ \t]+[A-Za-z0-9_]+\.go:[0-9]+: / { if (!(cur in first)) { m=$0; sub(/^[ \t]+/, "", m); first[cur]=m } }
			/^--- FAIL: / { t=$3; printf "%s FAIL %s: %s\n", who, t, (t in first) ? substr(first[t], 1, 160) : "(no message)" }
			/^panic: / && !pan { pan=1; printf "%s PANIC: %s\n", who, substr($0, 1, 160) }
		' "$l"
		# each distinct skip reason
		awk -v who="$v $p" '
			/^=== (RUN|CONT|PAUSE|NAME)/ { split($3, a, "/"); cur=a[1]; next }
			/^[ \t]+[A-Za-z0-9_]+\.go:[0-9]+: / { m=$0; sub(/^[ \t]+[A-Za-z0-9_]+\.go:[0-9]+: /, "", m); last[cur]=m }
			/^--- SKIP: / { t=$3; r=(t in last) ? last[t] : "?"; if (!(r in seen)) { seen[r]=1; printf "%s skip %s: %s\n", who, t, substr(r, 1, 160) } }
		' "$l"
	done
done
exit $status
