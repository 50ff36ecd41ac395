#!/usr/bin/env bash
# Build the test releases from source, offline, into a directory outside git:
#   meshprobe (Elixir mix release; libcluster-format discovery)  meshprobe-<vsn>.tar.gz
#   erlprobe  (Erlang rebar3/relx release; native discovery)     erlprobe-<vsn>.tar.gz
# Versions ending in "-broken" answer 500 on /health (for health-gated rollback tests);
# meshprobe-<vsn>-noruntime is built without config/runtime.exs.
#
# Usage: scripts/build-testapps.sh [OUT_DIR]     (default: <repo>/build/testapps, or $BEAMOPS_TESTAPPS_DIR)
# A tarball is rebuilt only when the sources, this script or the toolchain changed (a hash of all
# three is kept next to it). Prints one line per tarball and writes OUT_DIR/SHA256SUMS.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED_OUT="${BEAMOPS_TESTAPPS_DIR:-$REPO/build/testapps}"
OUT="${1:-$SHARED_OUT}"
MESHPROBE_VERSIONS=(0.1.0 0.2.0 0.3.0-broken 0.1.0-noruntime)
ERLPROBE_VERSIONS=(0.1.0 0.2.0 0.3.0-broken)

for tool in mix elixir rebar3 erl sha256sum tar flock; do
  command -v "$tool" >/dev/null || { echo "build-testapps: '$tool' not found; install erlang-base, erlang-dev, elixir and rebar3 (apt-get install -y erlang-base erlang-dev elixir rebar3)" >&2; exit 2; }
done

mkdir -p "$OUT/work"
OUT="$(cd "$OUT" && pwd)"

# One build at a time per output directory (tests and playbooks may call this concurrently).
exec 9>"$OUT/.lock"
flock 9

# Private, writable homes: no ~/.mix, ~/.hex or ~/.cache/rebar3 of whoever runs this (CI runs as
# root with no network). There are no Hex dependencies, so nothing is ever fetched.
export HOME="$OUT/work/home"
export MIX_HOME="$HOME/mix" MIX_ARCHIVES="$HOME/mix/archives" HEX_HOME="$HOME/hex" HEX_OFFLINE=1
export REBAR_CACHE_DIR="$HOME/rebar3-cache" REBAR_GLOBAL_CONFIG_DIR="$HOME/rebar3-config"
export REBAR_OFFLINE=1 REBAR_COLOR=none MIX_ENV=prod
unset MIX_BUILD_PATH MIX_DEPS_PATH ERL_LIBS ERL_AFLAGS ERL_ZFLAGS ERL_FLAGS
mkdir -p "$MIX_HOME" "$REBAR_CACHE_DIR" "$REBAR_GLOBAL_CONFIG_DIR"

toolchain="$(erl -noshell -eval 'io:format("~s", [erlang:system_info(otp_release)]), halt().') $(elixir --version | tail -1) $(rebar3 version)"

# Hash of an app's source tree (file names and contents), this script and the toolchain.
source_hash() {
  local app_dir="$1"
  {
    (cd "$app_dir" && find . -type f -not -path './_build/*' -not -path './deps/*' -print0 \
      | sort -z | xargs -0 sha256sum)
    sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1
    echo "$toolchain"
  } | sha256sum | cut -d' ' -f1
}

# built_from TARBALL HASH: the tarball exists and was built from sources with that hash.
built_from() {
  [[ -f "$1" && -f "$1.srchash" && "$(cat "$1.srchash")" == "$2" ]]
}

# build_one APP VSN HASH: copy the sources to a per-version work tree, build, move the tarball out.
build_one() {
  local app="$1" vsn="$2" hash="$3"
  local tarball="$OUT/$app-$vsn.tar.gz" work="$OUT/work/$app-$vsn" log="$OUT/work/$app-$vsn.log"
  if built_from "$tarball" "$hash"; then
    echo "up to date  $tarball"
    return 0
  fi
  # Another output directory (a Molecule scenario's own) takes a copy of the default build when that one was
  # built from the same sources; a copy, so a later rebuild of the default cannot change it under the scenario.
  local shared="$SHARED_OUT/$app-$vsn.tar.gz"
  if [[ "$OUT" != "$SHARED_OUT" ]] && built_from "$shared" "$hash"; then
    cp -f "$shared" "$tarball.tmp" && mv -f "$tarball.tmp" "$tarball"
    echo "$hash" >"$tarball.srchash"
    echo "copied      $tarball (from $SHARED_OUT)"
    return 0
  fi
  rm -rf "$work"
  mkdir -p "$work"
  (cd "$REPO/testapps/$app" && tar --exclude=./_build --exclude=./deps -cf - .) | tar -xf - -C "$work"
  local built
  if [[ "$app" == meshprobe ]]; then
    if [[ "$vsn" == *-noruntime ]]; then rm -f "$work/config/runtime.exs"; fi
    (cd "$work" && MESHPROBE_VSN="$vsn" mix release --overwrite) >"$log" 2>&1 || {
      echo "build-testapps: building $app $vsn failed; log: $log" >&2; tail -20 "$log" >&2; return 1; }
    built="$work/_build/prod/$app-$vsn.tar.gz"
  else
    (cd "$work" && ERLPROBE_VSN="$vsn" rebar3 tar) >"$log" 2>&1 || {
      echo "build-testapps: building $app $vsn failed; log: $log" >&2; tail -20 "$log" >&2; return 1; }
    built="$work/_build/default/rel/$app/$app-$vsn.tar.gz"
  fi
  mv -f "$built" "$tarball.tmp"
  mv -f "$tarball.tmp" "$tarball"
  echo "$hash" >"$tarball.srchash"
  rm -rf "$work"
  echo "built       $tarball"
}

meshprobe_hash="$(source_hash "$REPO/testapps/meshprobe")"
erlprobe_hash="$(source_hash "$REPO/testapps/erlprobe")"

# Two builds at a time (CI has 2 cores); each job's output is one line.
pids=()
for vsn in "${MESHPROBE_VERSIONS[@]}"; do
  build_one meshprobe "$vsn" "$meshprobe_hash" & pids+=($!)
  if (( ${#pids[@]} >= 2 )); then wait "${pids[0]}" || failed=1; pids=("${pids[@]:1}"); fi
done
for vsn in "${ERLPROBE_VERSIONS[@]}"; do
  build_one erlprobe "$vsn" "$erlprobe_hash" & pids+=($!)
  if (( ${#pids[@]} >= 2 )); then wait "${pids[0]}" || failed=1; pids=("${pids[@]:1}"); fi
done
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
if [[ "${failed:-0}" == 1 ]]; then
  echo "build-testapps: some builds failed (see above)" >&2
  exit 1
fi

(cd "$OUT" && sha256sum meshprobe-*.tar.gz erlprobe-*.tar.gz >SHA256SUMS.tmp && mv -f SHA256SUMS.tmp SHA256SUMS)
echo "test releases in $OUT (checksums: $OUT/SHA256SUMS)"
