"""People's names in a gallery: one spelling per person, reachable by every client.

A name is stored in Unicode NFC (so "é" typed as one character or as "e" + accent is one name), without
control or invisible formatting characters (a right-to-left override can make "evil" display as "live"),
without "/" and not "." or ".." (a URL path could not reach such a person), and without mixing Latin with
Cyrillic or Greek letters (the classic look-alike: a Cyrillic "а" inside a Latin name). A new name that
looks like an enrolled one (`skeleton`: case, width, accents-as-written and Cyrillic/Greek look-alikes
folded, spaces collapsed) is refused too. Cf. Unicode TR #39 (confusable detection); this is a small
subset of it, for the scripts that are confused in practice.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import Any

MAX_NAME = 200
_MIXABLE = {"CYRILLIC", "GREEK"}  # scripts whose letters pass for Latin ones
# Cyrillic and Greek letters that look like Latin ones (after casefolding), and what they look like.
_LOOK_ALIKE = str.maketrans("аесорхуіјѕԁһӏԛԝвкмнтοαρνικυχε", "aecopxyijsdhlqwbkmhtoapvikuxe")


def check_name(name: Any) -> str:
    """The stored form of a person's name (NFC, stripped), or ValueError saying what is wrong with it."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a person's name must be non-empty text, got {name!r}")
    name = unicodedata.normalize("NFC", name.strip())
    if len(name) > MAX_NAME:
        raise ValueError(f"a person's name must be at most {MAX_NAME} characters, got {len(name)}")
    bad = [c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")]
    if bad:
        raise ValueError(f"a person's name must not hold control or invisible characters, got {name!r} "
                         f"(U+{ord(bad[0]):04X} {unicodedata.name(bad[0], 'a control character')})")
    if "/" in name or name in (".", ".."):
        raise ValueError(f"a person's name cannot contain '/' or be '.' or '..' (it is part of a URL), got {name!r}")
    scripts = {_script(c) for c in name if c.isalpha()}
    if "LATIN" in scripts and scripts & _MIXABLE:
        mixed = sorted(scripts & ({"LATIN"} | _MIXABLE))
        raise ValueError(f"a person's name must not mix {' and '.join(s.title() for s in mixed)} letters (they "
                         f"look alike), got {name!r}")
    return name


def skeleton(name: str) -> str:
    """What a name looks like: compatibility forms, case, look-alike letters and spaces folded."""
    folded = unicodedata.normalize("NFKC", name).casefold().translate(_LOOK_ALIKE)
    return " ".join(folded.split())


def look_alike(name: str, existing: Iterable[str]) -> str | None:
    """An enrolled name (other than `name` itself) that looks like `name`, or None."""
    mine = skeleton(name)
    return next((other for other in existing if other != name and skeleton(other) == mine), None)


def _script(c: str) -> str:
    return unicodedata.name(c, "UNKNOWN").split(" ")[0]
