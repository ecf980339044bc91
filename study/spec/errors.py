"""Spec errors as one line: the file, the field path, what is wrong. pydantic's errors are
translated here (its bookkeeping dropped from the path)."""

from __future__ import annotations

import re

from pydantic import ValidationError


class SpecError(ValueError):
    """A spec that cannot run. The message is one line: file, field path, what is wrong."""


class AxisError(ValueError):
    """An error at a sub-path of the field being validated (``loc``), raised by a validator."""

    def __init__(self, loc, msg):
        super().__init__(msg)
        self.loc, self.msg = loc, msg


def message(err: dict) -> str:
    """One short human message for a pydantic error."""
    ctx, kind = err.get("ctx") or {}, err["type"]
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {limit:g}"
    if kind == "literal_error":
        return f"unknown value {err['input']!r} (expected {ctx.get('expected')})"
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "string_pattern_mismatch":
        return "must be letters, digits, '.', '_' or '-'"
    return err["msg"][0].lower() + err["msg"][1:]


def format_loc(loc) -> str:
    loc = list(loc)
    # Drop pydantic's bookkeeping: the marker of dict keys and the member of a union.
    out = ""
    for part in loc:
        if part == "[key]" or _union_member(part):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def split_nested(msg: str) -> tuple[str, str]:
    """A validator may prefix a sub-path ('norms.linf.eps[3]: ...'); split it off."""
    m = re.match(r"^([A-Za-z_][\w.\[\]]*): (.*)$", msg)
    return (m.group(1), m.group(2)) if m else ("", msg)


_UNION_MEMBER = re.compile(r"^(str|int|float|literal\[.*|list\[.*)$")


def _union_member(part) -> bool:
    """pydantic names the member of a union (e.g. `literal['max','min']`) in the error's loc."""
    return isinstance(part, str) and bool(_UNION_MEMBER.match(part))


def relevant_errors(errors: list[dict]) -> list[dict]:
    """A value that fits no member of a union (metric: one name or a list) gets one error per
    member; report the member whose shape matches what was written (a list or a single value)."""
    def misfit(err):
        in_union = any(_union_member(p) for p in err["loc"])
        wrong_shape = err["type"].endswith("_type") or (err["type"] == "literal_error" and isinstance(err["input"], list))
        return in_union and wrong_shape

    return [err for err in errors if not misfit(err)] or errors


def from_validation_error(path: str, e: ValidationError) -> SpecError:
    errors = relevant_errors(e.errors())
    err = errors[0]
    ctx_error = (err.get("ctx") or {}).get("error")
    loc = list(err["loc"])
    if isinstance(ctx_error, AxisError):
        loc, msg = loc + list(ctx_error.loc), ctx_error.msg
    else:
        sub, msg = split_nested(message(err))
        loc += [sub] if sub else []
    where = format_loc(loc)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return SpecError(f"{path}: {where}: {msg}{more}" if where else f"{path}: {msg}{more}")
