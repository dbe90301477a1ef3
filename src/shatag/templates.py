"""Value templates: how a target spells the deployed image (issue 13, item 4).

A template is text with placeholders in braces; ``{{`` and ``}}`` are literal braces. The
placeholders are exactly:

==================  ==========================================================
``{repository}``    the image repository, e.g. ``ghcr.io/owner/api``
``{sha}``           the 40-hex git SHA (the image tag)
``{short_sha}``     its first 12 hex digits
``{digest}``        the manifest digest, ``sha256:<64 hex>``
``{ref}``           the pinned reference ``repository:sha@digest``
==================  ==========================================================

Anything else in braces — an unknown name, a format spec, an attribute or index — is a
CONFIG_ERROR when the configuration is read, never at deploy time.

>>> t = parse_template("{sha}@{digest}", where="variables.image_tag")
>>> t.render(repository="r", sha="a" * 40, digest="sha256:" + "b" * 64)[:45]
'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@sha2'
>>> parse_template("{tag}", where="variables.image_tag")
Traceback (most recent call last):
...
shatag.errors.ConfigError: variables.image_tag: unknown placeholder {tag} in '{tag}'; use \
{repository}, {sha}, {short_sha}, {digest} or {ref} (write {{ and }} for literal braces)
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Final

from shatag.errors import ConfigError

PLACEHOLDERS: Final = ("repository", "sha", "short_sha", "digest", "ref")
_HINT: Final = (
    "use {repository}, {sha}, {short_sha}, {digest} or {ref} (write {{ and }} for literal braces)"
)


@dataclass(frozen=True, slots=True)
class Template:
    """A validated template (see the module docstring)."""

    text: str

    def render(self, *, repository: str, sha: str, digest: str) -> str:
        """The text with every placeholder filled in."""
        return self.text.format_map(
            {
                "repository": repository,
                "sha": sha,
                "short_sha": sha[:12],
                "digest": digest,
                "ref": f"{repository}:{sha}@{digest}",
            }
        )


def parse_template(text: object, *, where: str) -> Template:
    """Validate ``text`` as a template; ConfigError naming ``where`` otherwise."""
    if not isinstance(text, str):
        raise ConfigError(f"{where} must be a template string, not {type(text).__name__}")
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as exc:  # a lone "{" or "}"
        raise ConfigError(f"{where}: {exc} in {text!r}; {_HINT}") from None
    for _literal, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            shown = (
                "{"
                + name
                + (f"!{conversion}" if conversion else "")
                + (f":{spec}" if spec else "")
                + "}"
            )
            raise ConfigError(f"{where}: unknown placeholder {shown} in {text!r}; {_HINT}")
    return Template(text)
