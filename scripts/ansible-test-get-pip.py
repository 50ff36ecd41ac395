"""Offline stand-in for the pip bootstrap script that ansible-test downloads.

ansible-test fetches get-pip.py from a host this machine cannot reach. This script does the same
job from what Python ships and PyPI: it installs the bundled pip with ensurepip, then asks that pip
for the exact packages ansible-test requested (for example pip==24.2). scripts/test.sh copies it to
the cache path ansible-test looks in first.
"""
import ensurepip
import os
import subprocess
import sys

GET_PIP_ONLY_FLAGS = {"--no-setuptools", "--no-wheel", "--no-pip"}


def main():
    args = [a for a in sys.argv[1:] if a not in GET_PIP_ONLY_FLAGS]
    ensurepip.bootstrap(upgrade=False, default_pip=True)
    # ansible-test runs this with a trimmed environment; the bundled pip then ignores the system's CA
    # bundle from pip.conf, so name it explicitly.
    cert = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
    cert_args = ["--cert", cert] if os.path.exists(cert) else []
    sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--quiet"] + cert_args + args))


if __name__ == "__main__":
    main()
