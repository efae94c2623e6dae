"""The plain blocks of the students, one file each, batch-first tensors: attention, transformer
layers, the encoder, the CNN front end, the positional conv, heads, masks, gradient scaling; and
``table``, the block table the constructors take (plain blocks, or the fast ones in its place).

Layer ``students.blocks``: may import util, families and students.config; never the family
classes or the builder above, nor the fast blocks (:mod:`recycle_distill.inference.blocks`
extends these, one layer up).
"""
