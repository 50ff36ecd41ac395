# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The configuration files a node reads at boot, written in one pass, with a snapshot a failed deploy restores.

A file spec is a dict: ``path``, ``state`` (``present``, ``directory``, ``link`` or ``absent``), ``owner``, ``group``
and ``mode`` (octal text such as ``"0640"``) for ``present`` and ``directory``, ``content`` (text) for ``present``,
``src`` (where the symbolic link points) for ``link``.
``absent`` removes a file or a whole directory. Specs apply in order (list a directory before its files). A present
file may have ``validate``, an argv whose ``%s`` is replaced by the path of the new content before it is put in
place (for example ``["/usr/sbin/nft", "-c", "-f", "%s"]``); a non-zero exit refuses the file and writes nothing.

``plan(specs)``
    What writing would change, without touching anything: a list of ``{"path", "changed", "before", "after"}``
    (``before``/``after`` are the texts for a diff; ``None`` where there is no file).
``apply(specs, snapshot_dir=None)``
    Writes what differs (content, owner, group or mode), each file atomically (a temporary file in the same
    directory, then a rename), creating missing parent directories as root-owned 0755. With ``snapshot_dir``,
    first keeps in it, for every path about to change, a copy of the file as it is (content, owner, group, mode)
    or a note that it did not exist; an earlier snapshot of the same path is never overwritten, so several calls
    of one deploy add to one snapshot. Returns the ``plan`` entries.
``restore(snapshot_dir)``
    Puts every snapshotted path back as it was (a file that did not exist is removed again) and removes the
    snapshot; returns the restored paths. ``discard(snapshot_dir)`` removes a snapshot.

Errors are ``ConfigFileError`` naming the path.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
import tempfile

MANIFEST = "manifest.json"


class ConfigFileError(Exception):
    pass


def _ids(spec):
    try:
        uid = pwd.getpwnam(spec["owner"]).pw_uid
    except KeyError:
        raise ConfigFileError("%s: owner %s does not exist on this host" % (spec["path"], spec["owner"]))
    try:
        gid = grp.getgrnam(spec["group"]).gr_gid
    except KeyError:
        raise ConfigFileError("%s: group %s does not exist on this host" % (spec["path"], spec["group"]))
    return uid, gid


def _mode(spec):
    try:
        mode = int(str(spec["mode"]), 8)
    except ValueError:
        raise ConfigFileError("%s: mode must be octal text such as '0640', not %r" % (spec["path"], spec["mode"]))
    if mode & ~0o7777:
        raise ConfigFileError("%s: mode %r is out of range" % (spec["path"], spec["mode"]))
    return mode


def _read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def _text(data):
    if data is None:
        return None
    return data.decode("utf-8", "replace")


def check_specs(specs):
    """Raise ConfigFileError for a spec that cannot be applied (before anything is written)."""
    seen = set()
    for spec in specs:
        path = spec.get("path")
        if not path or not os.path.isabs(path):
            raise ConfigFileError("path must be an absolute path, not %r" % (path,))
        if path in seen:
            raise ConfigFileError("%s is listed twice" % path)
        seen.add(path)
        state = spec.get("state", "present")
        if state not in ("present", "directory", "link", "absent"):
            raise ConfigFileError("%s: state must be present, directory, link or absent, not %r" % (path, state))
        if state == "link":
            if not spec.get("src"):
                raise ConfigFileError("%s: src (where the link points) is required for a link" % path)
            if os.path.isdir(path) and not os.path.islink(path):
                raise ConfigFileError("%s is a directory, not a link" % path)
        elif state != "absent":
            for key in ("content", "owner", "group", "mode") if state == "present" else ("owner", "group", "mode"):
                if spec.get(key) is None:
                    raise ConfigFileError("%s: %s is required for a %s entry" % (path, key, state))
            _mode(spec)
            if state == "present" and os.path.isdir(path):
                raise ConfigFileError("%s is a directory, not a file" % path)


def _differs(spec):
    path = spec["path"]
    if spec.get("state", "present") == "absent":
        return os.path.lexists(path)
    if spec.get("state") == "link":
        return not os.path.islink(path) or os.readlink(path) != spec["src"]
    try:
        st = os.lstat(path)
    except OSError:
        return True
    directory = spec.get("state") == "directory"
    if not (stat.S_ISDIR(st.st_mode) if directory else stat.S_ISREG(st.st_mode)):
        return True
    try:
        uid, gid = _ids(spec)
    except ConfigFileError:
        return True  # the user or group is made later in this run (or in check mode, not at all): the file changes
    if (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) != (uid, gid, _mode(spec)):
        return True
    return not directory and _read(path) != spec["content"].encode("utf-8")


def plan(specs):
    check_specs(specs)
    entries = []
    for spec in specs:
        changed = _differs(spec)
        before = after = None
        if changed and not spec.get("secret") and spec.get("state") in ("present", "absent", None):
            before = _text(_read(spec["path"])) if os.path.isfile(spec["path"]) else None
            after = spec["content"] if spec.get("state", "present") == "present" else None
        entries.append({"path": spec["path"], "changed": changed, "before": before, "after": after})
    return entries


def _load_manifest(snapshot_dir):
    try:
        with open(os.path.join(snapshot_dir, MANIFEST)) as handle:
            return json.load(handle)
    except (IOError, OSError):
        return {}
    except ValueError:
        raise ConfigFileError("the snapshot %s is damaged (%s is not JSON); remove it by hand after checking the node's "
                              "configuration" % (snapshot_dir, MANIFEST))


