#!/usr/bin/env bash
# scripts/bench.sh: the engine's cost as ratios against a baseline measured in the same run
# (run through `make bench`). Absolute ns/op depend on the machine; the ratios much less.
#
#   baseline        BenchmarkTookenClient: create + revoke through the plugin's Client, emulator in process
#   engine          BenchmarkCreds: creds read + lease revoke through HandleRequest (in-memory storage)
#   concurrency     the same two from GOMAXPROCS*4 goroutines (b.RunParallel)
#   real Vault      BenchmarkVault: creds read + lease revoke through a Vault 1.14.1 dev server's API
#
# The test binary is built once and run BENCH_ROUNDS times; each round runs every benchmark once,
# so background load spreads over all of them alike. A figure is the median over the rounds; a
# ratio is the median of the per-round ratios; IQR is the interquartile range of ns/op over the
# rounds, as a share of the median (how much the machine's load moved the figure).
#
# Knobs: BENCH_ROUNDS (10), BENCH_N (3000 iterations per in-process benchmark and round),
# BENCH_VAULT_N (300), BENCH_VAULT (auto: only when a Vault binary exists without building one;
# 1: get one with scripts/vault.sh, building it if needed, ~5 minutes once; 0: skip).
# Raw `go test` output (benchstat format) is kept in a temporary file, named at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ROUNDS=${BENCH_ROUNDS:-10}
N=${BENCH_N:-3000}
VAULT_N=${BENCH_VAULT_N:-300}
WANT_VAULT=${BENCH_VAULT:-auto}
GO=${GO:-go}

die() { printf 'bench.sh: error: %s\n' "$*" >&2; exit 1; }
[[ $ROUNDS =~ ^[1-9][0-9]*$ && $N =~ ^[1-9][0-9]*$ && $VAULT_N =~ ^[1-9][0-9]*$ ]] ||
	die "BENCH_ROUNDS, BENCH_N and BENCH_VAULT_N must be positive integers"
[[ $WANT_VAULT == auto || $WANT_VAULT == 0 || $WANT_VAULT == 1 ]] || die "BENCH_VAULT must be auto, 0 or 1"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
RAW=$(mktemp "${TMPDIR:-/tmp}/tooken-bench.XXXXXX")

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
echo "==> building the test binary and the plugin"
$GO test -c -o "$WORK/tooken.test" .
CGO_ENABLED=0 $GO build -trimpath -o "$WORK/vault-plugin-secrets-tooken" ./cmd/vault-plugin-secrets-tooken
VAULT=""
if VAULT=$(vault_bin); then
	echo "==> Vault: $VAULT ($("$VAULT" version))"
else
	VAULT=""
	echo "==> Vault: skipped (BENCH_VAULT=$WANT_VAULT; BENCH_VAULT=1 builds one, ~5 minutes once)"
fi

run() { "$WORK/tooken.test" -test.run '^$' -test.benchmem -test.timeout 10m "$@"; }
{
	echo "# $machine"
	echo "# scripts/bench.sh BENCH_ROUNDS=$ROUNDS BENCH_N=$N BENCH_VAULT_N=$VAULT_N"
} >"$RAW"
for ((r = 1; r <= ROUNDS; r++)); do
	printf '==> round %d/%d\n' "$r" "$ROUNDS"
	run -test.bench '^Benchmark(TookenClient|Creds)(Parallel)?$' -test.benchtime "${N}x" >>"$RAW"
	if [[ -n $VAULT ]]; then
		TOOKEN_BENCH_VAULT_BIN=$VAULT TOOKEN_BENCH_PLUGIN_BIN="$WORK/vault-plugin-secrets-tooken" \
			run -test.bench '^BenchmarkVault$' -test.benchtime "${VAULT_N}x" >>"$RAW"
	fi
done
if grep -q -e '^--- FAIL' -e '^FAIL' "$RAW"; then
	cat "$RAW" >&2
	die "a benchmark failed (output above)"
fi

load_end=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?")
echo
echo "machine: $machine; load average $load_start at start, $load_end at end"
echo "command: make bench   (scripts/bench.sh: $ROUNDS rounds; $N iterations in process, $VAULT_N through Vault)"
echo
# Rows: benchmark, what it is, the row it is compared with (besides the baseline).
awk -v rounds="$ROUNDS" '
	function median(a, n,    i, j, t) {
		for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	BEGIN {
		nrows = split("TookenClient Creds TookenClientParallel CredsParallel Vault/creds Vault/creds-parallel", row, " ")
		ref["Creds"] = "TookenClient"; ref["TookenClientParallel"] = "TookenClient"
		ref["CredsParallel"] = "Creds"; ref["Vault/creds"] = "Creds"; ref["Vault/creds-parallel"] = "Vault/creds"
	}
	/^Benchmark/ {
		name = $1; sub(/^Benchmark/, "", name); sub(/-[0-9]+$/, "", name)
		for (i = 2; i < NF; i++) if ($(i + 1) == "ns/op") ns = $i
		k = ++cnt[name]; v[name, k] = ns
		if (name == "Creds") {
			extra = ""
			for (i = 3; i < NF; i++) if ($(i + 1) ~ /^(storage|upstream)/) extra = extra sprintf("  %s=%g", $(i + 1), $i)
		}
		if (name == "Vault/creds") for (i = 3; i < NF; i++) if ($(i + 1) == "read-ns/op") { rk = ++rcnt; rd[rk] = $i / ns }
	}
	END {
		base = "TookenClient"
		printf "%-24s %12s %7s %12s  %s\n", "benchmark", "ns/op", "IQR", "vs baseline", "vs reference"
		for (r = 1; r <= nrows; r++) {
			name = row[r]; n = cnt[name]
			if (!n) continue
			for (k = 1; k <= n; k++) { a[k] = v[name, k] } ; med = median(a, n)
			q1 = a[int((n - 1) / 4) + 1]; q3 = a[n - int((n - 1) / 4)]
			# Per-round ratios (round k of each benchmark ran in the same process run or the next one).
			m = 0; for (k = 1; k <= n && k <= cnt[base]; k++) a[++m] = v[name, k] / v[base, k]
			rb = median(a, m)
			vs = "-"
			if (name in ref) {
				m = 0; for (k = 1; k <= n && k <= cnt[ref[name]]; k++) a[++m] = v[name, k] / v[ref[name], k]
				vs = sprintf("%.2f x %s", median(a, m), ref[name])
			}
			printf "%-24s %12.0f %6.0f%% %12.2f  %s\n", name, med, 100 * (q3 - q1) / med, rb, vs
		}
		if (extra != "") printf "\nCreds, per operation:%s\n", extra
		if (rcnt) { for (k = 1; k <= rcnt; k++) a[k] = rd[k]; printf "Vault/creds: the read is %.0f%% of the time, the lease revoke the rest\n", 100 * median(a, rcnt) }
	}
' "$RAW"
echo
echo "(ns/op: median of $ROUNDS rounds; Parallel rows: wall time per operation with GOMAXPROCS*4 goroutines,"
echo " so a ratio below 1 against the serial row is the throughput gain. Raw output: $RAW)"
# Other work on the machine takes the cores the parallel rows need: say so.
if awk -v l="$load_start" -v m="$load_end" -v n="$(nproc)" 'BEGIN { exit !(l + 0 > n / 2 || m + 0 > n / 2) }'; then
	echo "note: the machine was busy (load average above nproc/2): the Parallel rows understate scaling, and"
	echo "      the figures moved more than usual (IQR column). Run again on an idle machine to compare."
fi
