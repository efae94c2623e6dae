"""A small, safe parser for the Python-literal strings found in reference configs.

The reference YAMLs store architecture lists as strings such as
``'[(128, 10, 5)] + [(256, 3, 2)] * 4'`` or ``"[True, False, True]"``; the original
code ran them through ``eval``. We accept exactly this grammar and nothing else::

    expr    := term ('+' term)*
    term    := atom ('*' INT)* | INT '*' atom
    atom    := list | tuple | INT | FLOAT | True | False | None | STRING | '(' expr ')'

Anything else (names, calls, attribute access, other operators) raises ``ValueError``
naming the config key the string came from.
"""

from __future__ import annotations

import ast
from typing import Any

__all__ = ["parse_literal"]


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
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"config key '{key}': cannot parse {text!r}: {err.msg}") from None
    return _evaluate(tree.body, key, text)


def _evaluate(node: ast.AST, key: str, text: str) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, bool, str, type(None))):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _evaluate(node.operand, key, text)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value
    elif isinstance(node, ast.List):
        return [_evaluate(element, key, text) for element in node.elts]
    elif isinstance(node, ast.Tuple):
        return tuple(_evaluate(element, key, text) for element in node.elts)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _evaluate(node.left, key, text), _evaluate(node.right, key, text)
        if isinstance(left, list) and isinstance(right, list):
            return left + right
        if isinstance(left, tuple) and isinstance(right, tuple):
            return left + right
        raise ValueError(f"config key '{key}': '+' joins two lists or two tuples only, in {text!r}")
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        left, right = _evaluate(node.left, key, text), _evaluate(node.right, key, text)
        if isinstance(left, int) and not isinstance(left, bool):
            left, right = right, left
        if isinstance(left, (list, tuple)) and isinstance(right, int) and not isinstance(right, bool):
            if right < 0:
                raise ValueError(f"config key '{key}': negative repeat count in {text!r}")
            return left * right
        raise ValueError(f"config key '{key}': '*' repeats a list or tuple by an integer only, in {text!r}")
    raise ValueError(
        f"config key '{key}': {text!r} is not a plain literal "
        f"(only lists, tuples, numbers, booleans, strings, '+' and '* int' are accepted)"
    )
