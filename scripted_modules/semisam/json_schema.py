"""One place that checks every JSON file SemiSAM reads against a schema kept in ``semisam/schemas``.

Kinds (one schema file each, ``schemas/<kind>.json``): ``manifest`` (a specialist's manifest.json),
``case_record`` (case.json), ``scan_record`` (scan.json), ``store_meta`` (semisam_store.json),
``registry_record`` (a model version's registry.json), ``active`` (models/active.json), ``prompts``,
``dataset`` (MSD / nnU-Net dataset.json), ``splits_final``, ``train_config`` and ``checkpoint_meta``.

A failure raises :class:`SchemaError` (a ``ValueError``: the CLI prints it as one line, exit 1) whose
message names the file, the field and what was expected, e.g.::

    /data/model/manifest.json: preprocessing.intensity: expected an object, got an array ([1, 2])

Callers that have their own error type (``CheckpointError``, ``StoreFormatError``...) pass it as
``error``; it is called with the message. Checks that a schema cannot express (a window's low < high)
stay with the code that reads the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).with_name("schemas")

#: JSON type names as a person reads them.
_TYPE_WORDS = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


class SchemaError(ValueError):
    """A JSON file does not have the expected shape. ``path`` names the file, ``field`` the spot."""

    def __init__(self, message: str, path: str | os.PathLike | None = None, field: str = ""):
        self.path = None if path is None else str(path)
        self.field = field
        super().__init__(message)


def warm(*names: str) -> None:
    """Build (and exercise once) the validators of ``names`` (default: every kind) now.

    The first validation of a kind costs ~0.1 s (schema loading, reference resolution, pattern
    compilation); later ones ~1 ms. Processes forked to do quick work (the store's crash drill) call
    this before forking.
    """
    for kind in names or kinds():
        validator = _validator(kind)
        for _ in validator.iter_errors({}):
            pass


def kinds() -> list[str]:
    """Every schema kind kept in the project."""
    return sorted(p.stem for p in SCHEMA_DIR.glob("*.json"))


@cache
def _registry():
    from referencing import Registry, Resource

    resources = []
    for p in SCHEMA_DIR.glob("*.json"):
        resources.append((p.name, Resource.from_contents(json.loads(p.read_text(encoding="utf-8")))))
    return Registry().with_resources(resources)


@cache
def _validator(kind: str):
    from jsonschema import Draft202012Validator

    path = SCHEMA_DIR / f"{kind}.json"
    if not path.is_file():
        raise KeyError(f"no schema {kind!r}; kinds: {', '.join(kinds())}")
    schema = json.loads(path.read_text(encoding="utf-8"))
    return Draft202012Validator(schema, registry=_registry())


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    return type(value).__name__


def _short(value: Any, n: int = 60) -> str:
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def field_name(parts) -> str:
    """``["training", 2, "label"]`` -> ``training[2].label``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _expectation(err) -> str:
    """What the schema wanted at ``err``'s spot, in words, with what was found."""
    v, val, inst = err.validator, err.validator_value, err.instance
    got = f"got {_json_type(inst)} ({_short(inst)})"
    if v == "type":
        types = [val] if isinstance(val, str) else list(val)
        return "expected " + " or ".join(_TYPE_WORDS.get(t, t) for t in types) + f", {got}"
    if v == "required":
        missing = [k for k in val if isinstance(inst, dict) and k not in inst]
        return f"missing field(s) {', '.join(repr(k) for k in missing)}"
    desc = err.schema.get("description") if isinstance(err.schema, dict) else None
    if desc and v not in ("additionalProperties", "propertyNames"):
        return f"{desc}, got {_short(inst)}"
    if v in ("enum", "const"):
        options = val if v == "enum" else [val]
        return f"must be one of {', '.join(_short(o) for o in options)}, got {_short(inst)}"
    if v == "minimum":
        return f"must be >= {val}, got {_short(inst)}"
    if v == "maximum":
        return f"must be <= {val}, got {_short(inst)}"
    if v == "exclusiveMinimum":
        return f"must be > {val}, got {_short(inst)}"
    if v == "exclusiveMaximum":
        return f"must be < {val}, got {_short(inst)}"
    if v in ("minItems", "maxItems"):
        return f"must have {'at least' if v == 'minItems' else 'at most'} {val} item(s), got {len(inst)}"
    if v == "minProperties":
        return f"must have at least {val} entr{'y' if val == 1 else 'ies'}, got {len(inst)}"
    if v == "minLength":
        return "must not be empty"
    if v == "additionalProperties":
        extra = sorted(set(inst) - set(err.schema.get("properties", {})))
        return f"unknown field(s) {', '.join(repr(k) for k in extra)}"
    if v == "propertyNames":
        return f"has an invalid key: {err.message}"
    if v == "pattern":
        return f"does not match {val!r}, got {_short(inst)}"
    if v == "not":
        return f"value {_short(inst)} is not allowed"
    return err.message


def validate(
    kind: str,
    data: Any,
    path: str | os.PathLike | None = None,
    *,
    error: Callable[[str], Exception] | None = None,
) -> Any:
    """Check decoded JSON ``data`` against ``schemas/<kind>.json``; return ``data`` unchanged.

    Args:
        kind: the schema kind (see :func:`kinds`).
        data: the decoded JSON value.
        path: the file it came from, for the message (``None``: no file).
        error: exception factory called with the message (default :class:`SchemaError`).

    Raises:
        SchemaError (or ``error(...)``): one line ``PATH: FIELD: expectation``.
    """
    from jsonschema.exceptions import best_match

    validator = _validator(kind)
    err = best_match(validator.iter_errors(data))
    if err is None:
        return data
    # Descend into if/then and $ref sub-errors to the most specific spot.
    while err.context:
        deeper = best_match(err.context)
        if deeper is None:
            break
        err = deeper
    where = field_name(err.absolute_path)
    pre = f"{path}: " if path is not None else ""
    message = f"{pre}{where + ': ' if where else ''}{_expectation(err)}"
    if error is not None:
        raise error(message)
    raise SchemaError(message, path, where)


def load_json(path: str | os.PathLike, kind: str, *, error: Callable[[str], Exception] | None = None) -> Any:
    """Read ``path`` as UTF-8 JSON and :func:`validate` it as ``kind``.

    ``FileNotFoundError`` passes through (callers word "missing" their own way); unreadable bytes or
    invalid JSON raise ``error``/:class:`SchemaError` naming the file.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
        data = json.loads(text)
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        # RecursionError: JSON nested thousands of levels deep (never written by SemiSAM).
        message = f"{p}: not valid JSON ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        if error is not None:
            raise error(message) from exc
        raise SchemaError(message, p) from exc
    return validate(kind, data, p, error=error)
