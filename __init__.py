"""latentzoo: latent generative models trained from scratch, behind diffusers' conventions.

The top-level folders of the repository are the subpackages: ``latentzoo.pipelines``,
``latentzoo.models``, ``latentzoo.data``, ``latentzoo.training``, ``latentzoo.evaluation`` and ``latentzoo.demo``
(the Gradio app, an optional extra).
"""

__version__ = "0.1.0"
