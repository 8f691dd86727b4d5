"""What `scim-gateway` sets up around the app: the glibc malloc arena cap."""

from __future__ import annotations

import ctypes

from scim_gateway.__main__ import MALLOC_ARENAS, cap_malloc_arenas


def test_malloc_arenas_are_capped_unless_configured() -> None:
    given = {"MALLOC_ARENA_MAX": "8"}
    assert cap_malloc_arenas(given) is False
    assert given == {"MALLOC_ARENA_MAX": "8"}  # the operator's choice stands

    environ: dict[str, str] = {}
    applied = cap_malloc_arenas(environ)
    assert environ == {"MALLOC_ARENA_MAX": str(MALLOC_ARENAS)}
    try:
        has_mallopt = hasattr(ctypes.CDLL(None), "mallopt")
    except OSError:
        has_mallopt = False
    assert applied == has_mallopt
