"""CIF-HieraDist: a continuous integrate-and-fire recognizer that learns from a pre-trained
language model, as an S3PRL downstream (``-d cif_asr``; semantics: ``docs/cif.md``).

Holds everything the downstream needs: the S3PRL expert (``expert.py``), the recognizer
(``model.py``, ``decoder.py``, ``beam_search.py``) with its CIF (``cif.py``) and HieraDist losses
(``hieradist.py``, ``criterion.py``), the corpus, units and data loading (``corpus.py``,
``text.py``, ``dataset.py``, ``sampler.py``), the language-model teacher and its feature cache
(``lm_teacher.py``, ``feature_cache.py`` with its index checks in ``feature_cache_index.py``),
metrics, and the one config module (``config.py``).

Imports: only :mod:`recycle_distill.util` and this subpackage (plus torch, torchaudio and the
other third-party libraries), so the folder can be read, tested and moved on its own.
"""
