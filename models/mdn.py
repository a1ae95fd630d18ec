"""Mixture density networks (Bishop, 1994): a network that predicts a whole Gaussian mixture for its target.

An MSE-trained network predicts the conditional *mean* of the target; when one input has several valid outputs
(an inverse problem, or "a seven" → any of many seven-shaped latents) that mean can lie between the valid
answers. An MDN predicts instead K mixture weights π_k, means μ_k and diagonal standard deviations σ_k,

    p(y | c) = Σ_k π_k(c) · N(y; μ_k(c), diag σ_k(c)²),

is trained by the negative log-likelihood of the data, and is sampled by picking a component, then a point.
Here it serves (a) the classic inverse problem and (b) a conditional prior over an autoencoder's latent space
(class label → latent → decoder), which turns a plain autoencoder into a conditional generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin  # imported by name: diffusers' loader looks them up here
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from .checks import ClassLabels, check_class_labels, check_number

__all__ = [
    "ConfigMixin",
    "MixtureDensityNetwork",
    "MixtureDensityOutput",
    "ModelMixin",
    "mixture_log_prob",
    "target_statistics",
]


@dataclass
class MixtureDensityOutput(BaseOutput):
    """The predicted mixture, and the loss when a target was given.

    Args:
        logits (`torch.Tensor`): (B, K) unnormalised log mixture weights; π = softmax(logits).
        means (`torch.Tensor`): (B, K, D) component means.
        stds (`torch.Tensor`): (B, K, D) component standard deviations (> 0).
        loss (`torch.Tensor`, *optional*): scalar mean negative log-likelihood of `target` (nats per sample).
    """

    # Defaults only so that the output can be rebuilt from a dict (Accelerate's mixed-precision wrapper does
    # `type(output)({...})`); `forward` sets the first three.
    logits: torch.Tensor
    means: torch.Tensor = None
    stds: torch.Tensor = None
    loss: torch.Tensor | None = None


def mixture_log_prob(
    target: torch.Tensor, logits: torch.Tensor, means: torch.Tensor, stds: torch.Tensor
) -> torch.Tensor:
    """log p(target) under a diagonal Gaussian mixture: (B, D) target, (B, K), (B, K, D), (B, K, D) → (B,).

    `logsumexp_k [log π_k + Σ_d log N(y_d; μ_kd, σ_kd²)]`, computed in log space so it never underflows.
    """
    z = (target[:, None, :] - means) / stds  # (B, K, D)
    component = (-0.5 * z.pow(2) - stds.log() - 0.5 * math.log(2 * math.pi)).sum(-1)  # (B, K)
    return torch.logsumexp(F.log_softmax(logits, dim=-1) + component, dim=-1)


def target_statistics(targets: torch.Tensor) -> dict[str, list[float]]:
    """(N, D) targets → `{"target_mean": [...], "target_std": [...]}` per dimension, the keyword arguments of a
    [`MixtureDensityNetwork`] that models them standardized (a constant dimension gets std 1)."""
    if targets.ndim != 2 or len(targets) < 2:
        raise ValueError(f"`targets` must be (N >= 2, D), got {tuple(targets.shape)}.")
    targets = targets.detach().double()
    std = targets.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return {"target_mean": targets.mean(0).tolist(), "target_std": std.tolist()}


def _uniform(
    batch_size: int, generator: torch.Generator | list[torch.Generator] | None, device: torch.device
) -> torch.Tensor:
    """(B,) uniform draws in [0, 1), with one generator, one per row (a list), or torch's global generator."""
    if isinstance(generator, list):
        return torch.cat([torch.rand(1, generator=g, device=g.device) for g in generator]).to(device)
    rand_device = generator.device if generator is not None else device
    return torch.rand(batch_size, generator=generator, device=rand_device).to(device)


