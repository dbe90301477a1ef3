"""Terraform variables: ``*.auto.tfvars.json`` with ``image_sha``, ``image_digest``, ``image_ref``.

Other keys of an existing file are kept, in their order; the file is written atomically.

>>> from shatag.config import TargetConfig
>>> from shatag.core import parse_repository
>>> img = ImageRef(parse_repository("127.0.0.1:5000/api"), "a" * 40, "sha256:" + "b" * 64)
>>> t = TfvarsTarget(TargetConfig(kind="tfvars", path="x.auto.tfvars.json"))
>>> print(t.render('{"region": "eu"}', img))  # doctest: +ELLIPSIS
{
  "region": "eu",
  "image_sha": "aaaa...",
  "image_digest": "sha256:bbbb...",
  "image_ref": "127.0.0.1:5000/api:aaaa...@sha256:bbbb..."
}
<BLANKLINE>
"""

from __future__ import annotations

import json
from typing import Any

from shatag.errors import ConfigError
from shatag.targets import ImageRef
from shatag.targets._files import FileTarget


class TfvarsTarget(FileTarget):
    def render(self, current: str | None, image: ImageRef) -> str:
        data: dict[str, Any] = {}
        if current is not None and current.strip():
            try:
                loaded = json.loads(current)
            except ValueError as exc:
                raise ConfigError(f"{self.label}: {self.path} is not valid JSON: {exc}") from None
            if not isinstance(loaded, dict):
                raise ConfigError(f"{self.label}: {self.path} must hold a JSON object")
            data = loaded
        data["image_sha"] = image.sha
        data["image_digest"] = image.digest
        data["image_ref"] = image.reference(self.config.pin)
        return json.dumps(data, indent=2) + "\n"
