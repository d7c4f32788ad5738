"""The web UI (Gradio): rerank playground, search side by side, model comparison, evaluation reports.

Needs the ``ui`` extra. ``qrank ui`` serves it alone; ``qrank serve --ui`` mounts it at ``/ui``.
The page holds no model logic: it calls a :class:`~qrank.ui.backend.UIBackend` — models in this process
(:class:`~qrank.ui.backend.LocalBackend`) or a qrank server (:class:`~qrank.ui.remote.RemoteBackend`).

>>> import tempfile
>>> from qrank.settings import Settings
>>> from qrank.ui import LocalBackend, build_ui
>>> settings = Settings(home=tempfile.mkdtemp())
>>> backend = LocalBackend.from_sources(settings, rerankers=["../shared/models/scifact-minilm-ce"])
>>> backend.reranker_names()
['scifact-minilm-ce']
>>> blocks = build_ui(backend)

``launch_ui(blocks, settings)`` then serves the page until interrupted (tests/unit/test_ui_layout.py
checks the page's parts; tests/integration/test_ui_browser.py drives it in a browser).
"""

from __future__ import annotations

from importlib import import_module

from .backend import LocalBackend, UIBackend

# Gradio is imported only when the page is built, so that the handlers work without it
_LAZY = {
    "build_ui": "qrank.ui.layout",
    "launch_ui": "qrank.ui.layout",
    "mount_ui": "qrank.ui.layout",
    "RemoteBackend": "qrank.ui.remote",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'qrank.ui' has no attribute {name!r}")


__all__ = ["LocalBackend", "RemoteBackend", "UIBackend", "build_ui", "launch_ui", "mount_ui"]
