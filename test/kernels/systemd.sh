#!/bin/bash
# systemd.sh: runs inside a kernel-matrix guest booted with systemd as PID 1
# (test/kernels/matrix.sh --systemd). Installs ikefragd with `make install`
# from the binaries built on the host, and checks the shipped unit under a
# real service manager: readiness by sd_notify, the watchdog restarting a
# stopped daemon, a SIGKILL leaving no stale tc/tcx programs, reload, the
# proxy binding UDP 500/4500 under the unit, and the unit's exposure score.
# One line per check: "CHECK name: ok" or "CHECK name: FAIL why".
set -u
O=/ikm-out
. "$O/env"
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
failed=0
ok() { echo "CHECK $1: ok${2:+ ($2)}"; }
bad() { echo "CHECK $1: FAIL $2"; failed=1; }
show() { systemctl show ikefragd -p "$1" --value; }
# wait_for SECONDS CMD...: polls CMD once a second
wait_for() {
	local n=$1; shift
	for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
	return 1
}

echo "pid 1: $(ps -o comm= -p 1), $(systemctl --version | head -1)"
echo "kernel: $(uname -r)"
# a default route (qemu user network with restrict=on: nothing leaves the
# guest); ikefragd's default configuration observes its interface
dev=$(ls /sys/class/net | grep -v '^lo$' | head -1)
ip link set "$dev" up
ip addr add 10.0.2.15/24 dev "$dev" 2>/dev/null
ip route add default via 10.0.2.2 2>/dev/null

# 1. install as an operator would, from the host-built binaries
make -C "$IKM_REPO" -o build install BIN="$IKM_BIN" >"$O/install.log" 2>&1 || { bad install "$(tail -3 "$O/install.log")"; exit 1; }
systemctl daemon-reload
ok install "$(ls /etc/systemd/system/ikefragd.service* -d | tr '\n' ' ')"

# 2. start: Type=notify returns once READY=1 arrived
t0=$(date +%s.%N)
if systemctl start ikefragd; then
	ok start "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1fs", b-a}') until READY=1; $(show StatusText)"
else
	bad start "$(journalctl -u ikefragd --no-pager -n 20)"
fi
[ "$(show ActiveState)/$(show SubState)" = active/running ] && ok running || bad running "$(show ActiveState)/$(show SubState)"
ikefragctl status > "$O/status.txt" 2>&1; st=$?
[ $st = 0 ] && ok status "$(grep -E '^kernel' "$O/status.txt")" || bad status "exit $st: $(head -3 "$O/status.txt")"

# progs HOOK: the observer's programs for that hook loaded in the kernel. A
# running daemon holds one per interface; a program a dead daemon left
# attached (a stale tc filter) would be a second.
progs() { bpftool prog show 2>/dev/null | grep -c "name ikefrag_$1 "; }
one_each() { [ "$(progs ingress)" = 1 ] && [ "$(progs egress)" = 1 ]; }
listing() { bpftool prog show 2>/dev/null | grep "name ikefrag_" | tr '\n' ' '; }
one_each && ok attached "$(listing)" || bad attached "$(listing)"

# 3. watchdog: a stopped daemon stops petting it; systemd kills and restarts
pid=$(show MainPID); n0=$(show NRestarts)
wd=$(( $(show WatchdogUSec | sed 's/s$//' | awk '{print $1}') ))
kill -STOP "$pid"
if wait_for $(( wd + 60 )) sh -c "[ \"\$(systemctl show ikefragd -p NRestarts --value)\" -gt $n0 ] && [ \"\$(systemctl show ikefragd -p SubState --value)\" = running ]"; then
	ok watchdog "restarted after SIGSTOP; pid $pid -> $(show MainPID)"
else
	bad watchdog "no restart: $(show ActiveState)/$(show SubState), restarts $(show NRestarts); $(journalctl -u ikefragd --no-pager -n 5 | tr '\n' ' ')"
fi
wait_for 60 one_each && ok "attached after watchdog restart" || bad "attached after watchdog restart" "$(listing)"

# 4. SIGKILL: Restart=on-failure brings it back; no stale programs
pid=$(show MainPID); n0=$(show NRestarts)
systemctl kill -s KILL ikefragd
if wait_for 90 sh -c "[ \"\$(systemctl show ikefragd -p NRestarts --value)\" -gt $n0 ] && [ \"\$(systemctl show ikefragd -p SubState --value)\" = running ]"; then
	ok sigkill "restarted; pid $pid -> $(show MainPID)"
else
	bad sigkill "$(show ActiveState)/$(show SubState)"
