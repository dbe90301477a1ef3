"""``Link`` header pagination of the plain-HTTP registry transport (issue 17, goal 2).

The ``http.client`` transport parses ``Link`` itself so a deploy need not import ``requests``:
the first link whose ``rel`` names ``next`` (RFC 8288), and no error on any value.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shatag.supplychain.registry import _Response, next_link

_piece = st.sampled_from(
    ["<", ">", ";", ",", ", ", "=", '"', "'", " ", "rel", "next", "prev", "/v2/a/tags/list?n=1"]
)
_value = st.lists(st.one_of(_piece, st.text(max_size=4)), max_size=12).map("".join)


@given(_value)
def test_any_value_gives_a_url_or_none_never_an_error(value: str) -> None:
    found = next_link(value)
    assert found is None or (isinstance(found, str) and found in value)


_url = st.text(alphabet="/abc?=&n0123;,", min_size=1, max_size=12)
_rel = st.sampled_from(["next", "prev", "first", "NEXT", "prev next"])


@given(
    st.lists(st.tuples(_url, _rel, st.booleans(), st.booleans()), max_size=4),
)
def test_the_first_link_naming_next_wins(links: list[tuple[str, str, bool, bool]]) -> None:
    def one(url: str, rel: str, quoted: bool, titled: bool) -> str:
        title = '; title="t"' if titled else ""
        relation = f'"{rel}"' if quoted or " " in rel else rel
        return f"<{url}>{title}; rel={relation}"

    value = ", ".join(one(*link) for link in links)
    expected = next((url for url, rel, _, _ in links if "next" in rel.lower().split()), None)
    assert next_link(value) == expected


def test_registry_pagination_header() -> None:
    value = '</v2/api/tags/list?last=b&n=2>; rel="next"'
    assert next_link(value) == "/v2/api/tags/list?last=b&n=2"
    response = _Response(200, {"link": [value]})
    assert response.next_link() == "/v2/api/tags/list?last=b&n=2"
    assert _Response(200).next_link() is None


def test_headers_any_case_repeated_joined_like_requests() -> None:
    response = _Response(401, {"www-authenticate": ['Bearer realm="a"', 'Basic realm="b"']})
    assert response.header("WWW-Authenticate") == 'Bearer realm="a", Basic realm="b"'
    assert response.header("Docker-Content-Digest") is None
