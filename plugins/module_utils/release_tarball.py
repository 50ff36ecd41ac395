# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What an OTP release tarball (``mix release`` with the ``:tar`` step, or ``rebar3 tar``) holds, read in one pass.

``inspect(path, name) -> dict``::

    exists, readable     the path is a regular file this process can read
    sha256               its SHA-256 (hex)
    version, erts_version  from releases/start_erl.data ("ERTS VSN"), "" when missing
    start_script         it has bin/<name> (it is the <name> release)
    applications         the applications in lib/ that have a resource file (``ssl`` for TLS distribution)
    error                why it could not be read ("" when it could)
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import tarfile


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inspect(path, name):
    info = {"exists": os.path.exists(path), "readable": False, "sha256": "", "version": "", "erts_version": "",
            "start_script": False, "applications": [], "error": ""}
    if not info["exists"]:
        info["error"] = "does not exist"
        return info
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        info["error"] = "is not a readable regular file"
        return info
    info["readable"] = True
    info["sha256"] = _sha256(path)
    applications = set()
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                parts = member.name.lstrip("./").split("/")
                if parts[-2:] == ["releases", "start_erl.data"] and member.isfile():
                    fields = archive.extractfile(member).read(256).decode("utf-8", "replace").split()
                    if len(fields) == 2:
                        info["erts_version"], info["version"] = fields
                elif parts[-2:] == ["bin", name]:
                    info["start_script"] = True
                elif len(parts) >= 4 and parts[-4] == "lib" and parts[-2] == "ebin" and parts[-1].endswith(".app"):
                    # lib/<app>-<vsn>/ebin/<app>.app: the application resource file names the application
                    applications.add(parts[-1][:-len(".app")])
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        info["error"] = "is not a readable tar archive (%s)" % exc
    info["applications"] = sorted(applications)
    return info
