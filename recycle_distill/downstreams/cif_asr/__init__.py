"""CIF-HieraDist: a continuous integrate-and-fire recognizer that learns from a pre-trained
language model, as an S3PRL downstream (semantics: ``docs/cif.md``)."""
