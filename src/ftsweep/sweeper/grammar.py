"""The sweep grammar users know from Hydra, mapped to Optuna distributions.

    interval(a, b)              FloatDistribution(a, b)        (continuous; both ends may be sampled)
    tag(log, interval(a, b))    FloatDistribution(a, b, log=True); a > 0 required
    tag(int, interval(a, b))    IntDistribution(a, b)          (a and b inclusive)
    tag(int, log, interval(..)) IntDistribution(a, b, log=True)
    int(interval(a, b))         the same as tag(int, interval(a, b)) (Hydra's cast, as its Optuna sweeper reads it);
                                tag(log, int(interval(a, b))) = IntDistribution(a, b, log=True)
    range(start, stop[, step])  the values start, start+step, ... that are < stop: the end is
                                EXCLUSIVE, exactly like Python's range() and Hydra's basic sweeper
                                (range(8, 33, 8) = 8, 16, 24, 32; range(1, 4) = 1, 2, 3). Becomes an
                                Int/FloatDistribution(start, last value, step). tag(log, range(a, b))
                                (step 1) = IntDistribution(a, b - 1, log=True); shuffle(range(...)) = choice.
    choice(x, y, ...) / x,y,... CategoricalDistribution; for a config group (lora: choice(r8, r16))
                                the choices are option names, checked against conf/<group>/*.yaml.
    a plain value               a fixed override (passed to every trial)

Everything here raises :class:`SweepInputError`, whose message is one line naming the parameter.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ftsweep.errors import SweepInputError, first_line


@dataclass
class SearchSpace:
    """What a trial samples (``distributions``) and what it derives from the samples."""

    # param name -> optuna distribution; params are passed to the trial as overrides, variables are not
    distributions: dict[str, Any] = field(default_factory=dict)
    variables: set[str] = field(default_factory=set)
    # override key -> expression with {name} placeholders
    derived: dict[str, str] = field(default_factory=dict)
    # fixed overrides given in hydra.sweeper.params as plain values
    fixed: list[str] = field(default_factory=list)
    # their values by key, which derived expressions may read too (a searched key fixed on the command line)
    constants: dict[str, Any] = field(default_factory=dict)
    # param names that are config groups (their values are option names)
    groups: set[str] = field(default_factory=set)

    def to_json(self) -> str:
        """Canonical JSON, stored on the study to detect a changed search space on resume."""
        from optuna.distributions import distribution_to_json

        doc = {
            "params": {k: json.loads(distribution_to_json(d)) for k, d in sorted(self.distributions.items())},
            "variables": sorted(self.variables),
            "derived": dict(sorted(self.derived.items())),
        }
        return json.dumps(doc, sort_keys=True)

    def overrides(self, values: Mapping[str, Any]) -> list[str]:
        """The overrides a trial gets for sampled ``values``: params (not variables), then derived keys."""
        out = [f"{k}={format_value(v)}" for k, v in values.items() if k not in self.variables]
        for key, expr in self.derived.items():
            out.append(f"{key}={format_value(evaluate(expr, {**self.constants, **values}, key))}")
        return out

    def corner(self, which: str) -> dict[str, Any]:
        """The lowest (``"low"``) or highest (``"high"``) value of every distribution (for validation)."""
        out: dict[str, Any] = {}
        for name, dist in self.distributions.items():
            if hasattr(dist, "choices"):
                out[name] = dist.choices[0 if which == "low" else -1]
            else:
                out[name] = dist.low if which == "low" else dist.high
        return out


def parse_space(
    params: Mapping[str, Any] | None,
    variables: Mapping[str, Any] | None = None,
    derived: Mapping[str, Any] | None = None,
    *,
    group_options: Callable[[str], list[str] | None] = lambda key: None,
) -> SearchSpace:
    """Parse ``hydra.sweeper.params`` / ``variables`` / ``derived`` into a :class:`SearchSpace`.

    ``group_options(key)`` returns the option names of config group ``key`` (None if ``key`` is not a
    group); it is used to check group choices before any trial runs.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    space = SearchSpace()
    for kind, mapping in (("params", params or {}), ("variables", variables or {})):
        for key, spec in mapping.items():
            text = f"{key}={_spec_text(spec)}"
            try:
                override = parser.parse_override(text)
            except Exception as err:
                raise SweepInputError(f"hydra.sweeper.{kind}.{key}: cannot parse {spec!r}: {first_line(err)}") from err
            if not override.is_sweep_override():
                if kind == "variables":
                    raise SweepInputError(f"hydra.sweeper.variables.{key}: must be a sweep (choice, range, interval)")
                space.fixed.append(text)
                if isinstance(override.value(), (int, float)) and not isinstance(override.value(), bool):
                    space.constants[override.get_key_element()] = override.value()
                continue
            name = override.get_key_element()
            space.distributions[name] = _glob_choice(name, override, group_options) or distribution_from_override(override)
            if kind == "variables":
                space.variables.add(name)
            options = group_options(name) if kind == "params" else None
            if options is not None:
                _check_group_choice(name, space.distributions[name], options)
                space.groups.add(name)
    for key, expr in (derived or {}).items():
        names = set(re.findall(r"\{([^{}]+)\}", str(expr)))
        unknown = names - set(space.distributions) - set(space.constants)
        if unknown:
            raise SweepInputError(f"hydra.sweeper.derived.{key}: unknown name(s) {', '.join(sorted(unknown))} in {expr!r}; "
                                  f"sampled: {', '.join(space.distributions) or 'none'}"
                                  + (f"; fixed: {', '.join(space.constants)}" if space.constants else ""))
        if key in space.distributions and key not in space.variables:
            raise SweepInputError(f"hydra.sweeper.derived.{key}: is also a searched parameter")
        space.derived[key] = str(expr)
        evaluate(str(expr), {**space.constants, **space.corner("low")}, key)  # syntax check now, not in trial 7
    return space


