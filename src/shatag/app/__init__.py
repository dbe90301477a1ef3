"""The use cases: :mod:`.build`, :mod:`.deploy`, :mod:`.rollback`, :mod:`.verify` and
:mod:`.signatures` (is it safe to enforce signatures?). Each composes the adapters below it
(supply chain, ledger, targets, ``_sys``) and returns a record; :mod:`shatag.tasks` prints it."""
