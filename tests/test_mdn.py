"""MixtureDensityNetwork: the likelihood against torch.distributions, save/load, seeded sampling, and the classic
inverse problem where one input has several valid outputs."""

import math

import pytest
import torch
from torch import nn

from latentzoo.models import MixtureDensityNetwork


def tiny_mdn(**kwargs):
    torch.manual_seed(0)
    defaults = dict(output_dim=3, num_components=4, num_classes=10, hidden_dims=(16,), class_embed_dim=8)
    return MixtureDensityNetwork(**{**defaults, **kwargs}).eval()


def test_log_prob_matches_torch_mixture_same_family():
    mdn = tiny_mdn(num_classes=None, condition_dim=2)
    condition, target = torch.randn(5, 2), torch.randn(5, 3)
    output = mdn(condition=condition)
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=output.logits),
        torch.distributions.Independent(torch.distributions.Normal(output.means, output.stds), 1),
    )
    torch.testing.assert_close(mdn.log_prob(target, condition=condition), mixture.log_prob(target))
    torch.testing.assert_close(mdn(condition=condition, target=target).loss, -mixture.log_prob(target).mean())


def test_save_load_round_trip(tmp_path):
    mdn = tiny_mdn()
    labels = torch.tensor([0, 3, 9])
    mdn.save_pretrained(tmp_path)
    loaded = MixtureDensityNetwork.from_pretrained(tmp_path).eval()
    assert loaded.config.num_classes == 10 and loaded.config.num_components == 4
    expected, got = mdn(class_labels=labels), loaded(class_labels=labels)
    for name in ("logits", "means", "stds"):
        torch.testing.assert_close(getattr(got, name), getattr(expected, name), rtol=0, atol=0)


def test_seeded_sampling_is_reproducible_and_a_batch_matches_rows_drawn_one_by_one():
    mdn = tiny_mdn()
    labels = torch.tensor([1, 1, 7, 2])
    first = mdn.sample(class_labels=labels, generator=torch.Generator().manual_seed(0))
    again = mdn.sample(class_labels=labels, generator=torch.Generator().manual_seed(0))
    other = mdn.sample(class_labels=labels, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.shape == (4, 3)
    batch = mdn.sample(class_labels=labels, generator=[torch.Generator().manual_seed(i) for i in range(4)])
    rows = torch.cat(
        [
            mdn.sample(class_labels=labels[i : i + 1], generator=torch.Generator().manual_seed(i))
            for i in range(4)
        ]
    )
    torch.testing.assert_close(batch, rows)


def test_unconditional_mdn_needs_a_sample_count():
    mdn = tiny_mdn(num_classes=None)
    assert mdn.sample(num_samples=6, generator=torch.Generator().manual_seed(0)).shape == (6, 3)
    with pytest.raises(ValueError, match="batch_size.*num_samples"):
        mdn.sample()


def test_wrong_conditions_raise_clear_errors():
    mdn = tiny_mdn()
    with pytest.raises(ValueError, match=r"class_labels.*\[0, 10\)"):
        mdn.sample(class_labels=torch.tensor([10]))
    with pytest.raises(ValueError, match="class-conditional: pass `class_labels`"):
        mdn.sample(num_samples=2)
    with pytest.raises(ValueError, match="target` must have shape"):
        mdn(class_labels=torch.tensor([1]), target=torch.zeros(1, 5))
    vector = tiny_mdn(num_classes=None, condition_dim=2)
    with pytest.raises(ValueError, match=r"condition` must have shape \(B, condition_dim=2\)"):
        vector(condition=torch.zeros(4, 3))


# The classic inverse problem (Bishop 1994, sec. 5): y ~ U(0, 1), x = y + 0.3 sin(2πy) + noise. Predicting x from y
# is a function; predicting y from x is not: for x around 0.4 several y fit.
def forward_map(y):
    return y + 0.3 * torch.sin(2 * math.pi * y)


NOISE = 0.05  # uniform noise half-width


def inverse_problem_data(n=1000):
    generator = torch.Generator().manual_seed(0)
    y = torch.rand(n, 1, generator=generator)
    x = forward_map(y) + (torch.rand(n, 1, generator=generator) * 2 - 1) * NOISE
    return x, y


def valid_outputs(x0: float) -> torch.Tensor:
    """Every y in [0, 1] (on a fine grid) whose noise-free x lies within the noise of x0: the branches at x0."""
    y = torch.linspace(0, 1, 100_001, dtype=torch.float64)
    return y[(forward_map(y) - x0).abs() <= NOISE]


def train(model, loss_fn, steps=600):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.fixture(scope="module")
def inverse_problem():
    x, y = inverse_problem_data()
    torch.manual_seed(0)
    mdn = MixtureDensityNetwork(output_dim=1, num_components=4, condition_dim=1, hidden_dims=(32, 32))
    mdn_losses = train(mdn, lambda: mdn(condition=x, target=y).loss)
    torch.manual_seed(0)
    regression = nn.Sequential(nn.Linear(1, 32), nn.SiLU(), nn.Linear(32, 32), nn.SiLU(), nn.Linear(32, 1))
    mse_losses = train(regression, lambda: (regression(x) - y).pow(2).mean())
    return mdn.eval(), mdn_losses, regression.eval(), mse_losses


# x0 where the valid outputs form two branches with a gap between them.
TWO_BRANCH_INPUTS = (0.375, 0.625)


def test_inverse_problem_mdn_likelihood_falls_below_any_single_gaussian(inverse_problem):
    mdn, mdn_losses, _, mse_losses = inverse_problem
    assert mdn_losses[-1] < mdn_losses[0] - 1.5
    # The best a unimodal model can do: a Gaussian around the MSE net's prediction with the residual variance.
    gaussian_nll = 0.5 * math.log(2 * math.pi * mse_losses[-1]) + 0.5
    assert mdn_losses[-1] < gaussian_nll - 0.5


@pytest.mark.parametrize("x0", TWO_BRANCH_INPUTS)
def test_inverse_problem_mdn_samples_cover_every_branch_while_mse_predicts_between_them(inverse_problem, x0):
    mdn, _, regression, _ = inverse_problem
    valid = valid_outputs(x0)
    gap = torch.where(valid.diff() > 0.05)[0]
    assert len(gap) == 1, "x0 should have exactly two branches"
    branches = (valid[: gap[0] + 1], valid[gap[0] + 1 :])

    samples = mdn.sample(condition=torch.full((1000, 1), x0), generator=torch.Generator().manual_seed(0))
    samples = samples[:, 0].double()
    for branch in branches:
        share = ((samples >= branch.min() - 0.03) & (samples <= branch.max() + 0.03)).double().mean()
        assert share > 0.2, f"a branch at x={x0} got only {share:.0%} of the MDN's samples"
    distance = (samples[:, None] - valid[None]).abs().min(1).values
    assert (distance < 0.03).double().mean() > 0.6

    # The MSE net predicts one value, in the gap between the branches, where no valid output lies.
    with torch.no_grad():
        prediction = regression(torch.tensor([[x0]])).item()
    assert branches[0].max() + 0.05 < prediction < branches[1].min() - 0.05
