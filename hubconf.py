"""torch.hub entries: ``torch.hub.load(<this repo>, 'armhubert', source='local', ckpt=..., model_config=...)``.

Every entry of every family's ``upstreams/<family>/hubconf.py``, imported from this checkout.
"""

dependencies = ["torch", "yaml", "safetensors", "huggingface_hub"]

from upstreams.armhubert.hubconf import (  # noqa: E402
    armhubert,
    armhubert_960h,
    armhubert_local,
    armhubert_s_100h,
    armhubert_s_960h,
    armhubert_url,
    armwavlm_s_100h,
    armwavlm_s_960h,
)
from upstreams.fithubert.hubconf import fithubert, fithubert_local, fithubert_url  # noqa: E402
from upstreams.maskhubert.hubconf import maskhubert, maskhubert_960h, maskhubert_local, maskhubert_url  # noqa: E402
from upstreams.starhubert.hubconf import starhubert, starhubert_local, starhubert_url  # noqa: E402
