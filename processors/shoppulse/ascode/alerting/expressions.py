"""Grafana's server-side expressions over numeric data: ``math``, ``threshold`` and ``reduce``.

A query result is a set of series, each a label set with one number (Grafana's "numeric" data,
what a SQL table with string columns and one numeric column becomes). Binary math joins two sets
Grafana's way: equal label sets pair up, one side's label set may be a subset of the other's, and
a set with a single unlabelled number applies to every series of the other side."""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from typing import Any

Labels = frozenset[tuple[str, str]]
Series = dict[Labels, float | None]

EXPRESSION_TYPES = ("math", "threshold", "reduce")
THRESHOLDS: dict[str, Callable[[float, list[float]], bool]] = {
    "gt": lambda v, p: v > p[0],
    "lt": lambda v, p: v < p[0],
    "eq": lambda v, p: v == p[0],
    "ne": lambda v, p: v != p[0],
    "gte": lambda v, p: v >= p[0],
    "lte": lambda v, p: v <= p[0],
    "within_range": lambda v, p: p[0] < v < p[1],
    "outside_range": lambda v, p: v < p[0] or v > p[1],
    "within_range_included": lambda v, p: p[0] <= v <= p[1],
    "outside_range_included": lambda v, p: v <= p[0] or v >= p[1],
}
REDUCERS: dict[str, Callable[[list[float]], float]] = {
    "last": lambda xs: xs[-1], "mean": lambda xs: sum(xs) / len(xs), "min": min, "max": max, "sum": sum,
    "count": lambda xs: float(len(xs)),
}
_OPERATORS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.Mod: operator.mod, ast.Pow: operator.pow, ast.Lt: operator.lt, ast.Gt: operator.gt, ast.LtE: operator.le,
    ast.GtE: operator.ge, ast.Eq: operator.eq, ast.NotEq: operator.ne,
}
_FUNCTIONS: dict[str, Callable[[float], float]] = {"abs": abs, "log": math.log, "round": round, "ceil": math.ceil,
                                                    "floor": math.floor}
_REF = re.compile(r"\$\{?([A-Za-z_]\w*)\}?")


class ExpressionError(ValueError):
    """An expression Grafana would reject, or one this evaluator does not support."""


def references(model: dict[str, Any]) -> list[str]:
    """The refIds an expression reads."""
    kind = model.get("type")
    if kind == "math":
        return _REF.findall(str(model.get("expression", "")))
    return [str(model.get("expression", ""))]


def parse_math(expression: str) -> ast.Expression:
    text = _REF.sub(lambda m: f"ref_{m.group(1)}", expression).replace("&&", " and ").replace("||", " or ")
    text = re.sub(r"!(?!=)", " not ", text)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"math expression {expression!r} does not parse: {exc.msg}") from None
    for node in ast.walk(tree):
        allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.Name, ast.Constant,
                   ast.Call, ast.Load, ast.USub, ast.UAdd, ast.Not, ast.And, ast.Or, *_OPERATORS)
        if not isinstance(node, allowed):
            raise ExpressionError(f"math expression {expression!r}: {type(node).__name__} is not supported")
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS):
            raise ExpressionError(f"math expression {expression!r}: only {sorted(_FUNCTIONS)} can be called")
    return tree


def evaluate(model: dict[str, Any], results: dict[str, Series]) -> Series:
    kind = model.get("type")
    if kind == "math":
        return _math(str(model.get("expression", "")), results)
    source = results.get(str(model.get("expression", "")))
    if source is None:
        raise ExpressionError(f"{kind} reads {model.get('expression')!r}, which is not a query of this rule")
    if kind == "threshold":
        conditions = model.get("conditions") or []
        evaluator = (conditions[0] if conditions else {}).get("evaluator") or {}
        test = THRESHOLDS.get(str(evaluator.get("type")))
        params = [float(p) for p in evaluator.get("params") or []]
        if test is None or not params:
            raise ExpressionError(f"threshold evaluator {evaluator!r}: type one of {sorted(THRESHOLDS)} with params")
        return {labels: None if v is None else float(test(v, params)) for labels, v in source.items()}
    if kind == "reduce":
        reducer = REDUCERS.get(str(model.get("reducer")))
        if reducer is None:
            raise ExpressionError(f"reducer {model.get('reducer')!r}: one of {sorted(REDUCERS)}")
        return {labels: None if v is None else reducer([v]) for labels, v in source.items()}
    raise ExpressionError(f"expression type {kind!r} is not one of {EXPRESSION_TYPES}")


def _math(expression: str, results: dict[str, Series]) -> Series:
    tree = parse_math(expression)
    names = sorted(set(references({"type": "math", "expression": expression})))
    for name in names:
        if name not in results:
            raise ExpressionError(f"math expression {expression!r} reads ${name}, which is not a query of this rule")
    out: Series = {}
    for labels, values in _join([results[n] for n in names]):
        scope = dict(zip(names, values, strict=True))
        out[labels] = None if any(v is None for v in values) else float(_eval(tree.body, scope))
    return out


def _join(sets: list[Series]) -> list[tuple[Labels, list[float | None]]]:
    """Pair up series across sets: same labels, a subset of labels, or one unlabelled number."""
    if not sets:
        return []
    pairs: list[tuple[Labels, list[float | None]]] = [(labels, [v]) for labels, v in sets[0].items()]
    for other in sets[1:]:
        joined = []
        unlabelled = len(other) == 1 and frozenset() in other
        for labels, values in pairs:
            if unlabelled:
                joined.append((labels, [*values, other[frozenset()]]))
                continue
            for other_labels, value in other.items():
                if labels <= other_labels or other_labels <= labels:
                    joined.append((labels | other_labels, [*values, value]))
        pairs = joined
    return pairs


def _eval(node: ast.AST, scope: dict[str, float | None]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return scope[node.id.removeprefix("ref_")]
    if isinstance(node, ast.BinOp):
        try:
            return _OPERATORS[type(node.op)](_eval(node.left, scope), _eval(node.right, scope))
        except ZeroDivisionError:
            return math.nan
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, scope)
        return -value if isinstance(node.op, ast.USub) else (not value) if isinstance(node.op, ast.Not) else value
    if isinstance(node, ast.Compare):
        left = _eval(node.left, scope)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval(right_node, scope)
            if not _OPERATORS[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.BoolOp):
        values = [bool(_eval(v, scope)) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Call):
        return _FUNCTIONS[node.func.id](_eval(node.args[0], scope))  # type: ignore[attr-defined]
    raise ExpressionError(f"unsupported {type(node).__name__}")
