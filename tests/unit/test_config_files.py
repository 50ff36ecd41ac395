"""config_files (the node's configuration in one pass, with a snapshot a failed deploy restores), release_host and
release_tarball, on the real file system (in a test folder) and on the real test releases."""
import grp
import os
import pwd
import stat
import tarfile

import pytest

from ansible_collections.beamops.cluster.plugins.module_utils import config_files, release_host, release_tarball

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="owners other than the test user need root")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def owner_mode(path):
    st = os.lstat(path)
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, oct(stat.S_IMODE(st.st_mode))


def spec(path, content, owner="root", group="root", mode="0640", **more):
    result = {"path": str(path), "content": content, "owner": owner, "group": group, "mode": mode}
    result.update(more)
    return result


@needs_root
def test_apply_writes_owner_and_mode_and_a_second_pass_changes_nothing(tmp_path):
    files = [spec(tmp_path / "etc" / "env", "A=1\n", group="nogroup"), spec(tmp_path / "cookie", "s3cret", owner="nobody", mode="0400", secret=True)]
    entries = config_files.apply(files)
    assert [e["changed"] for e in entries] == [True, True]
    assert owner_mode(tmp_path / "etc" / "env") == ("root", "nogroup", "0o640")
    assert owner_mode(tmp_path / "cookie") == ("nobody", "root", "0o400")
    assert entries[1]["after"] is None and entries[1]["before"] is None  # a secret never reaches a diff
    assert entries[0]["after"] == "A=1\n"
    assert [e["changed"] for e in config_files.apply(files)] == [False, False]
    os.chmod(str(tmp_path / "etc" / "env"), 0o644)  # a mode drift is a change
    assert [e["changed"] for e in config_files.plan(files)] == [True, False]


@needs_root
def test_a_failed_deploy_gets_back_every_file_as_it_was(tmp_path):
    """The bug of issue 8: a restored file must keep its owner, group and mode, or the node cannot read it."""
    conf, snap = tmp_path / "etc", str(tmp_path / "snap")
    before = [spec(conf / "topology.config", "old\n", group="nogroup"), spec(conf / "cookie", "c1", owner="nobody", mode="0400"),
              {"path": str(conf / "tls"), "state": "directory", "owner": "root", "group": "nogroup", "mode": "0750"},
              spec(conf / "tls" / "ca.pem", "ca1\n", group="nogroup"), {"path": str(tmp_path / "current"), "state": "link", "src": "/opt/1"}]
    config_files.apply(before)
    states = dict((p, owner_mode(p)) for p in (conf / "topology.config", conf / "cookie", conf / "tls", conf / "tls" / "ca.pem"))
    after = [spec(conf / "topology.config", "new\n", group="root", mode="0600"), spec(conf / "cookie", "c2", owner="root", mode="0444"),
             {"path": str(conf / "tls"), "state": "absent"}, spec(conf / "vm.args", "-name x\n"),
             {"path": str(tmp_path / "current"), "state": "link", "src": "/opt/2"}]
    config_files.apply(after[:3], snapshot_dir=snap)
    config_files.apply(after[3:], snapshot_dir=snap)  # a second call adds to the same snapshot
    assert not os.path.exists(str(conf / "tls")) and os.readlink(str(tmp_path / "current")) == "/opt/2"
    assert oct(stat.S_IMODE(os.stat(snap).st_mode)) == "0o700"
    restored = config_files.restore(snap)
    assert sorted(restored) == sorted([str(conf / "topology.config"), str(conf / "cookie"), str(conf / "tls"), str(conf / "vm.args"),
                                       str(tmp_path / "current")])
    assert (conf / "topology.config").read_text() == "old\n" and (conf / "cookie").read_text() == "c1"
    assert (conf / "tls" / "ca.pem").read_text() == "ca1\n"
    assert dict((p, owner_mode(p)) for p in states) == states
    assert not os.path.exists(str(conf / "vm.args"))  # created by the failed deploy: removed again
    assert os.readlink(str(tmp_path / "current")) == "/opt/1"
    assert not os.path.exists(snap)


def test_validate_refuses_a_file_and_nothing_is_written(tmp_path):
    me = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    files = [spec(tmp_path / "a", "first\n", owner=me, group=group),
             spec(tmp_path / "rules", "bad\n", owner=me, group=group, validate=["/bin/sh", "-c", "grep -q good %s"])]
    with pytest.raises(config_files.ConfigFileError, match="rules: the new content was refused by /bin/sh"):
        config_files.apply(files)
    assert not os.path.exists(str(tmp_path / "a"))  # checked before anything is written
    files[1]["content"] = "good\n"
    assert [e["changed"] for e in config_files.apply(files)] == [True, True]


