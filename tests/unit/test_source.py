"""Pure parts of what goes into an image (issue 13, items 3 and 8): build input paths and the
source repository URL of the ``org.opencontainers.image.source`` label."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shatag._sys.source import check_input_paths, git_toplevel, hash_inputs, normalize_remote
from shatag.errors import BuildFailure, ConfigError


@pytest.mark.parametrize(
    ("remote", "url"),
    [
        ("https://github.com/owner/api.git", "https://github.com/owner/api"),
        ("https://github.com/owner/api", "https://github.com/owner/api"),
        ("git@github.com:owner/api.git", "https://github.com/owner/api"),
        ("ssh://git@github.com/owner/api.git", "https://github.com/owner/api"),
        ("ssh://git@gitlab.example.com:2222/g/sub/api.git", "https://gitlab.example.com/g/sub/api"),
        ("https://oauth2:glpat-SECRET@gitlab.com/g/api.git", "https://gitlab.com/g/api"),
        ("http://127.0.0.1:3000/owner/api.git", "http://127.0.0.1:3000/owner/api"),
        ("git://example.org/api.git", "https://example.org/api"),
        ("/srv/git/api.git", ""),
        ("../api", ""),
        ("file:///srv/git/api.git", ""),
        ("", ""),
    ],
)
def test_remotes_become_web_urls(remote: str, url: str) -> None:
    assert normalize_remote(remote) == url


_token = st.text(st.characters(categories=["L", "N"]), min_size=3, max_size=12)


@given(_token, _token)
def test_credentials_in_a_remote_never_reach_the_label(user: str, secret: str) -> None:
    url = normalize_remote(f"https://{user}:{secret}X@github.com/owner/api.git")
    assert url == "https://github.com/owner/api"
    assert f"{secret}X" not in url


@given(st.text(max_size=60))
def test_any_remote_text_is_a_url_or_empty(remote: str) -> None:
    url = normalize_remote(remote)
    assert url == "" or url.startswith(("https://", "http://"))
    assert "@" not in url.split("://", 1)[-1].split("/", 1)[0]


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        (["bin/busybox"], ("bin/busybox",)),
        (["./dist/", "dist"], ("dist",)),
        (["a", "b/c"], ("a", "b/c")),
    ],
)
def test_build_input_paths(paths: list[str], expected: tuple[str, ...]) -> None:
    assert check_input_paths(paths) == expected


@pytest.mark.parametrize("path", ["/etc/passwd", "../secret", "bin/../../x", ".", "", "  ", 3])
def test_build_inputs_stay_inside_the_context(path: object) -> None:
    with pytest.raises(ConfigError, match="build_inputs"):
        check_input_paths([path])  # type: ignore[list-item]


@given(st.lists(st.text(max_size=20), max_size=4))
def test_hostile_build_inputs_are_paths_or_config_errors(paths: list[str]) -> None:
    try:
        checked = check_input_paths(paths)
    except ConfigError:
        return
    for path in checked:
        assert not path.startswith("/")
        assert ".." not in path.split("/")


def test_build_inputs_are_hashed_file_by_file(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "busybox").write_bytes(b"abc")
    (tmp_path / "dist" / "js").mkdir(parents=True)
    (tmp_path / "dist" / "js" / "app.js").write_bytes(b"")
    found = hash_inputs(tmp_path, ["bin/busybox", "dist"])
    assert [i.as_dict() for i in found] == [
        {
            "path": "bin/busybox",
            "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "size": 3,
        },
        {
            "path": "dist/js/app.js",
            "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "size": 0,
        },
    ]


def test_a_missing_build_input_fails_before_the_build(tmp_path: Path) -> None:
    with pytest.raises(BuildFailure, match="bin/busybox does not exist"):
        hash_inputs(tmp_path, ["bin/busybox"])


def test_git_toplevel_is_found_without_git(tmp_path: Path) -> None:
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    (tmp_path / "repo" / "www" / "css").mkdir(parents=True)
    assert git_toplevel(tmp_path / "repo" / "www" / "css") == tmp_path / "repo"
    assert git_toplevel(tmp_path / "repo") == tmp_path / "repo"


def test_the_source_url_is_configured_or_the_github_repository(tmp_path: Path) -> None:
    """No git call needed for these two (item 8); the remote fallback is integration-tested."""
    from shatag._sys.source import source_url

    github = {"GITHUB_SERVER_URL": "https://github.com/", "GITHUB_REPOSITORY": "owner/api"}
    assert source_url("", env=github, context=tmp_path, git=None) == "https://github.com/owner/api"
    assert source_url("https://x/y", env=github, context=tmp_path, git=None) == "https://x/y"
    assert source_url("", env={}, context=tmp_path, git=None) == ""
