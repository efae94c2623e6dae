"""The table of fast CPU inference blocks: plain block class -> its inference subclass.

Handed to the student constructors (``build_student(..., blocks="fast")``,
:mod:`recycle_distill.students.blocks.table`) it builds the fast blocks directly; handed to
:func:`recycle_distill.inference.optimize.swap_blocks` it converts an existing model. Each
fast block has the plain block's parameters and state-dict keys and adds only a faster CPU
forward, falling back to the plain one under autograd or on other devices.
"""

from __future__ import annotations

from recycle_distill.students.blocks.attention import ReusedAttention, SelfAttention
from recycle_distill.students.blocks.encoder import TransformerEncoder
from recycle_distill.students.blocks.feature_extractor import ConvFeatureExtractor
from recycle_distill.students.blocks.map_free import MapFreeReusedAttention, MapFreeSelfAttention
from recycle_distill.students.blocks.positional import WeightNormConv1d
from recycle_distill.inference.blocks.attention import FastReusedAttention, FastSelfAttention
from recycle_distill.inference.blocks.cnn import FastConvFeatureExtractor
from recycle_distill.inference.blocks.encoder import PerUtteranceEncoder
from recycle_distill.inference.blocks.positional import FoldedWeightNormConv1d

__all__ = ["FAST_BLOCKS", "PLAIN_BLOCKS"]

# Exact types: a family's own subclass of a block (FitHuBERT's encoder) keeps its class.
FAST_BLOCKS: dict[type, type] = {
    ConvFeatureExtractor: FastConvFeatureExtractor,
    SelfAttention: FastSelfAttention,
    ReusedAttention: FastReusedAttention,
    WeightNormConv1d: FoldedWeightNormConv1d,
    TransformerEncoder: PerUtteranceEncoder,
}
# fast block -> the plain block it extends (to undo a conversion)
PLAIN_BLOCKS: dict[type, type] = {fast: plain for plain, fast in FAST_BLOCKS.items()}
# A student built map-free converts too: the fast attention blocks extend the map-free ones
# (and go map-free themselves on long inputs). Undone, they become the plain blocks.
FAST_BLOCKS.update({MapFreeSelfAttention: FastSelfAttention, MapFreeReusedAttention: FastReusedAttention})
