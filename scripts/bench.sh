#!/usr/bin/env bash
# scripts/bench.sh: what the engine costs, measured in one run (`make bench`), with the machine.
# It prints figures and ratios; it never fails on one.
#
#   in process   the root package's benchmarks against an in-process emulator: the baseline
#                (BenchmarkTookenClient, create + revoke through the plugin's client), the engine
#                (BenchmarkCreds, creds read + lease revoke through HandleRequest), both from
#                GOMAXPROCS*4 goroutines; plus Vault/creds and Vault/creds-parallel from below
#   through Vault  e2e BenchmarkVault, one Vault 1.14.1 dev server for every row, BENCH_CLIENTS
#                concurrent clients: KV-v2 put, the builtin SSH OTP creds + revoke, a no-op external
#                plugin with this engine's storage work (e2e/noopplugin), this engine's creds +
#                revoke and its creds read; throughput and CPU per operation of Vault, of the plugin
#                process and of the emulator process
#   scale        e2e BenchmarkVaultScale, one Vault each: idle plugin CPU per periodic run and RSS
#                at 0 and at BENCH_LEASES live leases, revocation storms against a 100 req/s
#                Tooken, RSS of one plugin process serving BENCH_MOUNTS mounts
#
# Rounds: the in-process benchmarks run BENCH_ROUNDS times in turn, and so do the Vault rows (in
# one Vault), so that background load hits all rows alike. A figure is the median over the rounds,
# a ratio the median of the per-round ratios, IQR the interquartile range over the rounds as a
# share of the median (how much the machine's load moved the figure).
#
# Knobs (environment):
#   BENCH_QUICK=1    a quick run, about a minute: the defaults in brackets; no idle CPU rows
#   BENCH_ROWS       which groups: inprocess,vault,leases,storm,mounts (default: all of them)
#   BENCH_ROUNDS     rounds of the in-process and Vault rows (10 [3])
#   BENCH_N          iterations per in-process benchmark and round (3000 [1000])
#   BENCH_VAULT_N    operations per Vault row and round (1000 [300])
#   BENCH_CLIENTS    concurrent clients of the Vault rows and of lease creation (8)
#   BENCH_LEASES     live leases of the scale row (100000 [2000])
#   BENCH_IDLE_RUNS  periodic runs (Vault makes one a minute) idle CPU is averaged over (2 [0: skip])
#   BENCH_STORM      leases revoked at once in each storm (5000 [300]; a storm not much larger than
#                    the limit's burst of 200 says little about the drain rate)
#   BENCH_MOUNTS     mounts served by one plugin process (100 [100])
#   BENCH_SETTLE     seconds a plugin's RSS must stop falling before it is read (10 [3])
#   BENCH_VAULT      auto: the Vault rows run when a Vault binary exists without building one;
#                    1: get one with scripts/vault.sh, building it if needed (~5 minutes once); 0: skip
# Raw `go test` output (benchstat format) is kept in a temporary file, named at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

QUICK=${BENCH_QUICK:-0}
q() { if [[ $QUICK == 1 ]]; then echo "$2"; else echo "$1"; fi; }
ROUNDS=${BENCH_ROUNDS:-$(q 10 3)}
N=${BENCH_N:-$(q 3000 1000)}
VAULT_N=${BENCH_VAULT_N:-$(q 1000 300)}
CLIENTS=${BENCH_CLIENTS:-8}
LEASES=${BENCH_LEASES:-$(q 100000 2000)}
IDLE_RUNS=${BENCH_IDLE_RUNS:-$(q 2 0)}
STORM=${BENCH_STORM:-$(q 5000 300)}
MOUNTS=${BENCH_MOUNTS:-100}
SETTLE=${BENCH_SETTLE:-$(q 10 3)}
ROWS=${BENCH_ROWS:-inprocess,vault,leases,storm,mounts}
WANT_VAULT=${BENCH_VAULT:-auto}
GO=${GO:-go}

