"""Where the tests find the two Erlang/OTP generations they run against.

OTP 25 is Debian's (`apt-get install erlang-base`); OTP 28 is unpacked by
`scripts/install-otp28.sh` (it carries only kernel, stdlib and crypto: no ssl, no inets).
"""
import os
import shutil

OTP28_ROOT = os.environ.get("BEAMOPS_OTP28_ROOT", "/var/cache/beamops/otp28")


def runtimes():
    """Map of OTP release ("25", "28") to the path of its `erl`, for those installed."""
    found = {}
    erl25 = shutil.which("erl") or "/usr/bin/erl"
    if os.access(erl25, os.X_OK):
        found["25"] = erl25
    erl28 = os.path.join(OTP28_ROOT, "bin", "erl")
    if os.access(erl28, os.X_OK):
        found["28"] = erl28
    return found


def erl_call(release):
    """Path of erl_call for an OTP release."""
    if release == "28":
        return os.path.join(OTP28_ROOT, "bin", "erl_call")
    for candidate in ("/usr/lib/erlang/bin/erl_call",):
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("erl_call")
