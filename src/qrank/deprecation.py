"""qrank's deprecations in one place: a warning class the ``qrank`` command shows, and one helper whose
message always names the replacement.

A deprecated spelling keeps working for one release, then goes.

>>> import warnings
>>> with warnings.catch_warnings(record=True) as seen:
...     warnings.simplefilter("always")
...     warn_deprecated("models.instruction", "models.reranker_instruction")
>>> str(seen[0].message)
'models.instruction is deprecated and will be removed in the next release; use models.reranker_instruction'
"""

from __future__ import annotations

import warnings


class QrankDeprecationWarning(DeprecationWarning):
    """A qrank spelling that still works for one release (a ``DeprecationWarning``: hidden by default in
    libraries, shown by the ``qrank`` command)."""


def warn_deprecated(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new``; ``stacklevel`` 3 points at the caller's caller."""
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new}",
        QrankDeprecationWarning,
        stacklevel=stacklevel,
    )
