"""LayerDrop (Fan et al., 2019, "Reducing Transformer Depth on Demand with Structured Dropout") as an hf-compress
technique, in a package of its own: an example of a technique plugin.

Installed (``pip install -e examples/layerdrop-plugin``), its entry point makes ``layerdrop:`` a recipe block of
``hf-compress train`` and of every process that reads a recipe; without installing it, ``--import
hf_compress_layerdrop`` or a recipe's ``imports: [hf_compress_layerdrop]`` does the same.
"""

from .config import LayerDropConfig
from .technique import LayerDropCallback, layerdrop_rate

__all__ = ["LayerDropCallback", "LayerDropConfig", "layerdrop_rate"]
