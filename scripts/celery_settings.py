#!/usr/bin/env python3
"""Generate runtime/src/config/celery_settings.rs: every setting name Celery knows.

The table is read from Celery's own ``celery.app.defaults`` (``flatten(NAMESPACES)``
for the new lowercase names, ``_TO_NEW_KEY`` for the old uppercase ones), so
Celeriac knows exactly the names Celery does. Run it with the Celery the tests use:

    .venv/bin/python scripts/celery_settings.py > runtime/src/config/celery_settings.rs
    .venv/bin/python scripts/celery_settings.py --check   # exits 1 when the file is stale
"""

import sys
from pathlib import Path

import celery
from celery.app.defaults import _TO_NEW_KEY, NAMESPACES, flatten

OUT = Path(__file__).resolve().parent.parent / "runtime" / "src" / "config" / "celery_settings.rs"


def render() -> str:
    old = {new: o for o, new in _TO_NEW_KEY.items()}
    lines = [
        f"//! Every setting name Celery {celery.__version__} knows, with its old uppercase name.",
        "//!",
        "//! Generated from `celery.app.defaults` (`flatten(NAMESPACES)` and `_TO_NEW_KEY`) by",
        "//! `scripts/celery_settings.py`; do not edit by hand: run",
        "//! `.venv/bin/python scripts/celery_settings.py > runtime/src/config/celery_settings.rs`.",
        "//! What Celeriac does with each name is decided in `config/support.rs`.",
        "",
        "/// The Celery release the table was generated from.",
        f'pub const CELERY_VERSION: &str = "{celery.__version__}";',
        "",
        "/// `(setting, old uppercase name)`, in Celery's own order.",
        "pub const CELERY_SETTINGS: &[(&str, &str)] = &[",
    ]
    for name, _opt in flatten(NAMESPACES):
        lines.append(f'    ("{name}", "{old.get(name, "")}"),')
    lines.append("];")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv[1:]:
        if OUT.read_text() != text:
            sys.exit(f"{OUT} is stale: regenerate it with {sys.argv[0]}")
    else:
        sys.stdout.write(text)
