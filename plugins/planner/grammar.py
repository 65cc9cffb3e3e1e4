"""The Lark grammar (llguidance's dialect) of the plans a model may write over a set of tools.

The grammar is the plan format of :mod:`.parse` narrowed to the tools shown:

* each tool is its own alternative ``name(`` + its required arguments in
  order + each optional argument optionally, in a fixed order + ``)``;
* a value follows its JSON schema: strings, numbers, integers, booleans,
  enums (the listed literals), ``format: date`` (a real calendar date);
  anything richer — arrays, objects, bounds, patterns — is llguidance's
  ``%json{...}`` with the argument's own sub-schema;
* any value may instead be a reference ``$N.key.0.key``; step *k* can only
  name steps 1..k-1, because every step has its own copy of the call rules
  (the grammar itself keeps the plan a DAG in step order), and the keys are
  the ones the shown tools' result schemas use;
* at most ``max_steps`` steps, then ``join()``.

So whatever the grammar lets a model write parses with
:func:`.parse.parse_plan` and passes :meth:`Plan.check` (arguments that hold
references are checked once resolved, as for every plan). No whitespace is
free: a small model padding with spaces or newlines is masked out.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Mapping, Sequence

from agentd.tools import ToolSpec

#: Steps a plan may have (references stay one digit).
MAX_STEPS = 8
#: Longest string value a plan may hold, in characters.
MAX_STRING = 80
#: Deepest reference path (``$1.flights.0.id`` is 3).
MAX_PATH = 4
#: Schema keywords that only document; a sub-schema with nothing else is a plain type.
_DOC_KEYS = frozenset({"type", "description", "title", "examples", "default", "$comment"})
#: How ``%json`` values are written: no free whitespace, the separators the parser's examples use.
_JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

_TERMINALS = rf"""
STRING: /"([^"\\\x00-\x1f]|\\["\\\/bfnrt]){{0,{MAX_STRING}}}"/
INTEGER: /-?(0|[1-9][0-9]{{0,8}})/
NUMBER: /-?(0|[1-9][0-9]{{0,8}})(\.[0-9]{{1,4}})?/
DATE: /"(20[0-9][0-9]-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))|20(0[48]|[2468][048]|[13579][26])-02-29)"/
BOOLEAN: "true" | "false"
AMOUNT: /(0\.([1-9][0-9]?|0[1-9])|[1-9][0-9]{{0,5}}(\.[0-9]{{1,2}})?)/
"""


def arguments_in_order(tool: ToolSpec) -> list[tuple[str, Mapping[str, Any], bool]]:
    """``(name, schema, required)`` for each argument: the required ones first, then the optional ones,
    each group in the schema's property order. The grammar, prompt and examples all use this order."""
    properties: Mapping[str, Any] = tool.parameters.get("properties", {}) or {}
    required = list(tool.required)
    names = [n for n in properties if n in required] + [n for n in required if n not in properties]
    names += [n for n in properties if n not in required]
    return [(name, properties.get(name, {}), name in required) for name in names]


def plan_grammar(tools: Sequence[ToolSpec], *, max_steps: int = MAX_STEPS) -> str:
    """The Lark grammar of every plan of at most ``max_steps`` calls to ``tools``."""
    if not tools:
        raise ValueError("a plan grammar needs at least one tool")
    if not 1 <= max_steps <= 9:
        raise ValueError("max_steps must be 1..9 (references are one digit)")
    lines: list[str] = []
    # The plan: step 1, then each further step or join().
    lines.append('start: s1 "\\n" t2')
    for k in range(2, max_steps + 1):
        lines.append(f't{k}: "join()" | s{k} "\\n" t{k + 1}')
    lines.append(f't{max_steps + 1}: "join()"')
    values: list[str] = []
    for i, tool in enumerate(tools):
        for j, (_name, schema, _required) in enumerate(arguments_in_order(tool)):
            values.append(f"v{i}_{j}: {_value_rule(schema, tool.parameters)}")
    for k in range(1, max_steps + 1):
        calls = " | ".join(f"c{i}_{k}" for i in range(len(tools)))
        lines.append(f's{k}: "{k}. " ({calls})')
        for i, tool in enumerate(tools):
            lines.append(f"c{i}_{k}: {_call_rule(tool, i, k)}")
    lines.extend(values)
    keys = _result_keys(tools)
    key = "|".join(sorted(keys)) if keys else "[A-Za-z_][A-Za-z0-9_]{0,30}"
    for k in range(2, max_steps + 1):
        lines.append(rf"REF{k}: /\$[1-{k - 1}](\.({key}|[0-9])){{0,{MAX_PATH}}}/")
    return "\n".join(lines) + "\n" + _TERMINALS.strip() + "\n"


def _call_rule(tool: ToolSpec, i: int, k: int) -> str:
    def argument(j: int, name: str) -> str:
        value = f"v{i}_{j}" if k == 1 else f"(v{i}_{j} | REF{k})"
        return f"{_literal(name + '=')} {value}"

    ordered = arguments_in_order(tool)
    required = [argument(j, name) for j, (name, _s, req) in enumerate(ordered) if req]
    optional = [argument(j, name) for j, (name, _s, req) in enumerate(ordered) if not req]
    parts = [_literal(tool.name + "(")]
    if required:
        parts.append(' ", " '.join(required))
        parts.extend(f'(", " {arg})?' for arg in optional)
    elif optional:
        # No required argument: the first one present has no comma before it.
        heads = [" ".join([optional[m], *(f'(", " {arg})?' for arg in optional[m + 1:])]) for m in range(len(optional))]
        parts.append("(" + " | ".join(f"({h})" for h in heads) + ")?")
    parts.append('")"')
    return " ".join(parts)


def _value_rule(schema: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    if not isinstance(schema, Mapping):
        return _json_rule({}, root)
    extra = set(schema) - _DOC_KEYS
    if extra == {"const"} and _scalar(schema["const"]) and _fits_type(schema["const"], schema.get("type")):
        return _literal(json.dumps(schema["const"], ensure_ascii=False))
    if extra == {"enum"} and schema["enum"] and all(_scalar(v) and _fits_type(v, schema.get("type")) for v in schema["enum"]):
        return " | ".join(_literal(json.dumps(v, ensure_ascii=False)) for v in schema["enum"])
    kind = schema.get("type")
    rule = None
    if kind == "string":
        rule = _string_rule(schema, extra)
    elif kind == "integer":
        rule = _integer_rule(schema, extra)
    elif kind == "number":
        rule = _number_rule(schema, extra)
    elif kind == "boolean" and not extra:
        rule = "BOOLEAN"
    return rule if rule is not None else _json_rule(schema, root)


#: Patterns a date in :data:`DATE` always matches (what tool packs put beside ``format: date``).
_DATE_PATTERNS = frozenset({r"^\d{4}-\d{2}-\d{2}$", r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"})
#: A pattern the grammar can copy into its own regex: anchored, digits, letters and regex
#: punctuation only (no ``.``, no negated class, no escape but ``\d``), so it can never match a quote.
_COPYABLE_PATTERN = re.compile(r"^\^((?:[A-Za-z0-9:_\-\[\]()|{},?+*/ ]|\\d)+)\$$")


def _string_rule(schema: Mapping[str, Any], extra: set[str]) -> str | None:
    low, high = schema.get("minLength", 0), schema.get("maxLength", MAX_STRING)
    if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= min(high, MAX_STRING)):
        return None
    rest = extra - {"minLength", "maxLength"}
    if not rest:
        if low == 0 and high >= MAX_STRING:
            return "STRING"
        return rf'/"([^"\\\x00-\x1f]|\\["\\\/bfnrt]){{{low},{min(high, MAX_STRING)}}}"/'
    if schema.get("format") == "date" and rest <= {"format", "pattern"} and schema.get("pattern") in (None, *_DATE_PATTERNS):
        return "DATE"
    if rest == {"pattern"} and isinstance(schema["pattern"], str):
        match = _COPYABLE_PATTERN.match(schema["pattern"])
        if match and "minLength" not in extra and "maxLength" not in extra:
            # Rust's \d is any Unicode digit (newer tables than Python's re): ASCII ones only.
            return '/"(' + match.group(1).replace("\\d", "[0-9]") + ')"/'
    return None


def _integer_rule(schema: Mapping[str, Any], extra: set[str]) -> str | None:
    if not extra:
        return "INTEGER"
    low, high = schema.get("minimum"), schema.get("maximum")
    if extra == {"minimum", "maximum"} and all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
        if 0 <= high - low < 64:
            return " | ".join(f'"{n}"' for n in range(low, high + 1))
    return None


def _number_rule(schema: Mapping[str, Any], extra: set[str]) -> str | None:
    if not extra:
        return "NUMBER"
    # Amounts of money: positive, at most two decimals, under the maximum.
    positive = schema.get("exclusiveMinimum") == 0 and extra <= {"exclusiveMinimum", "maximum"}
    if positive and schema.get("maximum", 1e6) >= 1e6:
        return "AMOUNT"
    return None


def _json_rule(schema: Mapping[str, Any], root: Mapping[str, Any]) -> str:
    sub = dict(schema)
    for defs in ("$defs", "definitions"):
        if defs in root and defs not in sub:
            sub[defs] = root[defs]
    sub["x-guidance"] = _JSON_STYLE
    return "%json " + json.dumps(sub, ensure_ascii=False)


def _literal(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _fits_type(value: Any, kind: Any) -> bool:
    checks = {"string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
              "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "null": lambda v: v is None}
    if kind is None:
        return True
    kinds = kind if isinstance(kind, list) else [kind]
    return any(checks.get(k, lambda v: False)(value) for k in kinds)


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _result_keys(tools: Iterable[ToolSpec]) -> set[str]:
    """Property names anywhere in the tools' result schemas (what a reference path can walk)."""
    keys: set[str] = set()

    def walk(schema: Any, depth: int) -> None:
        if not isinstance(schema, Mapping) or depth > 6:
            return
        for name, sub in (schema.get("properties") or {}).items():
            if _IDENTIFIER.fullmatch(name):
                keys.add(name)
            walk(sub, depth + 1)
        for keyword in ("items", "additionalProperties"):
            walk(schema.get(keyword), depth + 1)
        for keyword in ("anyOf", "oneOf", "allOf"):
            for sub in schema.get(keyword) or ():
                walk(sub, depth + 1)

    for tool in tools:
        walk(tool.result, 0)
    return keys
