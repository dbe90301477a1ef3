"""shatag: container images tagged with the exact git commit SHA.

>>> from shatag.core import short_sha
>>> short_sha("0123456789abcdef0123456789abcdef01234567")
'0123456789ab'
"""

__version__ = "0.1.0"
