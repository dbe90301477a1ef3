"""Secrets (issue 6): the canary passwords never appear in anything the product showed or wrote.

Runs after every other test of the session, whatever the file names (the ``after_all`` marker,
see ``pytest_collection_modifyitems`` in conftest.py). The registry canary is the htpasswd
password of ``test_auth_tls.py`` (used through ``docker login``); the cosign canary protects the
signing key of ``test_cosign_faults.py`` (``COSIGN_PASSWORD`` for ``inv build --sign``). Every
``inv`` run of the session had its stdout and stderr kept, with ``SHATAG_DEBUG=1`` (every
command line logged) where the canaries were in use; every directory the product wrote into --
metadata, SBOMs, state/history, deployment targets, GitHub outputs and step summaries -- is read
byte by byte. Credential stores (the docker config ``docker login`` wrote) are excluded: they
hold the password by design.
"""

from __future__ import annotations

import pytest

from tests.reliability.conftest import CANARIES, Ledger


@pytest.mark.after_all
def test_no_canary_anywhere(ledger: Ledger) -> None:
    leaks = ledger.leaks()
    files = sum(
        1 for base in ledger.scan_dirs if base.exists() for p in base.rglob("*") if p.is_file()
    )
    ledger.record(
        "secrets: canary registry and cosign passwords",
        "never in stdout, stderr, logs, metadata, SBOM, history, targets, GitHub outputs",
        f"{len(leaks)} leaks in {len(ledger.captured)} outputs and {files} files "
        f"({len(CANARIES)} canaries)",
        not leaks,
    )
    assert not leaks, leaks
