"""`attributes` / `excludedAttributes` (RFC 7644 §3.4.2.5 and §3.9).

A projection is applied to a resource's full SCIM representation. Attributes
whose `returned` characteristic is "always" (`id`, `schemas`) survive every
projection (RFC 7643 §2.4 / §7); `excludedAttributes` never removes them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import ScimError, invalid_value
from .filter import AttrPath, split_attr_path
from .schemas import ResourceType

_ALWAYS = frozenset({"id", "schemas"})
MAX_ATTRIBUTE_LIST = 4096


def _error(detail: str) -> ScimError:
    return invalid_value(f"invalid attribute list: {detail}")


def parse_attribute_list(value: str | Iterable[str] | None) -> tuple[AttrPath, ...]:
    """`"emails.value,name.givenName"` (or a JSON array of paths) -> paths."""
    if value is None:
        return ()
    if isinstance(value, str):
        if len(value) > MAX_ATTRIBUTE_LIST:
            raise _error(f"longer than {MAX_ATTRIBUTE_LIST} characters")
        items = value.split(",")
    else:
        items = list(value)
    out = []
    for item in items:
        if not isinstance(item, str):
            raise _error("each attribute must be a string")
        text = item.strip()
        if not text:
            continue
        out.append(split_attr_path(text, _error, allow_schema_only=True))
    return tuple(out)


def _find(obj: dict[str, Any], name: str) -> str | None:
    if name in obj:
        return name
    low = name.lower()
    return next((k for k in obj if k.lower() == low), None)


@dataclass(frozen=True, slots=True)
class Projection:
    attributes: tuple[AttrPath, ...] = ()
    excluded: tuple[AttrPath, ...] = ()

    @classmethod
    def parse(
        cls,
        attributes: str | Iterable[str] | None,
        excluded: str | Iterable[str] | None,
    ) -> Projection:
        return cls(parse_attribute_list(attributes), parse_attribute_list(excluded))

    @property
    def is_identity(self) -> bool:
        return not self.attributes and not self.excluded

    def returns(self, rtype: ResourceType, attribute: str) -> bool:
        """Whether a core attribute (e.g. Group `members`) is in the output."""
        low = attribute.lower()

        def core(p: AttrPath) -> bool:
            return not p.schema or p.schema.lower() == rtype.schema.id.lower()

        if self.attributes and not any(
            core(p) and p.attribute.lower() == low for p in self.attributes
        ):
            return False
        return not any(
            core(p) and p.attribute.lower() == low and not p.sub_attribute for p in self.excluded
        )

    def explicitly_requests(self, rtype: ResourceType, attribute: str) -> bool:
        low = attribute.lower()
        return any(
            (not p.schema or p.schema.lower() == rtype.schema.id.lower())
            and p.attribute.lower() == low
            for p in self.attributes
        )

    def apply(self, doc: dict[str, Any], rtype: ResourceType) -> dict[str, Any]:
        if self.is_identity:
            return doc
        out = self._include(doc, rtype) if self.attributes else copy.deepcopy(doc)
        for path in self.excluded:
            self._exclude(out, path, rtype)
        present = {k.lower() for k in out}
        if "schemas" in out:
            out["schemas"] = [
                s
                for s in out["schemas"]
                if s.lower() == rtype.schema.id.lower() or s.lower() in present
            ]
        return out

    # -- helpers ------------------------------------------------------------------------

    def _locate(
        self, doc: dict[str, Any], path: AttrPath, rtype: ResourceType
    ) -> tuple[str | None, str | None]:
        """(container key or None for top level, attribute key or None for whole container)."""
        if not path.schema or path.schema.lower() == rtype.schema.id.lower():
            return None, _find(doc, path.attribute) if path.attribute else None
        if not path.attribute:
            return _find(doc, path.schema), None
        whole = _find(doc, f"{path.schema}:{path.attribute}")
        if whole is not None and not path.sub_attribute:
            return whole, None
        ext = _find(doc, path.schema)
        if ext is None or not isinstance(doc[ext], dict):
            return None, None
        return ext, _find(doc[ext], path.attribute)

    def _include(self, doc: dict[str, Any], rtype: ResourceType) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in doc.items() if k in _ALWAYS}
        for path in self.attributes:
            container, key = self._locate(doc, path, rtype)
            if container is None and key is None:
                continue
            if key is None:
                assert container is not None
                out[container] = copy.deepcopy(doc[container])
                continue
            src = doc if container is None else doc[container]
            dst = out if container is None else out.setdefault(container, {})
            value = src[key]
            if path.sub_attribute:
                _merge_sub(dst, key, value, path.sub_attribute)
            else:
                dst[key] = copy.deepcopy(value)
        return out

    def _exclude(self, out: dict[str, Any], path: AttrPath, rtype: ResourceType) -> None:
        container, key = self._locate(out, path, rtype)
        if container is None and key is None:
            return
        if key is None:
            assert container is not None
            out.pop(container, None)
            return
        holder = out if container is None else out[container]
        if container is None and key in _ALWAYS:
            return  # RFC 7643 §7: "always" attributes cannot be excluded
        if path.sub_attribute:
            value = holder.get(key)
            items = value if isinstance(value, list) else [value]
            for item in items:
                if isinstance(item, dict):
                    sub = _find(item, path.sub_attribute)
                    if sub is not None:
                        del item[sub]
            return
        holder.pop(key, None)
        if container is not None and not out[container]:
            del out[container]


def _merge_sub(dst: dict[str, Any], key: str, value: Any, sub: str) -> None:
    if isinstance(value, list):
        existing = dst.get(key)
        picked = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            sub_key = _find(item, sub)
            base = existing[i] if isinstance(existing, list) and i < len(existing) else {}
            if sub_key is not None:
                base = {**base, sub_key: copy.deepcopy(item[sub_key])}
            picked.append(base)
        if any(picked):
            dst[key] = picked
    elif isinstance(value, dict):
        sub_key = _find(value, sub)
        if sub_key is not None:
            dst.setdefault(key, {})[sub_key] = copy.deepcopy(value[sub_key])