def _spec_text(spec: Any) -> str:
    if isinstance(spec, bool):
        return "true" if spec else "false"
    if isinstance(spec, (list, tuple)):  # YAML list -> choice(...)
        return "choice(" + ", ".join(format_value(v) for v in spec) + ")"
    return str(spec)


def distribution_from_override(override: Any) -> Any:
    """One Hydra sweep override -> an Optuna distribution (see the module docstring for the rules)."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    key = override.get_key_element()
    value = override.value()
    tags = set(getattr(value, "tags", None) or ())
    _check_tags(key, tags, value)
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and (value.shuffle or "shuffle" in tags)):
        choices = list(value.list) if isinstance(value, ChoiceSweep) else _range_values(key, value)
        for c in choices:
            if not isinstance(c, (str, int, float, bool, type(None))):
                group, dot, _ = str(key).partition(".")
                hint = (f"; to search lists, write each as an option file of its group (conf/{group}/<name>.yaml) "
                        f"and search the group: {group}=choice(<name>,<other>)") if dot else ""
                raise SweepInputError(f"{key}: choice values must be numbers, strings, booleans or null (got {c!r})"
                                      + hint)
        if not choices:
            raise SweepInputError(f"{key}: empty choice")
        if len(set(map(repr, choices))) != len(choices):
            raise SweepInputError(f"{key}: duplicate values in choice{tuple(choices)}")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        values = _range_values(key, value)
        low, high = min(values), max(values)
        step = abs(value.step)
        if "log" in tags:
            if step != 1 or any(isinstance(v, float) for v in values):
                raise SweepInputError(f"{key}: tag(log, range(...)) needs integers with step 1")
            if low <= 0:
                raise SweepInputError(f"{key}: a log range needs bounds > 0 (got {low}..{high})")
            return IntDistribution(int(low), int(high), log=True)
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return IntDistribution(int(low), int(high), step=int(step))
        return FloatDistribution(float(low), float(high), step=float(step))
    if isinstance(value, IntervalSweep):
        start, end = value.start, value.end
        if not start < end:
            raise SweepInputError(f"{key}: empty interval({start:g}, {end:g}); the first bound must be lower")
        log = "log" in tags
        if log and start <= 0:
            raise SweepInputError(f"{key}: a log interval needs bounds > 0 (got interval({start:g}, {end:g}))")
        # Hydra parses interval bounds as floats; int(interval(a, b)) keeps them ints: an integer interval, as in
        # Hydra's Optuna sweeper
        cast_int = isinstance(start, int) and isinstance(end, int)
        if "int" in tags or cast_int:
            if start != int(start) or end != int(end):
                raise SweepInputError(f"{key}: tag(int, interval(...)) needs integer bounds")
            return IntDistribution(int(start), int(end), log=log)
        return FloatDistribution(float(start), float(end), log=log)
    raise SweepInputError(f"{key}: unsupported sweep {override.input_line!r}")


# what each kind of sweep reads from tag(...): anything else would be ignored, silently changing the search
TAGS = {"ChoiceSweep": ("shuffle",), "RangeSweep": ("log", "shuffle"), "IntervalSweep": ("log", "int")}


def _check_tags(key: str, tags: set[str], value: Any) -> None:
    """A tag the sweep does not read (a typo: ``tag(lgo, ...)`` would search linearly) is one line naming it."""
    import difflib

    kind = type(value).__name__
    allowed = TAGS.get(kind, ())
    for tag in sorted(tags - set(allowed)):
        known = sorted({t for ts in TAGS.values() for t in ts})
        close = difflib.get_close_matches(tag, known, n=1)
        what = {"ChoiceSweep": "choice", "RangeSweep": "range", "IntervalSweep": "interval"}.get(kind, kind)
        hint = f"; did you mean {close[0]}?" if close and close[0] in allowed else ""
        raise SweepInputError(f"{key}: tag {tag!r} means nothing to {what}(...) (its tags: "
                              f"{', '.join(allowed) or 'none'}){hint}")


def _range_values(key: str, value: Any) -> list[Any]:
    """Hydra's range semantics (end exclusive), computed without floating-point drift."""
    start, stop, step = value.start, value.stop, value.step
    if step == 0:
        raise SweepInputError(f"{key}: range step must not be 0")
    n = math.ceil((stop - start) / step)
    if n <= 0:
        raise SweepInputError(f"{key}: empty range({start}, {stop}, {step}); the end is exclusive")
    ints = all(isinstance(v, int) for v in (start, stop, step))
    return [start + i * step if ints else round(start + i * step, 12) for i in range(n)]


