"""The HTTP service and web page (`siamface serve`), behind the `[serve]` extra (FastAPI, uvicorn).

Importing this package imports nothing heavy; `require_extra()` says what to install when FastAPI is missing.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from siamface.errors import SiamfaceError

_EXPORTS = {"create_app": "app", "Settings": "app", "open_resources": "app", "Limits": "limits"}
_PACKAGES = {"python_multipart": "python-multipart", "swagger_ui_bundle": "swagger-ui-bundle-v2"}  # import -> package
__all__ = ["require_extra", *sorted(_EXPORTS)]


def require_extra() -> None:
    """Raise a one-line SiamfaceError naming the install command when the service's packages are missing."""
    missing = []
    for module in ("fastapi", "uvicorn", "python_multipart", "swagger_ui_bundle"):
        try:
            import_module(module)
        except ImportError:
            missing.append(_PACKAGES.get(module, module))
    if missing:
        raise SiamfaceError(f"siamface serve needs {', '.join(missing)}: in the siamface checkout, "
                            "pip install -e '.[serve]' (or .venv/bin/pip after scripts/setup.sh)")


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        require_extra()
        return getattr(import_module(f"siamface.serve.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'siamface.serve' has no attribute {name!r}")
