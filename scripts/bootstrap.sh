#!/usr/bin/env bash
# Installs everything the demo and the tests need on a Debian bookworm machine, as root:
# Debian packages (Erlang/OTP 25, Elixir, rebar3, the lab's tools), a virtualenv in .venv with the
# Python requirements, and the second OTP generation (28) for the tests. Safe to run again: each step
# is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '==> %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "bootstrap: run as root (the lab makes network namespaces and systemd-nspawn hosts)" >&2
  exit 1
fi

APT_PACKAGES=(
  erlang-base erlang-dev erlang-crypto erlang-ssl erlang-public-key erlang-asn1 erlang-inets
  erlang-syntax-tools erlang-parsetools erlang-tools erlang-runtime-tools erlang-xmerl erlang-eunit
  elixir rebar3
  debootstrap systemd-container dnsmasq-base nftables iproute2 openssh-client openssl
  python3-venv git make rsync shellcheck chromium
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "apt: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "apt: all ${#APT_PACKAGES[@]} packages already installed"
fi

stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-test.txt | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  say "venv: .venv is up to date"
else
  say "venv: installing Python requirements into .venv"
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -m pip install -q -r requirements-test.txt 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c 'import ansible, molecule, pytest, hypothesis' 
  echo "$want" > "$stamp"
fi

# checkov (offline Kubernetes manifest checks, tests only) has heavy dependencies: its own venv, outside the repo,
# so that it can never break Ansible's. Skipped when that version is already there.
CHECKOV_VERSION=3.3.30
CHECKOV_VENV=${BEAMOPS_CHECKOV_VENV:-/var/cache/beamops/venv-checkov}
if [ -x "$CHECKOV_VENV/bin/checkov" ] && [ "$(cat "$CHECKOV_VENV/.version" 2>/dev/null)" = "$CHECKOV_VERSION" ]; then
  say "checkov: $CHECKOV_VENV has checkov $CHECKOV_VERSION"
else
  say "checkov: installing checkov $CHECKOV_VERSION into $CHECKOV_VENV (about 2 minutes)"
  rm -rf "$CHECKOV_VENV"
  python3 -m venv "$CHECKOV_VENV"
  "$CHECKOV_VENV/bin/python" -m pip install -q "checkov==$CHECKOV_VERSION" 2>&1 | grep -v '^WARNING: Location' || true
  "$CHECKOV_VENV/bin/checkov" --version >/dev/null
  echo "$CHECKOV_VERSION" > "$CHECKOV_VENV/.version"
fi

say "OTP 28: $(PIP=".venv/bin/python -m pip" bash scripts/install-otp28.sh 2>&1 | grep -v '^WARNING: Location' | tail -1)"
