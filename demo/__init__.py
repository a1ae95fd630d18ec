"""`latentzoo demo`: a Gradio app over saved pipelines of every family, with a tab per model (text to image,
class-conditional diffusion, GAN, latent explorer) and one for the diffusion forward process.

The tabs' computations are plain functions (`latentzoo.demo.callbacks`) of the loaded models
(`latentzoo.demo.models`); `build_demo` lays them out as a `gr.Blocks` app. Needs the `demo` extra:
``pip install "latentzoo[demo]"``.

    from latentzoo.demo import build_demo, launch_demo
    launch_demo(build_demo(["outputs/text2img-mnist"]), port=7860)
"""

from .app import build_demo, launch_demo
from .models import DemoModel, load_models

__all__ = ["DemoModel", "build_demo", "launch_demo", "load_models"]
