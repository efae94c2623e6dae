"""The block table a student is built with: which class each block constructor instantiates.

A constructor that builds a swappable block looks its class up in the table it is handed,
``blocks.get(SelfAttention, SelfAttention)(...)``, and passes the table on to the blocks it
builds. :data:`PLAIN` (empty) builds every plain block; the table of fast CPU inference
blocks is :data:`recycle_distill.inference.blocks.table.FAST_BLOCKS`; the map-free attention
reuse is :data:`recycle_distill.students.blocks.map_free.MAP_FREE_BLOCKS`. Keys are exact plain
classes, so a family's own subclass of a block (e.g. FitHuBERT's encoder) stays as it is.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

# plain block class -> the class to build in its place (a subclass with the same parameters)
BlockTable = Mapping[type, type]

PLAIN: BlockTable = MappingProxyType({})
