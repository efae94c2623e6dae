"""The one audio rate of every student and teacher here: 16 kHz mono (training never resamples)."""

SAMPLE_RATE = 16000  # Hz
