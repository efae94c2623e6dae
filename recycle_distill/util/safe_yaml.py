"""YAML reading with bounds: PyYAML's safe loader, minus the ways a small file grows huge.

``yaml.safe_load`` runs no code, but aliases let a 1 kB file describe a structure of 10^9
nodes ("billion laughs"): loading shares the nodes, and the first walk over the result
(a deep copy, ``json.dumps``, a ``repr`` in an error message) expands it. Here the composed
node graph is measured, aliases counted as often as they are used, and refused beyond
:data:`MAX_NODES`. Standard library and PyYAML only: ``patch_hub.py`` uses it without torch.
"""

from __future__ import annotations

from typing import IO, Any, Union

import yaml

__all__ = ["YAMLLimitError", "safe_load_bounded", "MAX_NODES", "MAX_DEPTH"]

MAX_NODES = 1_000_000  # expanded nodes; S3PRL's largest config has a few hundred
MAX_DEPTH = 100  # nesting of mappings and sequences


class YAMLLimitError(yaml.YAMLError):
    """The document is refused because expanding it would exceed a size or nesting bound."""


def _expanded_size(node: yaml.Node, sizes: dict[int, int], depth: int) -> int:
    """Nodes in ``node`` with every alias expanded (memoised by node identity)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    if depth > MAX_DEPTH:
        raise YAMLLimitError(f"nested more than {MAX_DEPTH} levels deep")
    sizes[id(node)] = 1  # a node that (through an alias) contains itself counts once
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_size(item, sizes, depth + 1) for item in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded_size(key, sizes, depth + 1) + _expanded_size(value, sizes, depth + 1)
                     for key, value in node.value)
    if total > MAX_NODES:
        raise YAMLLimitError(f"expands to more than {MAX_NODES} nodes (aliases counted each time they are used)")
    sizes[id(node)] = total
    return total


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that measures the composed document before constructing Python objects."""

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            _expanded_size(node, {}, 0)
        return node


def safe_load_bounded(stream: Union[str, bytes, IO]) -> Any:
    """Like ``yaml.safe_load``, but raises :class:`YAMLLimitError` (a ``yaml.YAMLError``) for
    documents that expand beyond :data:`MAX_NODES` nodes or nest deeper than :data:`MAX_DEPTH`.

    Integers too long for Python's int conversion are reported as ``yaml.YAMLError`` too.
    """
    loader = _BoundedLoader(stream)
    try:
        return loader.get_single_data()
    except RecursionError:
        raise YAMLLimitError(f"nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise YAMLLimitError(f"a value cannot be read ({str(err)[:100]})") from None
    finally:
        loader.dispose()