def _save_manifest(snapshot_dir, manifest):
    tmp = os.path.join(snapshot_dir, MANIFEST + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(tmp, os.path.join(snapshot_dir, MANIFEST))


def _keep(path, snapshot_dir, manifest):
    """Record ``path`` as it is now, once per snapshot."""
    if path in manifest:
        return
    entry = {"kind": "missing"}
    if os.path.isdir(path) and not os.path.islink(path):
        entry = {"kind": "tree", "copy": "tree-%d" % len(manifest)}
        shutil.copytree(path, os.path.join(snapshot_dir, entry["copy"]), symlinks=True, copy_function=shutil.copy2)
        _copy_ownership_tree(path, os.path.join(snapshot_dir, entry["copy"]))
    elif os.path.lexists(path):
        st = os.lstat(path)
        entry = {"kind": "file", "copy": "file-%d" % len(manifest), "uid": st.st_uid, "gid": st.st_gid,
                 "mode": stat.S_IMODE(st.st_mode)}
        shutil.copy2(path, os.path.join(snapshot_dir, entry["copy"]), follow_symlinks=False)
    manifest[path] = entry
    _save_manifest(snapshot_dir, manifest)


def _copy_ownership_tree(source, dest):
    for root, dirs, files in os.walk(source):
        for name in [""] + dirs + files:
            src = os.path.join(root, name) if name else root
            dst = os.path.join(dest, os.path.relpath(src, source))
            st = os.lstat(src)
            os.lchown(dst, st.st_uid, st.st_gid)


def validate(spec, tmp):
    """Run the spec's ``validate`` argv on ``tmp``; raise ConfigFileError with its output when it refuses the file."""
    argv = [part.replace("%s", tmp) for part in spec.get("validate") or []]
    if not argv:
        return
    if not any("%s" in part for part in spec["validate"]):
        raise ConfigFileError("%s: validate must contain %%s (where the new file's path goes), got %r" % (spec["path"], spec["validate"]))
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as exc:
        raise ConfigFileError("%s: cannot run validate command %s: %s" % (spec["path"], argv[0], exc))
    out = proc.communicate()[0].decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        raise ConfigFileError("%s: the new content was refused by %s (exit %d): %s"
                              % (spec["path"], " ".join(spec["validate"]), proc.returncode, out))


def _write(spec):
    path = spec["path"]
    uid, gid = _ids(spec)
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    fd, tmp = tempfile.mkstemp(prefix=".beamops-", dir=directory)
    try:
        # Owner and mode are set before any content lands, so a secret is never readable by others, even briefly.
        os.fchown(fd, uid, gid)
        os.fchmod(fd, _mode(spec))
        with os.fdopen(fd, "wb") as handle:
            handle.write(spec["content"].encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _make_directory(spec):
    path = spec["path"]
    uid, gid = _ids(spec)
    if os.path.lexists(path) and not os.path.isdir(path):
        os.unlink(path)
    if not os.path.isdir(path):
        os.makedirs(path, 0o700)
    os.chown(path, uid, gid)
    os.chmod(path, _mode(spec))


def _link(spec):
    """Point ``path`` at ``src``, replacing what is there atomically (a new link renamed over it)."""
    path = spec["path"]
    tmp = os.path.join(os.path.dirname(path), ".beamops-link-%d" % os.getpid())
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(spec["src"], tmp)
    os.rename(tmp, path)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _validate_all(specs):
    """Check every new content that has a validate command before anything is written (no half-written config)."""
    for spec in specs:
        if spec.get("validate") and spec.get("state", "present") == "present":
            fd, tmp = tempfile.mkstemp(prefix="beamops-validate-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(spec["content"].encode("utf-8"))
                validate(spec, tmp)
            finally:
                os.unlink(tmp)


def apply(specs, snapshot_dir=None):
    entries = plan(specs)
    changing = [spec for spec, entry in zip(specs, entries) if entry["changed"]]
    _validate_all(changing)
    if snapshot_dir and changing:
        if not os.path.isdir(snapshot_dir):
            os.makedirs(snapshot_dir, 0o700)
        os.chmod(snapshot_dir, 0o700)
        manifest = _load_manifest(snapshot_dir)
        for spec in changing:
            _keep(spec["path"], snapshot_dir, manifest)
    for spec in changing:
        try:
            state = spec.get("state", "present")
            if state == "absent":
                _remove(spec["path"])
            elif state == "directory":
                _make_directory(spec)
            elif state == "link":
                _link(spec)
            else:
                _write(spec)
        except (IOError, OSError) as exc:
            raise ConfigFileError("%s: %s" % (spec["path"], exc))
    return entries


def restore(snapshot_dir):
    manifest = _load_manifest(snapshot_dir)
    restored = []
    for path in sorted(manifest):
        entry = manifest[path]
        try:
            _remove(path)
            if entry["kind"] == "file":
                copy = os.path.join(snapshot_dir, entry["copy"])
                shutil.copy2(copy, path, follow_symlinks=False)
                os.lchown(path, entry["uid"], entry["gid"])
                if not os.path.islink(path):
                    os.chmod(path, entry["mode"])
            elif entry["kind"] == "tree":
                shutil.copytree(os.path.join(snapshot_dir, entry["copy"]), path, symlinks=True, copy_function=shutil.copy2)
                _copy_ownership_tree(os.path.join(snapshot_dir, entry["copy"]), path)
        except (IOError, OSError) as exc:
            raise ConfigFileError("restoring %s from the snapshot %s failed: %s" % (path, snapshot_dir, exc))
        restored.append(path)
    discard(snapshot_dir)
    return restored


def discard(snapshot_dir):
    if os.path.isdir(snapshot_dir):
        shutil.rmtree(snapshot_dir)
        return True
    return False