die() { printf 'bench.sh: error: %s\n' "$*" >&2; exit 1; }
for kv in ROUNDS=$ROUNDS N=$N VAULT_N=$VAULT_N CLIENTS=$CLIENTS LEASES=$LEASES STORM=$STORM MOUNTS=$MOUNTS SETTLE=$SETTLE; do
	[[ ${kv#*=} =~ ^[1-9][0-9]*$ ]] || die "BENCH_${kv%%=*} must be a positive integer, got '${kv#*=}'"
done
[[ $IDLE_RUNS =~ ^[0-9]+$ ]] || die "BENCH_IDLE_RUNS must be an integer >= 0, got '$IDLE_RUNS'"
[[ $QUICK == 0 || $QUICK == 1 ]] || die "BENCH_QUICK must be 0 or 1"
[[ $WANT_VAULT == auto || $WANT_VAULT == 0 || $WANT_VAULT == 1 ]] || die "BENCH_VAULT must be auto, 0 or 1"
for g in ${ROWS//,/ }; do
	[[ $g =~ ^(inprocess|vault|leases|storm|mounts)$ ]] || die "BENCH_ROWS: unknown group '$g' (inprocess, vault, leases, storm, mounts)"
done
want() { [[ ,$ROWS, == *,$1,* ]]; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
RAW=$(mktemp "${TMPDIR:-/tmp}/tooken-bench.XXXXXX")
started=$(date +%s)

cpu=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo 2>/dev/null | head -n1)
machine="nproc $(nproc), ${cpu:-unknown CPU}, $($GO version | sed 's/^go version //')"

# vault_bin: a Vault 1.14.x binary when one exists already (BENCH_VAULT=auto) or at any cost (1).
vault_bin() {
	case $WANT_VAULT in
	0) return 1 ;;
	1) "$ROOT/scripts/vault.sh" ;;
	auto)
		local cached=${VAULT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-plugin-secrets-tooken/vault-1.14.1}/vault
		if [[ -n ${VAULT_BIN:-} || -x $cached ]] || { command -v vault >/dev/null && vault version 2>/dev/null | grep -q '^Vault v1\.14\.'; }; then
			"$ROOT/scripts/vault.sh"
		else
			return 1
		fi
		;;
	esac
}

load_start=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?")
echo "==> machine: $machine; load average $load_start"
echo "==> building the test binaries, the plugin, the emulator and the no-op plugin"
$GO test -c -o "$WORK/tooken.test" .
$GO test -c -o "$WORK/e2e.test" ./e2e
CGO_ENABLED=0 $GO build -trimpath -o "$WORK/vault-plugin-secrets-tooken" ./cmd/vault-plugin-secrets-tooken
CGO_ENABLED=0 $GO build -trimpath -o "$WORK/tooken-server" ./cmd/tooken-server
CGO_ENABLED=0 $GO build -trimpath -o "$WORK/noop-plugin" ./e2e/noopplugin
VAULT=""
if VAULT=$(vault_bin); then
	echo "==> Vault: $VAULT ($("$VAULT" version))"
else
	VAULT=""
	echo "==> Vault: skipped (BENCH_VAULT=$WANT_VAULT; BENCH_VAULT=1 builds one, ~5 minutes once)"
fi

run() { "$WORK/tooken.test" -test.run '^$' -test.benchmem -test.timeout 10m "$@"; }
# e2e runs the e2e test binary's benchmarks in e2e/ (as go test would) with the binaries and knobs.
e2e() {
	(cd "$ROOT/e2e" && env TOOKEN_E2E=1 VAULT_BIN="$VAULT" TOOKEN_PLUGIN_BIN="$WORK/vault-plugin-secrets-tooken" \
		TOOKEN_SERVER_BIN="$WORK/tooken-server" TOOKEN_NOOP_PLUGIN_BIN="$WORK/noop-plugin" \
		BENCH_ROUNDS="$ROUNDS" BENCH_CLIENTS="$CLIENTS" BENCH_LEASES="$LEASES" BENCH_IDLE_RUNS="$IDLE_RUNS" \
		BENCH_STORM="$STORM" BENCH_MOUNTS="$MOUNTS" BENCH_SETTLE="$SETTLE" \
		"$WORK/e2e.test" -test.run '^$' -test.timeout 3h "$@")
}
{
	echo "# $machine"
	echo "# scripts/bench.sh BENCH_ROWS=$ROWS BENCH_ROUNDS=$ROUNDS BENCH_N=$N BENCH_VAULT_N=$VAULT_N BENCH_CLIENTS=$CLIENTS" \
		"BENCH_LEASES=$LEASES BENCH_IDLE_RUNS=$IDLE_RUNS BENCH_STORM=$STORM BENCH_MOUNTS=$MOUNTS BENCH_SETTLE=$SETTLE"
} >"$RAW"
if want inprocess; then
	for ((r = 1; r <= ROUNDS; r++)); do
		printf '==> in process: round %d/%d\n' "$r" "$ROUNDS"
		run -test.bench '^Benchmark(TookenClient|Creds)(Parallel)?$' -test.benchtime "${N}x" >>"$RAW"
	done
fi
if [[ -n $VAULT ]]; then
	if want vault; then
		echo "==> through Vault: $ROUNDS rounds of $VAULT_N operations per row"
		e2e -test.bench '^BenchmarkVault$' -test.benchtime "${VAULT_N}x" >>"$RAW"
	fi
	scale=()
	want leases && scale+=(leases)
	want storm && scale+=(storm storm-sync)
	want mounts && scale+=(mounts)
	if ((${#scale[@]})); then
		echo "==> scale rows: ${scale[*]} ($LEASES leases, idle CPU over $IDLE_RUNS periodic runs, storms of $STORM, $MOUNTS mounts)"
		e2e -test.bench "^BenchmarkVaultScale\$/^($(
			IFS='|'
			echo "${scale[*]}"
		))\$" -test.benchtime 1x >>"$RAW"
	fi
fi
if grep -q -e '^--- FAIL' -e '^FAIL' "$RAW"; then
	cat "$RAW" >&2
	die "a benchmark failed (output above)"
fi

# TABLE prints the tables from the raw output. A benchmark line is "name iterations (value unit)...";
# the name loses its -GOMAXPROCS suffix and the #NN that marks the rounds of a Vault row.
read -r -d '' TABLE <<'AWK' || true
function sortv(a, n,    i, j, t) {
	for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
}
function median(a, n) { sortv(a, n); return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
# vals fills a with the figures of unit for row name over the rounds; it returns how many.
function vals(name, unit, a,    k, n) {
	n = 0; for (k = 1; k <= cnt[name]; k++) if ((name, unit, k) in m) a[++n] = m[name, unit, k]
	return n
}
function has(name, unit,    a) { return vals(name, unit, a) > 0 }
function med(name, unit,    a, n) { n = vals(name, unit, a); return n ? median(a, n) : "" }
function iqr(name, unit,    a, n, md) {
	n = vals(name, unit, a); if (!n) return 0
	md = median(a, n); if (!md) return 0
	return 100 * (a[n - int((n - 1) / 4)] - a[int((n - 1) / 4) + 1]) / md
}
# per-round ratio (op "/") or difference (op "-") of two rows' figures, median over the rounds.
function pair(n1, u1, n2, u2, op,    a, k, n) {
	n = 0
	for (k = 1; k <= cnt[n1] && k <= cnt[n2]; k++)
		if ((n1, u1, k) in m && (n2, u2, k) in m && (op == "-" || m[n2, u2, k] != 0))
			a[++n] = op == "/" ? m[n1, u1, k] / m[n2, u2, k] : m[n1, u1, k] - m[n2, u2, k]
	return n ? median(a, n) : ""
}
function cell(v, fmt) { return v == "" ? "-" : sprintf(fmt, v) }
/^Benchmark/ {
	name = $1; sub(/^Benchmark/, "", name); sub(/-[0-9]+$/, "", name); sub(/#[0-9]+$/, "", name)
	k = ++cnt[name]
	for (i = 3; i < NF; i += 2) m[name, $(i + 1), k] = $i
}
function inprocess(    nrows, row, ref, r, name, vs) {
	nrows = split("TookenClient Creds TookenClientParallel CredsParallel Vault/creds Vault/creds-parallel", row, " ")
	ref["Creds"] = "TookenClient"; ref["TookenClientParallel"] = "TookenClient"
	ref["CredsParallel"] = "Creds"; ref["Vault/creds"] = "Creds"; ref["Vault/creds-parallel"] = "Vault/creds"
	if (!cnt["TookenClient"] && !cnt["Vault/creds"]) return
	printf "%-24s %12s %7s %12s  %s\n", "benchmark", "ns/op", "IQR", "vs baseline", "vs reference"
	for (r = 1; r <= nrows; r++) {
		name = row[r]
		if (!cnt[name]) continue
		vs = (name in ref) && cnt[ref[name]] ? sprintf("%.2f x %s", pair(name, "ns/op", ref[name], "ns/op", "/"), ref[name]) : "-"
		printf "%-24s %12.0f %6.0f%% %12s  %s\n", name, med(name, "ns/op"), iqr(name, "ns/op"),
			cell(pair(name, "ns/op", "TookenClient", "ns/op", "/"), "%.2f"), vs
	}
	if (cnt["Creds"]) printf "\nCreds, per operation:  storage-gets/read=%g  storage-ops/read=%g  storage-ops/revoke=%g  upstream-reqs/read=%g\n",
		med("Creds", "storage-gets/read"), med("Creds", "storage-ops/read"), med("Creds", "storage-ops/revoke"), med("Creds", "upstream-reqs/read")
	if (cnt["Vault/creds"]) printf "Vault/creds: the read is %.0f%% of the time, the lease revoke the rest\n", 100 * pair("Vault/creds", "read-ns/op", "Vault/creds", "ns/op", "/")
	print ""
}
function vault(    nrows, row, label, r, name, d) {
	if (!cnt["Vault/kv-put"]) return
	nrows = split("Vault/kv-put Vault/ssh-otp Vault/noop Vault/creds-parallel Vault/creds-read", row, " ")
	label["Vault/kv-put"] = "KV-v2 put"; label["Vault/ssh-otp"] = "SSH OTP creds + revoke (builtin)"
	label["Vault/noop"] = "no-op plugin creds + revoke"; label["Vault/creds-parallel"] = "tooken creds + revoke"
	label["Vault/creds-read"] = "tooken creds read"
	printf "Through one Vault 1.14.1 dev server, %d concurrent clients (median of %d rounds of %d operations):\n", clients, rounds, vault_n
	printf "%-34s %8s %6s %12s %13s %15s\n", "row", "ops/s", "IQR", "Vault us/op", "plugin us/op", "emulator us/op"
	for (r = 1; r <= nrows; r++) {
		name = row[r]
		if (!cnt[name]) continue
		printf "%-34s %8.0f %5.0f%% %12s %13s %15s\n", label[name], med(name, "ops/s"), iqr(name, "ops/s"),
			cell(med(name, "vault-us/op"), "%.0f"), cell(med(name, "plugin-us/op"), "%.0f"), cell(med(name, "emulator-us/op"), "%.0f")
	}
	if (cnt["Vault/noop"] && cnt["Vault/creds-parallel"]) {
		printf "\ntooken creds + revoke / no-op plugin, throughput:    %.2f     (target >= 0.80)\n", pair("Vault/creds-parallel", "ops/s", "Vault/noop", "ops/s", "/")
		d = pair("Vault/creds-parallel", "plugin-us/op", "Vault/noop", "plugin-us/op", "-")
		printf "plugin CPU per creds + revoke, tooken - no-op:       %+.0f us  (target <= +100 us)\n", d
		printf "Vault CPU per creds + revoke, tooken / no-op:        %.2f\n", pair("Vault/creds-parallel", "vault-us/op", "Vault/noop", "vault-us/op", "/")
	}
	print ""
}
function scale(    s, n0, nN, share) {
	if (!cnt["VaultScale/leases"] && !cnt["VaultScale/storm"] && !cnt["VaultScale/storm-sync"] && !cnt["VaultScale/mounts"]) return
	print "Scale (one measurement each):"
	s = "VaultScale/leases"
	if (cnt[s]) {
		nN = med(s, "leases")
		printf "  created %d leases in %.1f s (%.0f/s, %d clients, lease TTL 24h)\n", nN, med(s, "create-s"), nN / med(s, "create-s"), clients
		if (has(s, "idle0-us/run")) {
			printf "  idle plugin CPU per periodic run: %.0f us at 0 leases, %.0f us at %d (%.2f x), over %d runs each\n",
				med(s, "idle0-us/run"), med(s, "idleN-us/run"), nN, med(s, "idleN-us/run") / med(s, "idle0-us/run"), med(s, "idle-runs")
			if (has(s, "first-us/run"))
				printf "  (the first periodic run after creating them, which deletes the pending records of the last minute's reads: %.0f us)\n", med(s, "first-us/run")
		} else
			print "  idle plugin CPU per periodic run: not measured (BENCH_IDLE_RUNS=0)"
		n0 = med(s, "rss0-MiB")
		printf "  plugin RSS: %.1f MiB at 0 leases, %.1f MiB at %d: %.2f x   (target <= 1.20; %+.0f bytes per lease)\n",
			n0, med(s, "rssN-MiB"), nN, med(s, "rssN-MiB") / n0, (med(s, "rssN-MiB") - n0) * 1048576 / nN
	}
	split("VaultScale/storm VaultScale/storm-sync", st, " ")
	stlabel["VaultScale/storm"] = "async, Vault's expiration workers (lease revoke -prefix, mass expiry)"
	stlabel["VaultScale/storm-sync"] = "sync, one lease after the other (API revoke-prefix)"
	for (i = 1; i <= 2; i++) {
		s = st[i]
		if (!cnt[s]) continue
		share = 100 * med(s, "beyond-burst-rps") / med(s, "limit-rps")
		printf "  revocation storm of %d leases, Tooken at %d req/s (burst %d), %s:\n", med(s, "storm-leases"), med(s, "limit-rps"), med(s, "burst"), stlabel[s]
		printf "    drained in %.1f s: %.1f revokes/s; beyond the burst %.1f/s = %.0f%% of the limit   (target >= 90%%)\n",
			med(s, "drain-s"), med(s, "drain-rps"), med(s, "beyond-burst-rps"), share
	}
	s = "VaultScale/mounts"
	if (cnt[s]) printf "  %d mounts in one plugin process: RSS %.1f MiB   (target <= 64 MiB)\n", med(s, "mounts"), med(s, "rss-MiB")
}
END { inprocess(); vault(); scale() }
AWK

load_end=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?")
elapsed=$(($(date +%s) - started))
echo
echo "machine: $machine; load average $load_start at start, $load_end at end"
echo "command: make bench   (scripts/bench.sh, BENCH_QUICK=$QUICK: $ROUNDS rounds; $N iterations in process," \
	"$VAULT_N per Vault row; $CLIENTS clients; took $((elapsed / 60))m$((elapsed % 60))s)"
echo
awk -v rounds="$ROUNDS" -v clients="$CLIENTS" -v vault_n="$VAULT_N" -v idle_runs="$IDLE_RUNS" "$TABLE" "$RAW"
echo
echo "(Raw output: $RAW)"
# Other work on the machine takes the cores the parallel rows need: say so.
if awk -v l="$load_start" -v m="$load_end" -v n="$(nproc)" 'BEGIN { exit !(l + 0 > n / 2 || m + 0 > n / 2) }'; then
	echo "note: the machine was busy (load average above nproc/2): the Parallel rows understate scaling, and"
	echo "      the figures moved more than usual (IQR column). Run again on an idle machine to compare."
fi
