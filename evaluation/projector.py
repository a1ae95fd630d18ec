"""Pictures of a latent space: TensorBoard's embedding projector, the 2-D latent manifold, interpolation and
attribute-vector strips.

Everything here takes an `AutoencoderPipeline`-like object (``encode``, ``decode``, ``interpolate``,
``attribute_vector``, ``apply_attribute``), so evaluation does not import the pipelines.

`write_projector` writes what TensorBoard's projector plugin reads from a log directory::

    projector_config.pbtxt   embeddings { tensor_name, tensor_path, metadata_path, sprite { image_path, single_image_dim x2 } }
    tensors.tsv              N rows of D tab-separated floats
    metadata.tsv             a header row, then N rows (one column: no header, as TensorBoard expects)
    sprite.png               the N thumbnails row by row in a square grid of ceil(sqrt(N)) per side

then ``tensorboard --logdir DIR`` shows them under "Projector" (PCA, t-SNE, UMAP, coloured by label).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from ..data.attributes import measure_attribute_values, measure_attributes
from .images import make_image_grid

PROJECTOR_FILES = ("projector_config.pbtxt", "tensors.tsv", "metadata.tsv", "sprite.png")
# TensorBoard's limit on a sprite's side, in pixels.
MAX_SPRITE_SIDE = 8192


def make_sprite(images: torch.Tensor) -> PIL.Image.Image:
    """(N, C, H, W) images in [-1, 1] → one square sprite, ceil(sqrt(N)) thumbnails per side, row by row."""
    n, _, h, w = images.shape
    side = math.ceil(math.sqrt(n))
    if side * max(h, w) > MAX_SPRITE_SIDE:
        raise ValueError(
            f"A sprite of {n} {h}x{w} images would be {side * max(h, w)} pixels wide; TensorBoard reads at most "
            f"{MAX_SPRITE_SIDE}. Pass fewer images (at most {(MAX_SPRITE_SIDE // max(h, w)) ** 2})."
        )
    # TensorBoard reads a sprite as a square: `side` rows even where the images fill fewer.
    return make_image_grid((images.detach().float().cpu() + 1) / 2, nrow=side, rows=side)


def write_projector(
    output_dir: str | Path,
    embeddings: torch.Tensor,
    metadata: dict[str, Sequence] | None = None,
    images: torch.Tensor | None = None,
    tensor_name: str = "latents",
) -> dict[str, Path]:
    """Write an embedding for TensorBoard's projector into `output_dir`.

    Args:
        output_dir: the log directory (``tensorboard --logdir output_dir``).
        embeddings: (N, D) vectors, e.g. latents.
        metadata: column name → N values (labels, measured attributes); shown and used for colouring.
        images: (N, C, H, W) in [-1, 1], made into ``sprite.png`` so each point shows its image.
        tensor_name: the embedding's name in the projector.

    Returns:
        `dict`: file name → path, for the files written.
    """
    embeddings = torch.as_tensor(embeddings).detach().float().cpu()
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise ValueError(f"`embeddings` must be (N, D) with N >= 1, got {tuple(embeddings.shape)}.")
    n = len(embeddings)
    metadata = dict(metadata or {})
    for name, values in metadata.items():
        if len(values) != n:
            raise ValueError(f"metadata column {name!r} has {len(values)} values for {n} embeddings.")
    if images is not None and len(images) != n:
        raise ValueError(f"`images` has {len(images)} images for {n} embeddings: pass one per embedding.")

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"tensors.tsv": output_dir / "tensors.tsv"}
    np.savetxt(paths["tensors.tsv"], embeddings.numpy(), delimiter="\t", fmt="%.6g")

    from google.protobuf import text_format
    from tensorboard.plugins import projector

    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = tensor_name
    embedding.tensor_path = "tensors.tsv"
    if metadata:
        paths["metadata.tsv"] = output_dir / "metadata.tsv"
        columns = list(metadata)
        rows = [columns] if len(columns) > 1 else []  # TensorBoard: a single column has no header row
        rows += [[_cell(metadata[c][i]) for c in columns] for i in range(n)]
        paths["metadata.tsv"].write_text("".join("\t".join(row) + "\n" for row in rows))
        embedding.metadata_path = "metadata.tsv"
    if images is not None:
        paths["sprite.png"] = output_dir / "sprite.png"
        make_sprite(images).save(paths["sprite.png"])
        embedding.sprite.image_path = "sprite.png"
        embedding.sprite.single_image_dim.extend([images.shape[-1], images.shape[-2]])  # width, height
    paths["projector_config.pbtxt"] = output_dir / "projector_config.pbtxt"
    paths["projector_config.pbtxt"].write_text(text_format.MessageToString(config))
    return paths


def _cell(value) -> str:
    if isinstance(value, torch.Tensor):
        value = value.item()
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text.replace("\t", " ").replace("\n", " ")


@torch.no_grad()
def export_projector(
    pipeline,
    pixel_values: torch.Tensor,
    output_dir: str | Path,
    class_labels: torch.Tensor | None = None,
    batch_size: int = 500,
) -> dict[str, Path]:
    """Encode `pixel_values` (N, 1, H, W) in [-1, 1] and write the projector files, with the class label and the
    measured stroke weight and slant (classes and values) as metadata and the digits as the sprite."""
    latents = torch.cat([pipeline.encode(chunk).float().cpu() for chunk in pixel_values.split(batch_size)])
    metadata = {}
    if class_labels is not None:
        metadata["label"] = [int(label) for label in class_labels]
    if pixel_values.shape[1] == 1:
        classes, values = measure_attributes(pixel_values), measure_attribute_values(pixel_values)
        metadata.update(
            {
                "weight": list(classes["weight"]),
                "slant": list(classes["slant"]),
                "stroke width": values["weight"].tolist(),
                "shear": values["slant"].tolist(),
            }
        )
    return write_projector(output_dir, latents, metadata, images=pixel_values)


@torch.no_grad()
def latent_manifold(pipeline, grid_size: int = 20, quantile_range: tuple[float, float] = (0.05, 0.95)):
    """Decode a grid_size x grid_size grid of a 2-D latent space at evenly spaced normal quantiles → one PIL image.

    The grid is z = Φ⁻¹(u) for u evenly spaced in `quantile_range` along each axis (Kingma & Welling,
    arXiv:1312.6114, fig. 4), so each cell covers equal prior probability. With a `GaussianPrior` (a plain
    autoencoder) the grid is mapped through it, z = mean + L Φ⁻¹(u), to land where the codes are.
    """
    from scipy.stats import norm

    latent_dim = pipeline.autoencoder.config.latent_dim
    if latent_dim != 2:
        raise ValueError(
            f"The latent manifold needs a 2-D latent space; this autoencoder's latent_dim is {latent_dim}. "
            "Train one with configs/vae-mnist-2d.yaml (or autoencoder-mnist-2d.yaml)."
        )
    low, high = quantile_range
    if not 0 < low < high < 1:
        raise ValueError(f"`quantile_range` must satisfy 0 < low < high < 1, got {quantile_range}.")
    values = torch.tensor(norm.ppf(np.linspace(low, high, grid_size)), dtype=torch.float32)
    # Rows top to bottom go from high to low z_2, columns left to right from low to high z_1, as in a plot.
    z2, z1 = torch.meshgrid(values.flip(0), values, indexing="ij")
    latents = torch.stack([z1, z2], dim=-1).view(-1, 2)  # (grid_size², 2)
    prior = getattr(pipeline, "prior", None)
    if prior is not None and hasattr(prior, "scale_tril"):
        latents = prior.mean.cpu() + latents @ prior.scale_tril.cpu().T
    return make_image_grid(pipeline.decode(latents, output_type="pt").images, nrow=grid_size)


@torch.no_grad()
def interpolation_strips(
    pipeline, start: torch.Tensor, end: torch.Tensor, num_steps: int = 10, method: str = "slerp"
) -> PIL.Image.Image:
    """One row per (start, end) pair of images: decoded latents from one to the other."""
    images = pipeline.interpolate(start, end, num_steps=num_steps, method=method, output_type="pt").images
    return make_image_grid(images, nrow=num_steps)


@torch.no_grad()
def bold_minus_thin_vector(pipeline, pixel_values: torch.Tensor) -> torch.Tensor:
    """The stroke-weight direction: mean latent of the boldest third of `pixel_values` minus that of the thinnest
    third, by measured stroke width (on mnist these tertiles are the `bold` / `thin` caption classes)."""
    weight = measure_attribute_values(pixel_values)["weight"]
    if len(weight) < 3:
        raise ValueError(f"Need at least 3 images to split into thin and bold thirds, got {len(weight)}.")
    thin, bold = weight.quantile(1 / 3), weight.quantile(2 / 3)
    return pipeline.attribute_vector(pixel_values[weight >= bold], pixel_values[weight <= thin])


@torch.no_grad()
def attribute_strips(
    pipeline, pixel_values: torch.Tensor, vector: torch.Tensor, strengths: Sequence[float] = (-2, -1, 0, 1, 2)
) -> PIL.Image.Image:
    """One row per image: its latent plus strength · vector for each strength (0 is its reconstruction)."""
    images = pipeline.apply_attribute(pixel_values, vector, strength=list(strengths), output_type="pt").images
    return make_image_grid(images, nrow=len(strengths))


def export_latent_visualisations(
    pipeline,
    pixel_values: torch.Tensor,
    output_dir: str | Path,
    class_labels: torch.Tensor | None = None,
    num_strips: int = 8,
    log_to_tensorboard: bool = True,
) -> dict[str, Path]:
    """Everything `latentzoo projector` writes: projector files, interpolation (slerp and lerp) and bold−thin
    attribute strips, the latent manifold when the latent space is 2-D; also logged as TensorBoard images."""
    output_dir = Path(output_dir)
    paths = export_projector(pipeline, pixel_values, output_dir, class_labels)
    start, end = pixel_values[:num_strips], pixel_values[num_strips : 2 * num_strips]
    pictures = {
        "interpolation_slerp.png": interpolation_strips(pipeline, start, end, method="slerp"),
        "interpolation_lerp.png": interpolation_strips(pipeline, start, end, method="lerp"),
    }
    if pixel_values.shape[1] == 1:
        vector = bold_minus_thin_vector(pipeline, pixel_values)
        pictures["attribute_bold_minus_thin.png"] = attribute_strips(pipeline, start, vector)
    if pipeline.autoencoder.config.latent_dim == 2:
        pictures["latent_manifold.png"] = latent_manifold(pipeline)
    for name, picture in pictures.items():
        paths[name] = output_dir / name
        picture.save(paths[name])
    if log_to_tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(output_dir)) as writer:
            for name, picture in pictures.items():
                array = np.asarray(picture.convert("RGB"))
                writer.add_image(name.removesuffix(".png"), array, dataformats="HWC")
    return paths
