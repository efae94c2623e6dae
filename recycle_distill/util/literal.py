"""A small, safe parser for the Python-literal strings found in reference configs.

The reference YAMLs store architecture lists as strings such as
``'[(128, 10, 5)] + [(256, 3, 2)] * 4'`` or ``"[True, False, True]"``; the original
code ran them through ``eval``. We accept exactly this grammar and nothing else::

    expr    := term ('+' term)*
    term    := atom ('*' INT)* | INT '*' atom
    atom    := list | tuple | INT | FLOAT | True | False | None | STRING | '(' expr ')'

Anything else (names, calls, attribute access, other operators) raises ``ValueError``
naming the config key the string came from. Sizes are bounded so that a hostile string
cannot exhaust memory or the stack: at most :data:`MAX_TEXT` characters, :data:`MAX_DEPTH`
levels of nesting and :data:`MAX_ITEMS` values in all (``'[1] * 10**9'`` is refused before
the list is built).
"""

from __future__ import annotations

import ast
from typing import Any

from recycle_distill.util.messages import short_repr

__all__ = ["parse_literal", "MAX_TEXT", "MAX_DEPTH", "MAX_ITEMS"]

MAX_TEXT = 10_000  # characters: the longest reference string is about 100
MAX_DEPTH = 20  # nesting of brackets and operators
MAX_ITEMS = 100_000  # values in the result, nested ones included


def _size(value: Any) -> int:
    """Number of values in a parsed result (a container counts itself and its items)."""
    if isinstance(value, (list, tuple)):
        return 1 + sum(_size(item) for item in value)
    return 1


def parse_literal(text: str, key: str = "<value>") -> Any:
    """Parse ``text`` as a list/tuple literal expression without evaluating code.

    Args:
        text: the string from the config.
        key: the config key, used in error messages.

    Returns:
        The parsed value (lists stay lists, tuples stay tuples).
    """
    if not isinstance(text, str):
        raise TypeError(f"config key '{key}': expected a string to parse, got {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise ValueError(f"config key '{key}': a literal of {len(text)} characters is too long (at most {MAX_TEXT})")
    shown = short_repr(text, 200)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"config key '{key}': cannot parse {shown}: {err.msg}") from None
    except (RecursionError, MemoryError):
        raise ValueError(f"config key '{key}': {shown} is nested too deeply") from None
    return _evaluate(tree.body, key, shown, 0)


def _evaluate(node: ast.AST, key: str, text: str, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise ValueError(f"config key '{key}': {text} is nested more than {MAX_DEPTH} levels deep")
    depth += 1
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, bool, str, type(None))):
        if isinstance(node.value, int) and not isinstance(node.value, bool) and abs(node.value) >= 2**63:
            raise ValueError(f"config key '{key}': a number in {text} is out of range")
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _evaluate(node.operand, key, text, depth)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value
    elif isinstance(node, ast.List):
        return _bounded([_evaluate(element, key, text, depth) for element in node.elts], key, text)
    elif isinstance(node, ast.Tuple):
        return _bounded(tuple(_evaluate(element, key, text, depth) for element in node.elts), key, text)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _evaluate(node.left, key, text, depth), _evaluate(node.right, key, text, depth)
        if _size(left) + _size(right) > MAX_ITEMS:
            raise ValueError(f"config key '{key}': {text} holds more than {MAX_ITEMS} values")
        if isinstance(left, list) and isinstance(right, list):
            return left + right
        if isinstance(left, tuple) and isinstance(right, tuple):
            return left + right
        raise ValueError(f"config key '{key}': '+' joins two lists or two tuples only, in {text}")
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        left, right = _evaluate(node.left, key, text, depth), _evaluate(node.right, key, text, depth)
        if isinstance(left, int) and not isinstance(left, bool):
            left, right = right, left
        if isinstance(left, (list, tuple)) and isinstance(right, int) and not isinstance(right, bool):
            if right < 0:
                raise ValueError(f"config key '{key}': negative repeat count in {text}")
            if (_size(left) - 1) * right > MAX_ITEMS:
                raise ValueError(f"config key '{key}': {text} holds more than {MAX_ITEMS} values")
            return left * right
        raise ValueError(f"config key '{key}': '*' repeats a list or tuple by an integer only, in {text}")
    raise ValueError(
        f"config key '{key}': {text} is not a plain literal "
        f"(only lists, tuples, numbers, booleans, strings, '+' and '* int' are accepted)"
    )


def _bounded(value: Any, key: str, text: str) -> Any:
    if _size(value) > MAX_ITEMS:
        raise ValueError(f"config key '{key}': {text} holds more than {MAX_ITEMS} values")
    return value
