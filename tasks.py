"""Project tasks: the shatag collection (``inv --list``). Configuration: ``invoke.yaml``."""

from shatag.tasks import ns

__all__ = ["ns"]
