"""Emit the build metadata JSON line for given fields (seed T012), using the library.

For pipelines that build with something else but want shatag's record format::

    python ci/emit_image_metadata.py --sha=<40hex> --repository=localhost:5000/api \\
        --repository-type=canonical --digest=sha256:<64hex> [--out=build/metadata/<sha>.json]

Validates every field with the same code `inv build` uses; a bad field prints
``error: CODE: message`` and exits 1. Durations use a monotonic high-resolution clock when
``--started-at-monotonic`` is given (``time.monotonic()`` of the same boot).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from shatag.app.build import BuildRecord
from shatag.core import (
    RepositoryType,
    parse_repository,
    pinned_reference,
    short_sha,
    validate_digest,
    validate_sha,
)
from shatag.errors import InvalidInput, ShatagError
from shatag.output import emit_json, write_json_atomic

SIGNATURE_REASONS = (
    "n/a",
    "missing",
    "no_signature",
    "invalid",
    "key_not_found",
    "tool_missing",
    "error",
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sha", required=True, help="full 40-hex git SHA")
    parser.add_argument("--repository", required=True, help="registry/name, no tag")
    parser.add_argument("--repository-type", choices=("canonical", "staging"), required=True)
    parser.add_argument("--digest", required=True, help="manifest digest sha256:<64 hex>")
    parser.add_argument("--pre-push-digest", default="", help="local image ID (config digest)")
    parser.add_argument(
        "--signature-status", choices=("verified", "unverified"), default="unverified"
    )
    parser.add_argument("--signature-reason", choices=SIGNATURE_REASONS, default="tool_missing")
    parser.add_argument(
        "--started-at-monotonic",
        type=float,
        default=None,
        help="time.monotonic() when the build started",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        sha = validate_sha(args.sha)
        repo = parse_repository(args.repository)
        digest = validate_digest(args.digest)
        pre_push = validate_digest(args.pre_push_digest) if args.pre_push_digest else ""
        if args.signature_status == "verified" and args.signature_reason != "n/a":
            raise InvalidInput("a verified signature has signature_reason n/a")
        record = BuildRecord(
            image_sha=sha,
            short_sha=short_sha(sha),
            repository=str(repo),
            repository_type=RepositoryType(args.repository_type).value,
            image_digest=digest,
            image_ref=pinned_reference(repo, sha, digest),
            arch="linux/amd64",
            signature_status=args.signature_status,
            signature_reason=args.signature_reason,
            pre_push_digest=pre_push,
            post_push_digest=digest,
            digest_verification="ok",
            build_duration_sec=(
                round(time.monotonic() - args.started_at_monotonic, 6)
                if args.started_at_monotonic is not None
                else 0.0
            ),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
    except ShatagError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    data = record.as_dict()
    if args.out:
        write_json_atomic(args.out, data)
    emit_json(data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
