"""userName comparison: the PRECIS UsernameCaseMapped profile (RFC 8265 §3.3).

The one definition of when two userNames are the same: the users table's
uniqueness key (`user_name_key`), the filters that match it (`fold`) and the
migration that recomputed existing keys (0005) all use this module.

A userName is unique in its tenant (RFC 7643 §4.1.1, case-insensitively). Two
spellings a person reads as the same name must collide: `café` in NFC and NFD,
`ß` and `SS`, fullwidth `Ada` (U+FF21...) and `Ada`. `user_name_key` maps a userName to the
key the storage compares (and filters match), and refuses names with code points
a username may not have (zero-width and other invisible characters, controls,
symbols outside ASCII): what a person cannot tell apart or type must not make a
second account. The userName is stored as sent; only the key is mapped.

The profile, as applied here (RFC 8265 §3.3.2, on each space-separated part, as
§3.5 allows for names with spaces):

1. width mapping: fullwidth and halfwidth code points to their decomposition;
2. case mapping: Unicode full case folding (`str.casefold`), so that `ß` and `SS`
   collide (RFC 7613 folded case; RFC 8265 prefers toLowerCase, which keeps them
   apart, and which the issue this answers found confusing);
3. normalization: NFC;
4. the IdentifierClass (RFC 8264 §4.2), derived from Python's Unicode database as
   RFC 8264 §9 derives it: letters, marks and digits without compatibility
   decompositions, and printable ASCII, are allowed; ZWJ/ZWNJ only after a virama
   (RFC 5892 Appendix A.1/A.2), the middle dot only between two `l` (A.3);
   spaces (other than the separating U+0020), controls, format characters
   (zero-width space, BOM, soft hyphen...), symbols, non-ASCII punctuation,
   unassigned code points and old Hangul jamo are not.

The bidi rule (RFC 8265 §3.3.3 step 5) is not applied.
"""

from __future__ import annotations

import unicodedata

from ..errors import InvalidValue

_ZWNJ, _ZWJ, _MIDDLE_DOT = "\u200c", "\u200d", "\u00b7"
#: RFC 5892 §2.6 exceptions that are PVALID (or CONTEXTO, allowed here) though
#: their category alone would not make them so.
_EXCEPTIONS_VALID = frozenset("\u00df\u03c2\u06fd\u06fe\u0f0b\u3007\u0375\u05f3\u05f4\u30fb")
#: ...and those that are DISALLOWED though their category would allow them.
_EXCEPTIONS_DISALLOWED = frozenset("\u0640\u07fa\u302e\u302f\u3031\u3032\u3033\u3034\u3035\u303b")
_LETTER_DIGITS = frozenset({"Ll", "Lu", "Lo", "Nd", "Lm", "Mn", "Mc"})
_OLD_HANGUL_JAMO = ((0x1100, 0x11FF), (0xA960, 0xA97F), (0xD7B0, 0xD7FF))
#: Canonical combining class of a virama.
_VIRAMA = 9


def _width_mapped(text: str) -> str:
    out = []
    for c in text:
        d = unicodedata.decomposition(c)
        if d.startswith(("<wide>", "<narrow>")):
            out.append("".join(chr(int(h, 16)) for h in d.split()[1:]))
        else:
            out.append(c)
    return "".join(out)


def _allowed(part: str, i: int) -> bool:
    c = part[i]
    o = ord(c)
    if 0x21 <= o <= 0x7E:
        return True
    if c in _EXCEPTIONS_VALID:
        return True
    if c in _EXCEPTIONS_DISALLOWED:
        return False
    if c in (_ZWNJ, _ZWJ):
        return i > 0 and unicodedata.combining(part[i - 1]) == _VIRAMA
    if c == _MIDDLE_DOT:
        return 0 < i < len(part) - 1 and part[i - 1] == part[i + 1] == "l"
    if any(lo <= o <= hi for lo, hi in _OLD_HANGUL_JAMO):
        return False
    if unicodedata.category(c) not in _LETTER_DIGITS:
        return False  # spaces, controls, format, symbols, punctuation, unassigned
    # HasCompat: a compatibility decomposition (after width mapping) is disallowed.
    return not unicodedata.decomposition(c).startswith("<")


def _parts(text: str) -> list[str]:
    """The mapped (width, case, NFC) parts between spaces (U+0020); the spaces
    themselves are kept as they are (a name's spacing is part of it)."""
    return [unicodedata.normalize("NFC", _width_mapped(raw).casefold()) for raw in text.split(" ")]


def fold(text: str) -> str:
    """The mapping alone, for a filter's literal: what a stored key would be for a
    name that is allowed (a literal that is not can then match no key)."""
    return " ".join(_parts(text))


def user_name_key(user_name: str) -> str:
    """The key userName uniqueness and filters compare; InvalidValue (400
    invalidValue) when the name has a code point a username may not have."""
    parts = _parts(user_name)
    for part in parts:
        for i, c in enumerate(part):
            if not _allowed(part, i):
                raise InvalidValue(
                    f"userName contains U+{ord(c):04X} "
                    f"({unicodedata.name(c, 'unnamed')}), which a user name may not "
                    "contain (RFC 8265 UsernameCaseMapped: no invisible, control or "
                    "symbol characters)",
                    field="userName",
                )
    if not any(parts):
        raise InvalidValue("userName is required and must not be blank", field="userName")
    return " ".join(parts)
