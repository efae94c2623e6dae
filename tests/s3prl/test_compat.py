"""The torchaudio compat layer: version-gated, off at import, switchable, enough for s3prl."""

import os
import subprocess
import sys

import pytest

from recycle_distill.s3prl import compat

pytestmark = pytest.mark.s3prl


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def test_importing_the_library_patches_nothing():
    result = _python(
        "import sys, recycle_distill, recycle_distill.students, recycle_distill.checkpoint\n"
        "assert 'torchaudio' not in sys.modules, 'library import pulled in torchaudio'\n"
        "assert 's3prl' not in sys.modules, 'library import pulled in s3prl'\n"
    )
    assert result.returncode == 0, result.stderr


def test_apply_compat_makes_s3prl_hub_and_featurizer_importable(tmp_path):
    wav = tmp_path / "a.wav"
    result = _python(
        "import numpy, soundfile, recycle_distill.s3prl.compat as c\n"
        "applied = c.apply_compat()\n"
        "import s3prl.hub, torchaudio\n"
        "from s3prl.upstream.interfaces import Featurizer\n"
        f"soundfile.write(r'{wav}', numpy.linspace(-0.5, 0.5, 1600, dtype='float32'), 16000)\n"
        f"x, sr = torchaudio.load(r'{wav}')\n"
        "assert sr == 16000 and tuple(x.shape) == (1, 1600), (x.shape, sr)\n"
        "print('APPLIED', applied)\n"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    if compat.compat_needed():
        assert "set_audio_backend" in result.stdout
    else:
        assert "APPLIED []" in result.stdout


def test_environment_variable_switches_it_off():
    result = _python("import recycle_distill.s3prl.compat as c; print(c.compat_needed(), c.apply_compat())",
                     RECYCLE_DISTILL_NO_COMPAT="1")
    assert result.returncode == 0 and result.stdout.split() == ["False", "[]"]


@pytest.mark.skipif(not compat.compat_needed(), reason="torchaudio < 2.9: s3prl imports without the layer")
def test_without_the_layer_s3prl_does_not_import_on_new_torchaudio():
    result = _python("import s3prl.hub", RECYCLE_DISTILL_NO_COMPAT="1")
    assert result.returncode != 0


def test_version_gate():
    assert compat._version_tuple("2.8.0+cu128") < (2, 9)
    assert compat._version_tuple("2.11.0") >= (2, 9)
    assert compat._version_tuple("2.10.0rc1") >= (2, 9)