@pytest.mark.parametrize("bad,message", [
    ({"path": "relative", "content": "", "owner": "root", "group": "root", "mode": "0640"}, "absolute path"),
    ({"path": "/x", "content": "", "owner": "root", "group": "root", "mode": "rw"}, "mode must be octal"),
    ({"path": "/x", "owner": "root", "group": "root", "mode": "0640"}, "content is required"),
    ({"path": "/x", "state": "link"}, "src (where the link points) is required"),
    ({"path": "/x", "state": "maybe"}, "state must be present, directory, link or absent"),
])
def test_bad_specs_name_the_path_and_the_field(bad, message):
    with pytest.raises(config_files.ConfigFileError) as caught:
        config_files.plan([bad])
    assert message in str(caught.value)


def test_unknown_owner_is_a_change_in_a_plan_and_an_error_when_applied(tmp_path):
    files = [spec(tmp_path / "f", "x", owner="no-such-user-beamops")]
    assert config_files.plan(files)[0]["changed"]
    with pytest.raises(config_files.ConfigFileError, match="owner no-such-user-beamops does not exist"):
        config_files.apply(files)


def test_release_host_reads_links_topology_and_units(tmp_path):
    base, conf = tmp_path / "opt", tmp_path / "etc"
    (base / "releases" / "0.2.0" / "releases").mkdir(parents=True)
    (base / "releases" / "0.2.0" / "releases" / "start_erl.data").write_text("13.1.5 0.2.0\n")
    (base / "releases" / "0.2.0" / ".beamops-sha256-abc").write_text("abc\n")
    os.symlink(str(base / "releases" / "0.2.0"), str(base / "current"))
    conf.mkdir()
    (conf / "topology.config").write_text("%% beamops.cluster topology: strategy=gossip redials=true\n[].\n")
    calls = []

    def run(argv):
        calls.append(argv)
        if argv[0] == "systemctl":
            return 0, ("MainPID=42\nId=app.service\nActiveState=active\nUnitFileState=enabled\n\n"
                       "MainPID=0\nId=beamops-epmd.service\nActiveState=inactive\nUnitFileState=disabled\n"), ""
        return 1, "", "Operation not permitted"

    info = release_host.read("app", str(base), str(conf), str(base / "releases" / "0.2.0"), "abc", units=["beamops-epmd"],
                             paths=[str(base / "current")], environ={"SSH_CLIENT": "198.18.7.1 5555 22"}, run=run)
    assert info["running"] and info["enabled"] and info["main_pid"] == 42
    assert info["current_version"] == "0.2.0" and info["previous"] == "" and not info["tls"]
    assert info["topology"] == {"strategy": "gossip", "redials": True}
    assert info["unpacked"] and info["erts_version"] == "13.1.5"
    assert info["units"] == {"beamops-epmd": {"active": False, "enabled": False}}
    assert info["controller_address"] == "198.18.7.1" and info["nft"] == "Operation not permitted"
    assert info["links"][str(base / "current")] == str(base / "releases" / "0.2.0")
    assert len(calls) == 2  # one systemctl call for every unit, one nft


def test_release_tarball_reads_a_real_test_release():
    path = os.path.join(REPO, "build", "testapps", "meshprobe-0.1.0.tar.gz")
    if not os.path.exists(path):
        pytest.skip("build/testapps not built (scripts/build-testapps.sh)")
    info = release_tarball.inspect(path, "meshprobe")
    assert (info["version"], info["start_script"], info["error"]) == ("0.1.0", True, "")
    assert {"ssl", "kernel", "libcluster", "meshprobe"} <= set(info["applications"])
    assert not release_tarball.inspect(path, "other")["start_script"]


def test_release_tarball_explains_what_is_not_a_release(tmp_path):
    assert release_tarball.inspect(str(tmp_path / "none.tar.gz"), "x")["error"] == "does not exist"
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tar")
    assert "is not a readable tar archive" in release_tarball.inspect(str(junk), "x")["error"]
    other = tmp_path / "other.tar.gz"
    with tarfile.open(str(other), "w:gz") as archive:
        archive.add(__file__, arcname="README")
    info = release_tarball.inspect(str(other), "x")
    assert info["version"] == "" and not info["start_script"] and info["error"] == ""