def _glob_choice(key: str, override: Any, group_options: Callable[[str], list[str] | None]) -> Any:
    """``group=glob(pattern, exclude=...)``, Hydra's selection of a group's options (its basic sweeper expands it):
    the choice of the matching option names; None for any other sweep."""
    from hydra.core.override_parser.types import Glob
    from optuna.distributions import CategoricalDistribution

    value = override.value()
    if not isinstance(value, Glob):
        return None
    text = override.input_line.partition("=")[2]
    options = group_options(key)
    if options is None:
        raise SweepInputError(f"{key}: glob() selects options of a config group (lora=glob(r*)); {key} is no group: "
                              "use choice(...) or a range")
    matched = value.filter(options)
    if not matched:
        raise SweepInputError(f"{key}: {text} matches no option of config group {key}; available: {', '.join(options)}")
    return CategoricalDistribution(matched)


def _check_group_choice(key: str, dist: Any, options: list[str]) -> None:
    choices = getattr(dist, "choices", None)
    if choices is None:
        raise SweepInputError(f"{key}: is a config group; use choice(<option>, ...) (options: {', '.join(options)})")
    missing = [c for c in choices if str(c) not in options]
    if missing:
        raise SweepInputError(f"{key}: no such option {missing[0]!r} in config group {key}; available: {', '.join(options)}")


# ------------------------------------------------------------------------------------ values
_SIMPLE = re.compile(r"^[A-Za-z0-9_./:+-]+$")


def format_value(value: Any) -> str:
    """A Python value as a Hydra override value that parses back to the same value (floats exactly)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # shortest repr that round-trips
    text = str(value)
    if _SIMPLE.match(text) and not _looks_non_string(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _looks_non_string(text: str) -> bool:
    """True if Hydra would not parse ``text`` as the same string (a number, bool or null)."""
    if text.lower() in ("true", "false", "null", "nan", "inf", "+inf", "-inf"):
        return True
    try:
        float(text)
        return True
    except ValueError:
        return False


_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_FUNCS: dict[str, Callable[..., Any]] = {"min": min, "max": max, "round": round, "int": int, "float": float, "abs": abs}


def evaluate(expr: str, values: Mapping[str, Any], key: str = "derived") -> Any:
    """Evaluate arithmetic ``expr`` with ``{name}`` placeholders bound to ``values`` (no eval())."""
    names: dict[str, Any] = {}

    def bind(match: re.Match) -> str:
        var = f"_v{len(names)}"
        names[var] = values[match.group(1)]
        return var

    try:
        tree = ast.parse(re.sub(r"\{([^{}]+)\}", bind, expr), mode="eval")
        return _eval_node(tree.body, names)
    except SweepInputError:
        raise
    except Exception as err:
        raise SweepInputError(f"hydra.sweeper.derived.{key}: cannot evaluate {expr!r}: {first_line(err)}") from err


def _eval_node(node: ast.AST, names: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_eval_node(node.left, names), _eval_node(node.right, names))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _eval_node(node.operand, names)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS and not node.keywords:
        return _FUNCS[node.func.id](*(_eval_node(a, names) for a in node.args))
    raise ValueError(f"unsupported expression element {ast.dump(node)[:40]}")


# ------------------------------------------------------------------------------------ overrides
def override_key(text: str) -> str:
    """The key an override sets, without +/++/~ prefixes (``++a.b=1`` -> ``a.b``)."""
    key = text.split("=", 1)[0].lstrip("+~")
    return key.split("@", 1)[0]


def merge_overrides(*lists: Iterable[str]) -> list[str]:
    """Concatenate override lists; a later override of the same key replaces the earlier one.

    Hydra rejects two overrides of one config group on a command line, and a trial's sampled value
    must win over a fixed one.
    """
    merged: dict[str, str] = {}
    for overrides in lists:
        for o in overrides:
            key = override_key(o)
            merged.pop(key, None)
            merged[key] = o
    return list(merged.values())