fi
wait_for 60 one_each && ok "no stale programs after SIGKILL" || bad "no stale programs after SIGKILL" "$(listing)"

# 5. reload applies a changed configuration
sed -i 's/^\(\s*\)settle:.*/\1settle: 17s/' /etc/ikefrag/ikefragd.yaml
grep -q 'settle: 17s' /etc/ikefrag/ikefragd.yaml || printf '\ndiag:\n  settle: 17s\n' >> /etc/ikefrag/ikefragd.yaml
systemctl reload ikefragd
if wait_for 30 sh -c "ikefragctl status | grep -q '1 reload(s)'"; then
	ok reload "$(ikefragctl status | grep -E '^config')"
else
	bad reload "$(ikefragctl status 2>&1 | head -4 | tr '\n' ' ')"
fi

# 6. the proxy binds UDP 500 and 4500 under the unit
if [ -r "$IKM_REPO/test/kernels/proxy.yaml" ]; then
	cp /etc/ikefrag/ikefragd.yaml "$O/observe.yaml"
	cp "$IKM_REPO/test/kernels/proxy.yaml" /etc/ikefrag/ikefragd.yaml
	# the restarts above count against StartLimitBurst
	systemctl reset-failed ikefragd
	systemctl restart ikefragd
	if wait_for 60 sh -c "ss -Hulpn 'sport = :500' | grep -q ikefragd && ss -Hulpn 'sport = :4500' | grep -q ikefragd"; then
		ok "proxy binds 500/4500" "$(ss -Hulpn | grep ikefragd | awk '{print $4}' | sort -u | tr '\n' ' ')"
	else
		bad "proxy binds 500/4500" "$(journalctl -u ikefragd --no-pager -n 8 | tr '\n' ' ')"
	fi
	# the ESP fast path loads under the unit, pins its maps below
	# /sys/fs/bpf/ikefrag, and a restart takes the same maps over
	fpmap() { bpftool -j map show pinned /sys/fs/bpf/ikefrag/fastpath/flows 2>/dev/null | sed -n 's/^{"id":\([0-9]*\).*/\1/p'; }
	fpactive() { curl -fsS http://127.0.0.1:9717/metrics 2>/dev/null | grep -q '^ikefrag_fastpath_active 1'; }
	if wait_for 30 fpactive && id1=$(fpmap) && [ -n "$id1" ]; then
		systemctl restart ikefragd
		if wait_for 60 fpactive && id2=$(fpmap) && [ "$id1" = "$id2" ]; then
			ok "proxy fast path pinned across restart" "flows map id $id1 before and after"
		else
			bad "proxy fast path pinned across restart" "map id ${id1} -> $(fpmap); $(journalctl -u ikefragd --no-pager -n 8 -o cat | tr '\n' ' ')"
		fi
	else
		bad "proxy fast path pinned" "$(curl -fsS http://127.0.0.1:9717/metrics 2>&1 | grep ikefrag_fastpath_active); $(ls -R /sys/fs/bpf 2>&1 | tr '\n' ' '); $(journalctl -u ikefragd --no-pager -n 8 -o cat | tr '\n' ' ')"
	fi
	# one start with fast_path: off stops the pinned fast path for good
	sed 's/^\(\s*\)fast_path_pin:.*/&\n\1fast_path: "off"/' "$IKM_REPO/test/kernels/proxy.yaml" > /etc/ikefrag/ikefragd.yaml
	systemctl restart ikefragd
	if wait_for 30 sh -c '! [ -e /sys/fs/bpf/ikefrag/fastpath ]'; then
		ok "fast_path off removes the pinned fast path"
	else
		bad "fast_path off removes the pinned fast path" "$(ls -R /sys/fs/bpf/ikefrag | tr '\n' ' ')"
	fi
	cp "$O/observe.yaml" /etc/ikefrag/ikefragd.yaml
fi

# 6b. a strongSwan tunnel through the proxy under the unit (in a lab
# namespace) keeps carrying pings across systemctl restart
t=$IKM_BIN/cmd_ikefragd.test
if [ -x "$t" ]; then
	cp /etc/ikefrag/ikefragd.yaml "$O/observe2.yaml"
	systemctl reset-failed ikefragd
	(cd "$IKM_REPO/cmd/ikefragd" && IKEFRAG_UNIT_RESTART=1 timeout 900 "$t" -test.run '^TestUnitRestartKeepsTunnel$' -test.v -test.count=1) > "$O/unit-restart.log" 2>&1
	rc=$?
	line=$(grep -E "pings answered" "$O/unit-restart.log" | sed 's/^ *//' | tr '\n' ' ')
	if [ $rc = 0 ] && grep -q -- "--- PASS: TestUnitRestartKeepsTunnel" "$O/unit-restart.log"; then
		ok "tunnel across systemctl restart" "$line"
	else
		bad "tunnel across systemctl restart" "rc $rc: $(tail -25 "$O/unit-restart.log" | tr '\n' ' ')"
	fi
	cp "$O/observe2.yaml" /etc/ikefrag/ikefragd.yaml
fi

# 7. clean stop
systemctl stop ikefragd
[ "$(show ActiveState)" = inactive ] && [ "$(show Result)" = success ] && ok stop || bad stop "$(show ActiveState) $(show Result)"
[ "$(progs ingress)$(progs egress)" = 00 ] && ok "nothing left attached after stop" || bad "nothing left attached after stop" "$(listing)"

score=$(systemd-analyze security ikefragd --no-pager 2>/dev/null | awk '/Overall exposure level/{print $(NF-2), $(NF-1), $NF}')
echo "EXPOSURE ikefragd: $score"
systemd-analyze security ikefragd --no-pager > "$O/security.txt" 2>&1

# 8. the Debian package on the same machine, once make install's files are
# gone: install, start, upgrade keeping an edited configuration, purge
# leaving nothing behind
read -r deb1 deb2 <<< "$IKM_DEBS"
if [ -n "${deb1:-}" ] && [ -n "${deb2:-}" ]; then
	rm -f /usr/local/sbin/ikefragd /usr/local/bin/ikefragctl
	rm -rf /etc/systemd/system/ikefragd.service /etc/systemd/system/ikefragd.service.d /etc/ikefrag
	systemctl daemon-reload
	export DEBIAN_FRONTEND=noninteractive
	# man-db's trigger rebuilds the manual index of the whole shared root
	# over 9p, which takes longer than the test under emulation: off, as
	# in container images. Every apt call is bounded.
	rm -f /var/lib/man-db/auto-update
	if timeout 600 apt-get install -y -q "$deb1" > "$O/apt-install.log" 2>&1; then
		ok "apt install" "$(dpkg-query -W -f='${Package} ${Version}' ikefrag)"
	else
		bad "apt install" "$(tail -3 "$O/apt-install.log")"
	fi
	if systemctl start ikefragd && [ "$(show ActiveState)" = active ] && /usr/bin/ikefragctl status >/dev/null; then
		ok "package: start" "$(/usr/bin/ikefragctl version 2>&1 | tr '\n' ' ')"
	else
		bad "package: start" "$(journalctl -u ikefragd --no-pager -n 5 | tr '\n' ' ')"
	fi
	echo "# kept across upgrades" >> /etc/ikefrag/ikefragd.yaml
	if timeout 600 apt-get install -y -q "$deb2" > "$O/apt-upgrade.log" 2>&1 &&
		[ "$(dpkg-query -W -f='${Version}' ikefrag)" = "0.0~matrix2" ] && grep -q "kept across upgrades" /etc/ikefrag/ikefragd.yaml; then
		ok "package: upgrade keeps the edited configuration" "$(dpkg-query -W -f='${Version}' ikefrag)"
	else
		bad "package: upgrade keeps the edited configuration" "$(tail -3 "$O/apt-upgrade.log")"
	fi
	systemctl is-active -q ikefragd && ok "package: running after the upgrade" || bad "package: running after the upgrade" "$(show ActiveState)"
	files=$(dpkg -L ikefrag | while read -r f; do [ -f "$f" ] && echo "$f"; done)
	if timeout 600 apt-get purge -y -q ikefrag > "$O/apt-purge.log" 2>&1; then
		left=$(for f in $files /etc/ikefrag /run/ikefrag /etc/systemd/system/multi-user.target.wants/ikefragd.service; do [ -e "$f" ] && echo "$f"; done)
		[ -z "$left" ] && ok "package: purge leaves nothing" "$(echo "$files" | wc -l) files removed" || bad "package: purge leaves nothing" "$left"
	else
		bad "package: purge" "$(tail -3 "$O/apt-purge.log")"
	fi
	[ "$(progs ingress)$(progs egress)" = 00 ] && ok "package: nothing attached after purge" || bad "package: nothing attached after purge" "$(listing)"
fi

journalctl -u ikefragd --no-pager -o short-monotonic > "$O/journal.txt"
# the structured fields (ERR=...) of the daemon's warnings and errors
journalctl -u ikefragd --no-pager -o verbose -p warning > "$O/journal-verbose.txt"
exit $failed
