"""torch.hub entries: ``torch.hub.load(<this repo>, 'armhubert', source='local', ckpt=..., model_config=...)``.

Every entry of every family's ``upstreams/<family>/hubconf.py``, imported from this checkout.
"""

dependencies = ["torch", "yaml", "safetensors", "huggingface_hub"]

# Each family's entries are generated from recycle_distill.checkpoint.fetch.RELEASED (hub_entries.family_entries).
from upstreams.armhubert.hubconf import *  # noqa: E402,F401,F403
from upstreams.fithubert.hubconf import *  # noqa: E402,F401,F403
from upstreams.maskhubert.hubconf import *  # noqa: E402,F401,F403
from upstreams.starhubert.hubconf import *  # noqa: E402,F401,F403
