"""The public API: every name in siamface.__all__ resolves, lazily, and `train` is callable either way."""

from __future__ import annotations

import subprocess
import sys

import siamface


def test_every_exported_name_resolves() -> None:
    for name in siamface.__all__:
        assert getattr(siamface, name) is not None, name


def test_train_is_callable_before_and_after_its_module_is_imported() -> None:
    code = ("import siamface; f = siamface.train; assert callable(f); import siamface.training as m; "
            "from siamface import train; assert callable(train) and train is m.train; "
            "assert siamface.train is m.train")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_importing_siamface_does_not_import_torch() -> None:
    code = "import sys, siamface; assert 'torch' not in sys.modules, 'torch imported at import time'"
    subprocess.run([sys.executable, "-c", code], check=True)
