"""The commit's archive unpacks on Pythons with and without tarfile extraction filters
(Debian 12's /usr/bin/python3 is 3.11.2, which has none)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from shatag._sys.source import _extract
from shatag.errors import SourceMismatch


def _archive(members: dict[str, bytes]) -> tarfile.TarFile:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return tarfile.open(fileobj=buf)


@pytest.mark.parametrize("filters", [True, False], ids=["with-filters", "without-filters"])
def test_extract_unpacks_the_tree_keeping_modes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, filters: bool
) -> None:
    if not filters:
        monkeypatch.delattr(tarfile, "tar_filter", raising=False)
    with _archive({"Dockerfile": b"FROM scratch\n", "www/api.json": b"{}\n"}) as tar:
        _extract(tar, tmp_path)
    assert (tmp_path / "Dockerfile").read_bytes() == b"FROM scratch\n"
    assert (tmp_path / "www" / "api.json").stat().st_mode & 0o777 == 0o755


def test_extract_without_filters_refuses_a_path_outside_dest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(tarfile, "tar_filter", raising=False)
    dest = tmp_path / "dest"
    dest.mkdir()
    with _archive({"../escape": b"x"}) as tar, pytest.raises(SourceMismatch):
        _extract(tar, dest)
    assert not (tmp_path / "escape").exists()