class MixtureDensityNetwork(ModelMixin, ConfigMixin):
    r"""
    Predicts a K-component diagonal Gaussian mixture over an `output_dim` target from a condition.

    The condition is a vector (`condition_dim > 0`), a class label (`num_classes`, embedded), both
    (concatenated), or nothing (an unconditional mixture: pass `batch_size` / `num_samples`).

    Args:
        output_dim (`int`): size D of the target, e.g. 1 for the inverse problem, `latent_dim` for a latent prior.
        num_components (`int`, defaults to 5): K.
        condition_dim (`int`, defaults to 0): size of a vector condition (0: none).
        num_classes (`int`, *optional*): number of class labels the network is conditioned on (None: none).
        class_embed_dim (`int`, defaults to 32): width of the class-label embedding.
        hidden_dims (`tuple[int, ...]`, defaults to `(64, 64)`): widths of the MLP's hidden layers.
        min_std (`float`, defaults to 1e-3): floor of every σ, so the likelihood stays bounded (in the standardized
            units below).
        target_mean, target_std (`list[float]`, *optional*): per-dimension mean and standard deviation of the
            targets (e.g. from [`target_statistics`]). The network then predicts the mixture of the standardized
            target `(y − mean) / std` and maps it back: μ = mean + std · μ', σ = std · σ'. Targets far from unit scale
            (a plain autoencoder's latents have standard deviations ~10) are otherwise badly fitted from a
            unit-scale initialisation. None: no standardization.
        default_temperature (`float`, defaults to 1.0): the `temperature` that [`sample`] uses when given none, so a
            pipeline samples at the value the model was validated with. Below 1 trades diversity for typicality.

    Example:
        >>> mdn = MixtureDensityNetwork(output_dim=16, num_components=10, num_classes=10)
        >>> loss = mdn(class_labels=labels, target=latents).loss  # (B,) labels, (B, 16) latents
        >>> z = mdn.sample(class_labels=torch.tensor([7, 7]), generator=torch.Generator().manual_seed(0))
    """

    @register_to_config
    def __init__(
        self,
        output_dim: int,
        num_components: int = 5,
        condition_dim: int = 0,
        num_classes: int | None = None,
        class_embed_dim: int = 32,
        hidden_dims: tuple[int, ...] = (64, 64),
        min_std: float = 1e-3,
        target_mean: list[float] | None = None,
        target_std: list[float] | None = None,
        default_temperature: float = 1.0,
    ):
        super().__init__()
        for name, value in (("output_dim", output_dim), ("num_components", num_components)):
            if value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value}.")
        if condition_dim < 0:
            raise ValueError(f"`condition_dim` must be >= 0 (0: no vector condition), got {condition_dim}.")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive int or None, got {num_classes}.")
        if min_std <= 0:
            raise ValueError(f"`min_std` must be positive, got {min_std}.")
        check_number(
            default_temperature, "default_temperature", low=0, example=1.0, hint="0 gives the component means"
        )
        if (target_mean is None) != (target_std is None):
            raise ValueError(
                "Give both `target_mean` and `target_std` (e.g. from `target_statistics(targets)`), or neither."
            )
        mean = (
            torch.zeros(output_dim) if target_mean is None else torch.tensor(target_mean, dtype=torch.float32)
        )
        std = torch.ones(output_dim) if target_std is None else torch.tensor(target_std, dtype=torch.float32)
        if mean.shape != (output_dim,) or std.shape != (output_dim,):
            raise ValueError(
                f"`target_mean` and `target_std` must hold output_dim={output_dim} numbers each, got "
                f"{tuple(mean.shape)} and {tuple(std.shape)}."
            )
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise ValueError(
                "`target_mean` must be finite and `target_std` finite and positive in every dimension."
            )
        # From the config, not the weights: folders saved before these existed load unchanged (identity).
        self.register_buffer("target_shift", mean, persistent=False)
        self.register_buffer("target_scale", std, persistent=False)
        self.class_embedding = nn.Embedding(num_classes, class_embed_dim) if num_classes else None
        # With no condition at all the network sees a constant 1: its output layer's bias is the mixture.
        in_features = condition_dim + (class_embed_dim if num_classes else 0) or 1
        layers = []
        for width in hidden_dims:
            layers += [nn.Linear(in_features, width), nn.SiLU()]
            in_features = width
        self.mlp = nn.Sequential(*layers)
        # (B, K) logits, (B, K * D) means, (B, K * D) pre-softplus stds.
        self.head = nn.Linear(in_features, num_components * (1 + 2 * output_dim))

    @property
    def is_conditional(self) -> bool:
        return self.config.condition_dim > 0 or self.config.num_classes is not None

    def _features(self, condition, class_labels, batch_size) -> torch.Tensor:
        """Check the condition arguments and build the MLP's input (B, in_features)."""
        cfg = self.config
        if cfg.condition_dim > 0:
            if condition is None:
                raise ValueError(
                    f"This MDN is conditioned on a vector: pass `condition` of shape (B, {cfg.condition_dim})."
                )
            if condition.ndim != 2 or condition.shape[1] != cfg.condition_dim:
                raise ValueError(
                    f"`condition` must have shape (B, condition_dim={cfg.condition_dim}), got {tuple(condition.shape)}."
                )
        elif condition is not None:
            raise ValueError("This MDN takes no vector `condition` (condition_dim=0); drop the argument.")
        if cfg.num_classes is not None:
            if class_labels is None:
                raise ValueError(
                    f"This MDN is class-conditional: pass `class_labels` (B,) in [0, {cfg.num_classes - 1}]."
                )
            class_labels = check_class_labels(class_labels, cfg.num_classes)
        elif class_labels is not None:
            raise ValueError(
                "This MDN was built without `num_classes`; drop `class_labels` or train a conditional one."
            )

        parts = []
        if condition is not None:
            parts.append(condition.to(self.dtype))
        if class_labels is not None:
            parts.append(self.class_embedding(class_labels.to(self.device)))
        if parts:
            sizes = {len(p) for p in parts} | ({batch_size} if batch_size is not None else set())
            if len(sizes) != 1:
                raise ValueError(
                    f"`condition`, `class_labels` and the batch size disagree on the batch size: {sorted(sizes)}."
                )
            return torch.cat(parts, dim=1)
        if batch_size is None or batch_size < 1:
            raise ValueError(
                "An unconditional MDN needs the batch size: pass `batch_size` (or `num_samples`) or a `target`."
            )
        return torch.ones(batch_size, 1, device=self.device, dtype=self.dtype)

    def forward(
        self,
        condition: torch.Tensor | None = None,
        class_labels: ClassLabels | None = None,
        target: torch.Tensor | None = None,
        batch_size: int | None = None,
        return_dict: bool = True,
    ) -> MixtureDensityOutput | tuple:
        """Predict the mixture for each condition; with `target` (B, output_dim) also the mean NLL as `loss`."""
        if target is not None:
            if target.ndim != 2 or target.shape[1] != self.config.output_dim:
                raise ValueError(
                    f"`target` must have shape (B, output_dim={self.config.output_dim}), got {tuple(target.shape)}."
                )
            batch_size = len(target)
        hidden = self.mlp(self._features(condition, class_labels, batch_size))
        k, d = self.config.num_components, self.config.output_dim
        logits, means, raw_stds = self.head(hidden).split([k, k * d, k * d], dim=1)
        # (B, K, D) in standardized units, then mapped back to the target's: μ = mean + std · μ', σ = std · σ'.
        means = self.target_shift + self.target_scale * means.view(-1, k, d)
        stds = self.target_scale * (F.softplus(raw_stds.view(-1, k, d)) + self.config.min_std)  # > 0
        loss = None
        if target is not None:
            loss = -mixture_log_prob(target.to(means.dtype), logits, means, stds).mean()
        output = MixtureDensityOutput(logits=logits, means=means, stds=stds, loss=loss)
        return output if return_dict else output.to_tuple()

    def log_prob(
        self,
        target: torch.Tensor,
        condition: torch.Tensor | None = None,
        class_labels: ClassLabels | None = None,
    ) -> torch.Tensor:
        """(B, output_dim) → (B,) log p(target | condition)."""
        output = self(condition=condition, class_labels=class_labels, target=target)
        return mixture_log_prob(target.to(output.means.dtype), output.logits, output.means, output.stds)

    @torch.no_grad()
    def sample(
        self,
        num_samples: int | None = None,
        class_labels: ClassLabels | None = None,
        condition: torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        temperature: float | None = None,
    ) -> torch.Tensor:
        """Draw one target per condition (or `num_samples` from an unconditional MDN): → (B, output_dim).

        A component k ~ Categorical(π) is chosen by inverse CDF of a uniform draw, then y = μ_k + temperature ·
        σ_k · eps. Both draws use `generator`: one for the batch, or a list with one per row, so a batch
        reproduces the same rows drawn one by one. `temperature` < 1 trades diversity for typicality; None uses
        `config.default_temperature`.
        """
        if temperature is None:
            temperature = self.config.default_temperature
        temperature = check_number(
            temperature, "temperature", low=0, example=1.0, hint="0 gives the component means"
        )
        output = self(condition=condition, class_labels=class_labels, batch_size=num_samples)
        batch_size, k, d = output.means.shape
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"`generator` is a list of {len(generator)}, but {batch_size} samples are drawn: pass one per sample."
            )
        generators = generator if isinstance(generator, list) else [generator]
        # Per row (with a list of generators): first the uniform, then the normal draw.
        uniforms, noises = [], []
        rows = [1] * batch_size if isinstance(generator, list) else [batch_size]
        for g, rows_here in zip(generators, rows, strict=True):
            uniforms.append(_uniform(rows_here, g, self.device))
            noises.append(
                randn_tensor((rows_here, d), generator=g, device=self.device, dtype=output.means.dtype)
            )
        uniform, noise = torch.cat(uniforms), torch.cat(noises)  # (B,), (B, D)
        cumulative = F.softmax(output.logits.float(), dim=-1).cumsum(-1)  # (B, K)
        component = (cumulative < uniform[:, None]).sum(-1).clamp(max=k - 1)  # (B,)
        rows_index = torch.arange(batch_size, device=self.device)
        mean, std = output.means[rows_index, component], output.stds[rows_index, component]  # (B, D)
        return mean + temperature * std * noise
