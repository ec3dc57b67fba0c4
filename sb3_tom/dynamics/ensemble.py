"""Probabilistic dynamics ensemble (the MBPO / PETS model) with all members in one batched matmul."""

import itertools
from collections.abc import Sequence
from typing import NamedTuple

import torch as th
from torch import nn
from torch.nn import functional as F

from sb3_tom import tuning
from sb3_tom.kernels import batched_linear
from sb3_tom.normalization import fit_standardization

DEFAULT_WEIGHT_DECAYS = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)
LOGVAR_BOUND_PENALTY = 0.01  # coefficient of sum(max_logvar) - sum(min_logvar) in the training loss


class EnsembleLinear(nn.Module):
    """
    A linear layer holding one weight matrix per ensemble member.

    :param ensemble_size: Number of members.
    :param in_features: Input size.
    :param out_features: Output size.
    """

    def __init__(self, ensemble_size: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(th.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(th.zeros(ensemble_size, 1, out_features))
        # Truncated normal init as in the MBPO reference code
        std = 1.0 / (2.0 * in_features**0.5)
        nn.init.trunc_normal_(self.weight, std=std, a=-2 * std, b=2 * std)

    def forward(self, x: th.Tensor, members: th.Tensor | None = None) -> th.Tensor:
        """
        :param x: Input of shape ``(n_members, batch, in_features)``.
        :param members: Optional indices of the members to use (``n_members`` of them); all if None.
        :return: Output of shape ``(n_members, batch, out_features)``.
        """
        weight, bias = (self.weight, self.bias) if members is None else (self.weight[members], self.bias[members])
        return batched_linear(x, weight, bias)


class GaussianPrediction(NamedTuple):
    mean: th.Tensor
    logvar: th.Tensor


class GaussianEnsemble(nn.Module):
    """
    Ensemble of MLPs predicting a diagonal Gaussian over ``[reward, next_obs - obs]`` from ``(obs, action)``.

    Inputs are standardised with statistics stored as buffers (saved with the state dict), the log-variance
    is softly bounded by learned ``max_logvar`` / ``min_logvar`` parameters, and the indices of the elite
    members are a buffer as well.

    :param obs_dim: Observation size.
    :param action_dim: Action size.
    :param ensemble_size: Number of members.
    :param num_elites: Number of members used for rollouts (the best on holdout data).
    :param hidden_sizes: Sizes of the hidden layers.
    :param weight_decays: L2 coefficient of each layer (``len(hidden_sizes) + 1`` values).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        ensemble_size: int = 7,
        num_elites: int = 5,
        hidden_sizes: Sequence[int] = (200, 200, 200, 200),
        weight_decays: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if num_elites > ensemble_size or num_elites < 1:
            raise ValueError(f"num_elites must be in [1, ensemble_size={ensemble_size}], got {num_elites}.")
        if weight_decays is None:
            weight_decays = DEFAULT_WEIGHT_DECAYS if len(hidden_sizes) == 4 else (5e-5,) * (len(hidden_sizes) + 1)
        if len(weight_decays) != len(hidden_sizes) + 1:
            raise ValueError(f"weight_decays needs one value per layer ({len(hidden_sizes) + 1}), got {len(weight_decays)}.")
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.ensemble_size = ensemble_size
        self.num_elites = num_elites
        self.weight_decays = tuple(float(w) for w in weight_decays)
        self.input_dim = obs_dim + action_dim
        self.output_dim = obs_dim + 1
        sizes = [self.input_dim, *hidden_sizes]
        self.layers = nn.ModuleList(EnsembleLinear(ensemble_size, i, o) for i, o in itertools.pairwise(sizes))
        self.output_layer = EnsembleLinear(ensemble_size, sizes[-1], 2 * self.output_dim)
        self.max_logvar = nn.Parameter(th.full((1, 1, self.output_dim), 0.5))
        self.min_logvar = nn.Parameter(th.full((1, 1, self.output_dim), -10.0))
        self.register_buffer("input_mean", th.zeros(self.input_dim))
        self.register_buffer("input_std", th.ones(self.input_dim))
        self.register_buffer("elite_indices", th.arange(num_elites))
        # 0/1 as an integer: what get_parameters() returns holds only float and integer tensors, as SB3's algorithms
        self.register_buffer("trained", th.zeros((), dtype=th.long))
        self.input_mean: th.Tensor
        self.input_std: th.Tensor
        self.elite_indices: th.Tensor
        self.trained: th.Tensor

    # ------------------------------------------------------------------ normalisation
    def fit_input_normalizer(self, inputs: th.Tensor, exclude: th.Tensor | None = None) -> None:
        """
        Set the input standardisation (mean and unbiased standard deviation per input) from ``inputs`` of shape
        ``(n, input_dim)``, leaving out the rows ``exclude`` (e.g. a holdout split) without copying the rest.

        Computed by :func:`~sb3_tom.normalization.fit_standardization` (float64, in row chunks; constant inputs get std 1).
        """
        fit_standardization(self.input_mean, self.input_std, inputs, exclude)

    def make_inputs(self, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """Standardised model inputs from raw observations and (scaled) actions."""
        return (th.cat([obs, actions], dim=-1) - self.input_mean) / self.input_std

    # ------------------------------------------------------------------ forward
    def forward(self, x: th.Tensor, members: th.Tensor | None = None) -> GaussianPrediction:
        """
        Without autograd, large batches (e.g. 100k rollout states) are evaluated ``tuning.INFERENCE_CHUNK_ROWS`` rows
        at a time, the same operations per row: a chunk's hidden activations stay in cache instead of streaming
        through main memory once per op.

        :param x: Standardised inputs, shape ``(n_members, batch, input_dim)``.
        :param members: Indices of the members to evaluate (``n_members`` of them), all if None.
        :return: Mean and bounded log-variance, each ``(n_members, batch, output_dim)``.
        """
        chunk = tuning.INFERENCE_CHUNK_ROWS
        if th.is_grad_enabled() or x.shape[1] <= chunk:
            return self._network(x, members)
        parts = [self._network(x[:, start : start + chunk], members) for start in range(0, x.shape[1], chunk)]
        return GaussianPrediction(th.cat([p.mean for p in parts], dim=1), th.cat([p.logvar for p in parts], dim=1))

    def _network(self, x: th.Tensor, members: th.Tensor | None) -> GaussianPrediction:
        """The network: SiLU hidden layers, then the mean and the softly bounded log-variance."""
        inplace = not th.is_grad_enabled()  # rollouts: no extra activation buffer per layer
        for layer in self.layers:
            x = F.silu(layer(x, members), inplace=inplace)
        mean, logvar = self.output_layer(x, members).split(self.output_dim, dim=-1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return GaussianPrediction(mean, logvar)

    def predict_all(self, obs: th.Tensor, actions: th.Tensor) -> GaussianPrediction:
        """Predictions of every member for the same batch: ``(ensemble_size, batch, output_dim)``."""
        x = self.make_inputs(obs, actions)
        return self(x.unsqueeze(0).expand(self.ensemble_size, -1, -1))

    def logvar_bound_penalty(self) -> th.Tensor:
        return LOGVAR_BOUND_PENALTY * (self.max_logvar.sum() - self.min_logvar.sum())

    def weight_decay_loss(self) -> th.Tensor:
        layers = [*self.layers, self.output_layer]
        return sum(decay * 0.5 * (layer.weight**2).sum() for decay, layer in zip(self.weight_decays, layers, strict=False))  # type: ignore[return-value]

    @th.no_grad()
    def sample(self, obs: th.Tensor, actions: th.Tensor, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor]:
        """
        Sample next observations and rewards, using one random elite member per sample.

        Samples are split evenly (in a random order) between the elites so that only the elites are evaluated,
        each on its share of the batch, in one batched matmul.

        :param obs: Observations ``(batch, obs_dim)``.
        :param actions: Scaled actions ``(batch, action_dim)``.
        :param deterministic: Use the predicted mean instead of sampling.
        :return: ``(next_obs, reward)`` of shapes ``(batch, obs_dim)`` and ``(batch,)``.
        """
        batch = obs.shape[0]
        n_elites = self.num_elites
        per_member = -(-batch // n_elites)
        padded = per_member * n_elites
        perm = th.randperm(padded, device=obs.device) % batch if padded != batch else th.randperm(batch, device=obs.device)
        # `perm` lists, member by member, which sample each slot holds; padding repeats a few samples
        x = self.make_inputs(obs, actions)[perm].view(n_elites, per_member, -1)
        mean, logvar = self(x, self.elite_indices)
        out = mean if deterministic else mean + th.randn_like(mean) * th.exp(0.5 * logvar)
        out = out.reshape(padded, -1)
        # Scatter back; with padding a sample may appear twice and either copy is a valid draw
        result = th.empty(batch, self.output_dim, device=obs.device, dtype=out.dtype)
        result[perm] = out
        return obs + result[:, 1:], result[:, 0]
