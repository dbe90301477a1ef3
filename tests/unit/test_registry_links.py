"""``Link`` header pagination of the plain-HTTP registry transport (issue 17, goal 2).

The ``http.client`` transport parses ``Link`` itself so a deploy need not import ``requests``;
it must find the same ``rel="next"`` URL ``requests`` (``response.links["next"]["url"]``) finds,
for well-formed and hostile header values alike.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from requests.utils import parse_header_links

from shatag.registry import _Response, next_link


def _requests_next(value: str) -> str | None:
    """What ``requests.Response.links`` gives for this ``Link`` header (its own code path)."""
    resolved: dict[str, dict[str, str]] = {}
    if value:
        for link in parse_header_links(value):
            resolved[link.get("rel") or link.get("url", "")] = link
    return resolved.get("next", {}).get("url")


_piece = st.sampled_from(
    ["<", ">", ";", ",", ", ", "=", '"', "'", " ", "rel", "next", "prev", "/v2/a/tags/list?n=1"]
)
_value = st.lists(st.one_of(_piece, st.text(max_size=4)), max_size=12).map("".join)


@given(_value)
def test_next_link_matches_requests_on_any_value(value: str) -> None:
    assert next_link(value) == _requests_next(value)


@given(
    st.lists(
        st.tuples(
            st.text(alphabet="/abc?=&n0123", min_size=1, max_size=12),
            st.sampled_from(["next", "prev", "first"]),
        ),
        max_size=4,
    )
)
def test_next_link_matches_requests_on_well_formed_lists(links: list[tuple[str, str]]) -> None:
    value = ", ".join(f'<{url}>; rel="{rel}"' for url, rel in links)
    assert next_link(value) == _requests_next(value)


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
