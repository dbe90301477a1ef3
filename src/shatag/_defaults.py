"""The configuration keys and their built-in defaults, as plain data (issue 17).

:mod:`shatag.config` validates them into :class:`~shatag.config.Settings`; the task collection
registers them with Invoke from here, so ``inv --list`` and ``inv <task> --help`` import neither
the validation nor any target kind.
"""

from __future__ import annotations

import copy
from typing import Any, Final

DEFAULTS: Final[dict[str, Any]] = {
    "canonical_repository": "localhost:5000/api",
    "staging_repository": "localhost:5000/api-staging",
    "main_branches": ["main", "master"],
    "context": ".",
    "dockerfile": "Dockerfile",
    "platform": "linux/amd64",
    "metadata_dir": "build/metadata",
    "state_dir": ".shatag",
    # issue 23, item 1: what a running service reads lives on the host, off any checkout.
    "runtime_dir": "/var/lib/shatag",
    "state_backend": "local",
    "state_remote": "origin",
    "state_lock_ttl_sec": 60.0,
    "signature_policy": "soft",
    "cosign_key": "",
    "cosign_public_key": "",
    "keyless_identity": "",
    "keyless_issuer": "",
    "sbom_dir": "build/sbom",
    "registry_timeout_sec": 10.0,
    "registry_retries": 3,
    "build_timeout_sec": 1800.0,
    "tool_timeout_sec": 120.0,
    # Covers one state_lock_ttl_sec plus a margin (issue 24, item 5): a runner killed while
    # holding the git lock leaves it for up to one TTL, and the next runner must outwait it.
    "deploy_lock_timeout_sec": 75.0,
    "metrics_textfile": "",
    "metrics_pushgateway": "",
    # issue 13: what goes into the image, the label GHCR links by, the default environment.
    "build_source": "commit",
    "build_inputs": [],
    "source_url": "",
    # issue 23, item 7: `docker build --build-arg NAME=<template>` ({sha}, {branch}, ...).
    "build_args": {},
    "default_env": "",
    "environments": {
        "local": {
            "repository_type": "canonical",
            "targets": [
                {
                    "kind": "docker",
                    "name": "shatag-local",
                    "port": 8080,
                    "container_port": 8080,
                    "health_path": "/healthz",
                }
            ],
            "apply": "",
        }
    },
}


def invoke_defaults() -> dict[str, Any]:
    """:data:`DEFAULTS` as registered with Invoke: lists and numbers as strings.

    Invoke casts an ``INVOKE_SHATAG_*`` value to the type of the default it overrides, outside
    any task: ``int("abc")`` or a list default fails with a traceback before shatag can say
    ``CONFIG_ERROR``. With string defaults the value arrives as given and
    :meth:`Settings.from_mapping` validates it (lists accept ``a,b``; numbers are parsed there).

    >>> invoke_defaults()["main_branches"], invoke_defaults()["registry_retries"]
    ('main,master', '3')
    """
    out: dict[str, Any] = {}
    for key, value in DEFAULTS.items():
        if key in FILE_ONLY:
            continue  # merged by Invoke, the built-in would survive a configured mapping
        if isinstance(value, list):
            out[key] = ",".join(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = repr(value) if isinstance(value, float) else str(value)
        else:
            out[key] = copy.deepcopy(value)
    return out


#: Keys only a file sets: mappings Invoke would deep-merge with a built-in default (the built-in
#: ``local`` environment would stay next to the configured ones), and no variable can express.
FILE_ONLY: Final = frozenset({"environments", "build_args"})
