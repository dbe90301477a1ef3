"""What shatag marks the docker objects it creates with, and the refusal of any it did not
create (issue 12, item 4).

Every container, network and image shatag creates for a docker target carries ``shatag.*``
labels: managed, environment, target and role (``app``, ``proxy``, ``network``,
``proxy-image``). An object of a name shatag derives from a target's that lacks them, or belongs
to another environment or target, is refused (``NOT_OWNED``) and left untouched.

>>> owner_labels("prod", "api", "proxy")["shatag.role"]
'proxy'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from shatag.errors import NotOwned

# Labels on everything shatag creates for a docker target (issue 12, item 4).
LABEL_MANAGED: Final = "shatag.managed"
LABEL_ENV: Final = "shatag.env"
LABEL_TARGET: Final = "shatag.target"
LABEL_ROLE: Final = "shatag.role"  # app | proxy | network


def owner_labels(env_name: str, target: str, role: str) -> dict[str, str]:
    return {LABEL_MANAGED: "true", LABEL_ENV: env_name, LABEL_TARGET: target, LABEL_ROLE: role}


def check_owned(
    kind: str, name: str, labels: Mapping[str, str] | None, *, env_name: str, target: str
) -> None:
    """Refuse (``NOT_OWNED``) an object shatag did not create for ``env_name``/``target``.

    Containers of shatag before issue 12 carry ``shatag.env`` and ``shatag.sha`` but no
    ``shatag.target``; they count as this target's when the environment matches.

    >>> check_owned("container", "api", {"shatag.env": "prod", "shatag.sha": "a"},
    ...             env_name="prod", target="api")
    >>> check_owned("container", "api", {}, env_name="prod", target="api")
    Traceback (most recent call last):
    ...
    shatag.errors.NotOwned: container 'api' exists but was not created by shatag ...
    """
    labels = labels or {}
    legacy = LABEL_TARGET not in labels and "shatag.sha" in labels
    if labels.get(LABEL_ENV) == env_name and (legacy or labels.get(LABEL_TARGET) == target):
        return
    if LABEL_ENV not in labels:
        raise NotOwned(
            f"{kind} {name!r} exists but was not created by shatag (it has no shatag labels); "
            f"it was left untouched. Rename or remove it yourself, or give the docker target "
            f"another name"
        )
    raise NotOwned(
        f"{kind} {name!r} belongs to shatag environment {labels.get(LABEL_ENV)!r}, target "
        f"{labels.get(LABEL_TARGET, '?')!r}, not to {env_name!r}/{target!r}; it was left "
        "untouched. Give each environment's docker target its own name"
    )
