"""Reading one ``docker <kind> inspect`` of several objects (issue 17): pure parsing.

The real engine's answers are checked in tests/integration/test_docker_inspect_once.py; the
stderr lines here are the ones Docker 20.10 (this machine) and newer CLIs print.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from shatag._sys.docker import line_up


def _line(**data: object) -> str:
    return json.dumps(data)


def test_found_objects_line_up_in_order_and_missing_ones_are_none() -> None:
    stdout = _line(Name="/web-a", Id="1") + "\n" + _line(Name="/web-c", Id="3") + "\n"
    stderr = "Error response from daemon: No such container: web-b\n"
    answer = line_up("container", ["web-a", "web-b", "web-c"], stdout, stderr)
    assert answer is not None
    assert answer[("container", "web-a")] == {"Name": "/web-a", "Id": "1"}
    assert answer[("container", "web-b")] is None
    assert answer[("container", "web-c")] == {"Name": "/web-c", "Id": "3"}


def test_every_missing_message_form_is_understood() -> None:
    pinned = "127.0.0.1:5000/app:" + "a" * 40 + "@sha256:" + "b" * 64
    cases = [
        ("container", "x1", "Error: No such container: x1"),
        ("network", "net-1", "Error response from daemon: network net-1 not found"),
        ("image", pinned, f"Error response from daemon: no such image: {pinned}: No such "
         f"image: {pinned}"),
        ("image", "nope:1", "Error: No such image: nope:1"),
    ]  # fmt: skip
    for kind, name, stderr in cases:
        assert line_up(kind, [name], "", stderr + "\n") == {(kind, name): None}, stderr


def test_images_do_not_name_themselves_so_order_alone_places_them() -> None:
    stdout = _line(Id="sha256:1") + "\n"
    stderr = "Error: No such image: proxy:1\n"
    answer = line_up("image", ["app@sha256:" + "c" * 64, "proxy:1"], stdout, stderr)
    assert answer == {
        ("image", "app@sha256:" + "c" * 64): {"Id": "sha256:1"},
        ("image", "proxy:1"): None,
    }


def test_anything_that_does_not_line_up_is_not_assumed() -> None:
    one = _line(Name="/a")
    assert line_up("container", ["a"], one, "Cannot connect to the Docker daemon\n") is None
    assert line_up("container", ["a", "b"], one, "") is None  # a line short, no reason given
    assert line_up("container", ["b"], one, "") is None  # names itself otherwise
    assert line_up("container", ["a"], "not json", "") is None
    assert line_up("container", ["a"], "[1]", "") is None
    assert line_up("container", ["a"], "", "Error: No such container: zz\n") is None


_names = st.lists(st.from_regex(r"[a-z][a-z0-9_.-]{0,20}", fullmatch=True), max_size=5, unique=True)


@given(_names, st.sampled_from(["container", "network", "image"]), st.text(), st.text())
def test_hostile_output_never_raises_and_answers_only_what_was_asked(
    wanted: list[str], kind: str, stdout: str, stderr: str
) -> None:
    answer = line_up(kind, wanted, stdout, stderr)
    if answer is not None:
        assert set(answer) == {(kind, n) for n in wanted}


@given(_names, st.data())
def test_a_well_formed_answer_is_read_back_exactly(wanted: list[str], data: st.DataObject) -> None:
    found = [n for n in wanted if data.draw(st.booleans())]
    stdout = "".join(_line(Name="/" + n, Id=n) + "\n" for n in found)
    stderr = "".join(f"Error: No such container: {n}\n" for n in wanted if n not in found)
    answer = line_up("container", wanted, stdout, stderr)
    assert answer is not None
    for n in wanted:
        assert answer[("container", n)] == ({"Name": "/" + n, "Id": n} if n in found else None)
