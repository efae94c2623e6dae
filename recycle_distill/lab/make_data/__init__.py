"""``recycle-distill make-data``: tiny corpora in the real datasets' layouts, spoken by espeak-ng,
so every SUPERB route and the CIF recognizer can be tried in minutes without downloading
anything. The test helpers (``tests/helpers/superb_data.py``, ``tests/helpers/cif_asr_data.py``)
use the same generators.

- ``speech``: espeak-ng speech in the LibriSpeech and AISHELL-1 layouts from given texts;
- ``superb``: LibriSpeech + S3PRL's ``len_for_bucket`` CSVs (ASR), Speech Commands (KS),
  VoxCeleb1 with ``iden_split.txt`` (SID);
- ``bert``: a tiny random BERT folder with its own WordPiece vocabulary (the ``cif_asr`` teacher);
- ``writer``: the whole data folder (:func:`make_data`), written beside the target and swapped in.
"""

from recycle_distill.lab.make_data.writer import CORPORA, MARKER, MakeDataError, make_data

__all__ = ["CORPORA", "MARKER", "MakeDataError", "make_data"]
