"""Issue 24, items 1, 2 and 7 (build): the image is exactly the commit, nothing from outside the
context enters it, and concurrent builds of one SHA both end green.

Everything is real: git repositories with submodules, ``.gitattributes``, Git LFS and a hostile
``GIT_CONFIG_GLOBAL``, the real docker engine and a real registry; the image's files are read
back from the pushed image.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from shatag.core import parse_repository
from shatag.supplychain.registry import RegistryClient
from tests.conftest import App, InvResult, _git, inv_argv

CRLF_TEXT = b"line one\nline two\n"
SUBST = b"$Format:%H$\n"


def client(env: dict[str, str], key: str) -> RegistryClient:
    return RegistryClient(parse_repository(env[key]), env={}, retries=1)


def canonical(env: dict[str, str]) -> RegistryClient:
    return client(env, "INVOKE_SHATAG_CANONICAL_REPOSITORY")


def staging(env: dict[str, str]) -> RegistryClient:
    return client(env, "INVOKE_SHATAG_STAGING_REPOSITORY")


def image_files(reference: str) -> dict[str, bytes]:
    """Every regular file of the pushed image (``docker export`` of a created container), and
    every symlink as ``b"-> target"``; paths without the leading slash."""
    pulled = subprocess.run(
        ["docker", "pull", "-q", reference], capture_output=True, timeout=120, check=False
    )
    assert pulled.returncode == 0, pulled.stderr
    name = f"shatag-test-export-{uuid.uuid4().hex[:10]}"
    subprocess.run(
        ["docker", "create", "--name", name, "--label", "shatag.test=1", reference],
        capture_output=True,
        timeout=60,
        check=True,
    )
    try:
        exported = subprocess.run(
            ["docker", "export", name], capture_output=True, timeout=120, check=True
        ).stdout
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60, check=False)
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(exported)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                files[member.name.lstrip("/")] = handle.read()
            elif member.issym():
                files[member.name.lstrip("/")] = b"-> " + member.linkname.encode()
    return files


def with_dockerfile_lines(app: App, *lines: str) -> None:
    dockerfile = app.path / "Dockerfile"
    extra = "\n".join(lines)
    dockerfile.write_text(
        dockerfile.read_text().replace("COPY www /www", f"COPY www /www\n{extra}")
    )


def hostile_gitconfig(root: Path) -> Path:
    """The builder's own git configuration, as a hostile (or just unusual) machine has it:
    CRLF conversion and a smudge filter that rewrites every file marked for it."""
    path = root / "hostile.gitconfig"
    path.write_text(
        "[core]\n\tautocrlf = true\n\teol = crlf\n"
        '[filter "rot"]\n\tsmudge = sed s/line/LINE/\n\tclean = cat\n'
    )
    return path


def test_the_context_is_the_commit_tree_byte_for_byte(
    inv: Callable[..., InvResult],
    shatag_env: dict[str, str],
    make_app: Callable[..., App],
    tmp_path: Path,
) -> None:
    """Submodule at its recorded SHA (listed in the metadata), export-ignore and export-subst
    without effect, a hostile global git config (autocrlf, a smudge filter) changes no byte, an
    LFS file is its content, symlinks stay symlinks."""
    lib = tmp_path / "lib"
    lib.mkdir()
    _git(lib, "init", "-q", "-b", "main")
    (lib / "lib.txt").write_text("library at the recorded commit\n")
    _git(lib, "add", "-A")
    _git(lib, "commit", "-q", "-m", "lib")
    lib_sha = _git(lib, "rev-parse", "HEAD")

    app = make_app('{"version": "hostile"}')
    _git(
        app.path,
        "-c",
        "protocol.file.allow=always",
        "submodule",
        "add",
        "-q",
        str(lib),
        "vendor/lib",
    )
    data = app.path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "ignored.txt").write_bytes(b"export-ignore must not drop me\n")
    (data / "subst.txt").write_bytes(SUBST)
    (data / "text.txt").write_bytes(CRLF_TEXT)
    (data / "sub" / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (data / "sub" / "run.sh").chmod(0o755)
    (data / "link").symlink_to("text.txt")
    (app.path / ".gitattributes").write_text(
        "data/ignored.txt export-ignore\ndata/subst.txt export-subst\n"
        "data/text.txt filter=rot text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
    )
    payload = os.urandom(3000)
    _git(app.path, "lfs", "install", "--local")
    (data / "big.bin").write_bytes(payload)
    with_dockerfile_lines(app, "COPY data /data", "COPY vendor /vendor")
    sha = app.commit('{"version": "hostile"}', "submodule, attributes, lfs")
    # the submodule's checkout moves on after the commit: the image holds the recorded SHA
    (app.path / "vendor" / "lib" / "lib.txt").write_text("moved on, not recorded\n")
    _git(app.path / "vendor" / "lib", "commit", "-q", "-am", "later")

    env = {
        **shatag_env,
        "INVOKE_SHATAG_CONTEXT": str(app.path),
        "GIT_CONFIG_GLOBAL": str(hostile_gitconfig(tmp_path)),
    }
    result = inv(["build", f"--sha={sha}", "--branch=main"], env)
    assert result.returncode == 0, result.stderr
    files = image_files(result.record["image_ref"])
    assert files["data/ignored.txt"] == b"export-ignore must not drop me\n"
    assert files["data/subst.txt"] == SUBST
    assert files["data/text.txt"] == CRLF_TEXT
    assert files["data/sub/run.sh"] == b"#!/bin/sh\necho hi\n"
    assert files["data/link"] == b"-> text.txt"
    assert hashlib.sha256(files["data/big.bin"]).hexdigest() == hashlib.sha256(payload).hexdigest()
    assert files["vendor/lib/lib.txt"] == b"library at the recorded commit\n"
    assert result.record["submodules"] == [{"path": "vendor/lib", "sha": lib_sha}]
    meta = json.loads((Path(shatag_env["INVOKE_SHATAG_METADATA_DIR"]) / f"{sha}.json").read_text())
    assert meta["submodules"] == [{"path": "vendor/lib", "sha": lib_sha}]


def test_a_submodule_or_lfs_file_git_cannot_supply_is_refused_naming_it(
    inv: Callable[..., InvResult],
    shatag_env: dict[str, str],
    make_app: Callable[..., App],
    tmp_path: Path,
) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    _git(lib, "init", "-q", "-b", "main")
    (lib / "lib.txt").write_text("lib\n")
    _git(lib, "add", "-A")
    _git(lib, "commit", "-q", "-m", "lib")
    app = make_app('{"version": "sub"}')
    _git(
        app.path,
        "-c",
        "protocol.file.allow=always",
        "submodule",
        "add",
        "-q",
        str(lib),
        "vendor/lib",
    )
    sha = app.commit('{"version": "sub"}', "with a submodule")
    clone = tmp_path / "clone"  # a clone without --recurse-submodules: no submodule git dir
    _git(tmp_path, "clone", "-q", str(app.path), str(clone))
    env = {**shatag_env, "INVOKE_SHATAG_CONTEXT": str(clone)}
    result = inv(["build", f"--sha={sha}", "--branch=main"], env)
    assert result.returncode != 0
    assert "error: SOURCE_MISMATCH:" in result.stderr
    assert "vendor/lib" in result.stderr
    assert "Step 1/" not in result.stderr
    # an LFS pointer whose object this machine does not hold (and no remote to fetch it from)
    other = make_app('{"version": "lfs"}')
    pointer = (
        "version https://git-lfs.github.com/spec/v1\n"
        f"oid sha256:{hashlib.sha256(b'gone').hexdigest()}\nsize 4\n"
    )
    (other.path / "www" / "asset.bin").write_text(pointer)
    sha = other.commit('{"version": "lfs"}', "an LFS pointer without its object")
    env = {**shatag_env, "INVOKE_SHATAG_CONTEXT": str(other.path)}
    result = inv(["build", f"--sha={sha}", "--branch=main"], env)
    assert result.returncode != 0
    assert "error: SOURCE_MISMATCH:" in result.stderr
    assert "www/asset.bin" in result.stderr
    assert "Step 1/" not in result.stderr
    assert canonical(shatag_env).tags() == []


def test_sha_must_name_a_commit_object(
    inv: Callable[..., InvResult], shatag_env: dict[str, str], make_app: Callable[..., App]
) -> None:
    app = make_app('{"version": "objects"}')
    _git(app.path, "tag", "-a", "-m", "release", "v1")
    tag_object = _git(app.path, "rev-parse", "v1")
    tree = _git(app.path, "rev-parse", "HEAD^{tree}")
    assert tag_object != app.sha
    env = {**shatag_env, "INVOKE_SHATAG_CONTEXT": str(app.path)}
    for sha, kind in ((tree, "tree"), (tag_object, "tag")):
        result = inv(["build", f"--sha={sha}", "--branch=main"], env)
        assert result.returncode != 0, kind
        assert "error: SOURCE_MISMATCH:" in result.stderr
        assert f"a {kind}, not a commit" in result.stderr
        assert "Step 1/" not in result.stderr
    assert canonical(shatag_env).tags() == []


def test_canonical_only_for_a_commit_on_a_main_branch(
    inv: Callable[..., InvResult], shatag_env: dict[str, str], make_app: Callable[..., App]
) -> None:
    """FR-016 by where the commit is, not by what is checked out."""
    app = make_app('{"version": "main"}')
    _git(app.path, "checkout", "-q", "-b", "feature/x")
    feature = app.commit('{"version": "feature"}', "feature work")
    _git(app.path, "checkout", "-q", "main")
    env = {**shatag_env, "INVOKE_SHATAG_CONTEXT": str(app.path)}
    # main is checked out, so the branch defaults to main: refused, naming the branch
    result = inv(["build", f"--sha={feature}"], env)
    assert result.returncode != 0
    assert "error: INVALID_INPUT:" in result.stderr
    assert "not reachable from main" in result.stderr
    assert "Step 1/" not in result.stderr
    result = inv(["build", f"--sha={feature}", "--branch=main"], env)
    assert result.returncode != 0
    assert "error: INVALID_INPUT:" in result.stderr
    assert canonical(shatag_env).tags() == []
    # named as what it is, it goes to staging
    result = inv(["build", f"--sha={feature}", "--branch=feature/x"], env)
    assert result.returncode == 0, result.stderr
    assert result.record["repository_type"] == "staging"
    # merged into main (a fast-forward), the same commit may go to the canonical repository
    _git(app.path, "merge", "-q", "--ff-only", "feature/x")
    result = inv(["build", f"--sha={feature}", "--branch=main"], env)
    assert result.returncode == 0, result.stderr
    assert result.record["repository_type"] == "canonical"


def test_build_inputs_never_follow_a_symlink_out_of_the_context(
    inv: Callable[..., InvResult],
    shatag_env: dict[str, str],
    make_app: Callable[..., App],
    tmp_path: Path,
) -> None:
    secret = tmp_path / "host-secret"
    secret.write_text("host secret\n")
    app = make_app('{"version": "inputs"}')
    (app.path / ".gitignore").write_text("dist/\nsecret\n")
    app.commit('{"version": "inputs"}', "ignore the inputs")
    (app.path / "secret").symlink_to(secret)
    (app.path / "dist").mkdir()
    (app.path / "dist" / "ok.txt").write_text("fine\n")
    (app.path / "dist" / "leak").symlink_to(secret)
    env = {**shatag_env, "INVOKE_SHATAG_CONTEXT": str(app.path)}
    for declared, named in (("secret", "secret"), ("dist", "dist/leak")):
        result = inv(
            ["build", f"--sha={app.sha}", "--branch=main"],
            {**env, "INVOKE_SHATAG_BUILD_INPUTS": declared},
        )
        assert result.returncode != 0, declared
        assert "error: CONFIG_ERROR:" in result.stderr
        assert named in result.stderr
        assert "outside the build context" in result.stderr
        assert "Step 1/" not in result.stderr
    assert canonical(shatag_env).tags() == []


def test_outside_git_the_build_needs_build_source_directory_and_never_goes_canonical(
    inv: Callable[..., InvResult],
    shatag_env: dict[str, str],
    make_app: Callable[..., App],
    tmp_path: Path,
) -> None:
    app = make_app('{"version": "plain"}')
    plain = tmp_path / "plain"
    (app.path / ".git").rename(tmp_path / "moved-git")
    app.path.rename(plain)
    sha = "ab" * 20
    env = {**shatag_env, "INVOKE_SHATAG_CONTEXT": str(plain), "GITHUB_SHA": sha}
    result = inv(["build", "--branch=feature"], env)
    assert result.returncode != 0
    assert "error: SOURCE_MISMATCH:" in result.stderr
    assert "build_source: directory" in result.stderr
    directory = {**env, "INVOKE_SHATAG_BUILD_SOURCE": "directory"}
    result = inv(["build", "--branch=main"], directory)
    assert result.returncode != 0
    assert "error: INVALID_INPUT:" in result.stderr
    assert canonical(shatag_env).tags() == []
    result = inv(["build", "--branch=feature"], directory)
    assert result.returncode == 0, result.stderr
    assert result.record["repository_type"] == "staging"
    assert result.record["build_source"] == "directory"


def test_concurrent_builds_of_one_sha_both_end_green(
    shatag_env: dict[str, str], make_app: Callable[..., App], tmp_path: Path
) -> None:
    """Two runs at once (one machine, one state dir): one pushes, the other reports reused."""
    app = make_app('{"version": "race"}')
    env = {**shatag_env, "INVOKE_SHATAG_CONTEXT": str(app.path)}
    results: list[subprocess.CompletedProcess[str]] = []

    def one(index: int) -> None:
        run_env = {**env, "INVOKE_SHATAG_METADATA_DIR": str(tmp_path / f"meta{index}")}
        results.append(
            subprocess.run(
                inv_argv("build", f"--sha={app.sha}", "--branch=main"),
                env=run_env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
        )

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-2000:] for r in results]
    records = [json.loads(r.stdout.splitlines()[-1]) for r in results]
    assert sorted(r["reused"] for r in records) == [False, True]
    assert records[0]["image_digest"] == records[1]["image_digest"]
    served = canonical(shatag_env).manifest_digest(app.sha)
    assert served == records[0]["image_digest"]
    assert canonical(shatag_env).manifest_digest(app.sha[:12]) == served


def test_sign_with_a_missing_key_fails_before_anything_is_pushed(
    inv: Callable[..., InvResult],
    shatag_env: dict[str, str],
    make_app: Callable[..., App],
    tmp_path: Path,
) -> None:
    app = make_app('{"version": "sign"}')
    env = {
        **shatag_env,
        "INVOKE_SHATAG_CONTEXT": str(app.path),
        "INVOKE_SHATAG_COSIGN_KEY": str(tmp_path / "missing.key"),
    }
    result = inv(["build", f"--sha={app.sha}", "--branch=main", "--sign"], env)
    assert result.returncode != 0
    assert "error: CONFIG_ERROR:" in result.stderr
    assert "cosign_key" in result.stderr
    assert "Step 1/" not in result.stderr
    assert canonical(shatag_env).tags() == []


def test_build_args_are_templated_passed_and_recorded(
    inv: Callable[..., InvResult],
    shatag_env: dict[str, str],
    make_app: Callable[..., App],
    tmp_path: Path,
) -> None:
    """Issue 23, item 7: ``build_args`` NAME -> template, as ``--build-arg``; in the metadata."""
    app = make_app('{"version": "args"}')
    with_dockerfile_lines(
        app,
        "ARG REVISION",
        "ARG WHERE",
        'RUN ["/bin/busybox", "sh", "-c", "echo \\"$REVISION $WHERE\\" > /revision"]',
    )
    (app.path / "Dockerfile").write_text(
        (app.path / "Dockerfile").read_text().replace("USER 65534:65534\n", "")
        + "USER 65534:65534\n"
    )
    sha = app.commit('{"version": "args"}', "ARG REVISION")
    (tmp_path / "cfg").mkdir()
    config = tmp_path / "cfg" / "shatag.yaml"
    config.write_text(
        "shatag:\n  build_args:\n    REVISION: '{sha}'\n    WHERE: '{branch}@{short_sha}'\n"
    )
    env = {**shatag_env, "INVOKE_SHATAG_CONTEXT": str(app.path)}
    result = inv(["-f", str(config), "build", f"--sha={sha}", "--branch=main"], env)
    assert result.returncode == 0, result.stderr
    files = image_files(result.record["image_ref"])
    assert files["revision"] == f"{sha} main@{sha[:12]}\n".encode()
    assert result.record["build_args"] == {"REVISION": sha, "WHERE": f"main@{sha[:12]}"}
