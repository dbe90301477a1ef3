"""Private plumbing under every use case: the one subprocess chokepoint (:mod:`.subproc`), signal
handling during a switch (:mod:`.signals`), crash-safe files (:mod:`.fs`), the docker CLI client
(:mod:`.docker`) and the export of a commit's tree for a build (:mod:`.source`).

Nothing here knows about environments, targets or records; it imports only :mod:`shatag.errors`
and :mod:`shatag.core`."""
