"""Training of the dynamics ensemble: bootstrapped, (optionally) weighted Gaussian NLL with holdout early stopping."""

import time
from dataclasses import dataclass

import torch as th

from sb3_tom import tuning
from sb3_tom.dynamics.ensemble import GaussianEnsemble
from sb3_tom.kernels import AdamKernel


def gaussian_nll(mean: th.Tensor, logvar: th.Tensor, target: th.Tensor) -> th.Tensor:
    """
    Per-sample Gaussian negative log-likelihood (up to a constant), averaged over output dimensions.

    :return: Tensor of shape ``mean.shape[:-1]``.
    """
    return ((mean - target) ** 2 * th.exp(-logvar) + logvar).mean(-1)


def weighted_nll_loss(
    mean: th.Tensor, logvar: th.Tensor, target: th.Tensor, sample_weight: th.Tensor | None = None
) -> th.Tensor:
    """
    ``mean_i w_i * nll_i`` over the last batch dimension, summed over ensemble members.

    With ``sample_weight=None`` every weight is 1 (plain maximum likelihood).

    :param mean: ``(members, batch, out)``
    :param logvar: ``(members, batch, out)``
    :param target: ``(members, batch, out)``
    :param sample_weight: ``(members, batch)`` or ``(batch,)``
    """
    nll = gaussian_nll(mean, logvar, target)
    if sample_weight is not None:
        nll = nll * sample_weight
    return nll.mean(-1).sum()


def effective_sample_size(weights: th.Tensor) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` of non-negative weights (0 if they are all 0)."""
    w = weights.double()
    squares = float((w**2).sum())
    return float(w.sum()) ** 2 / squares if squares > 0 else 0.0


@dataclass
class FitResult:
    """What one training round of the ensemble did."""

    epochs: int
    holdout_mse: float  # mean over elites
    holdout_nll: float  # mean over elites
    train_loss: float
    seconds: float
    elites: list[int]
    member_holdout_mse: list[float]
    #: Kish effective sample size ``(sum w)^2 / sum w^2`` of the holdout's weights (its size when unweighted): how
    #: many holdout transitions the weighted early stopping and elite choice effectively rest on
    holdout_weight_ess: float


class EnsembleTrainer:
    """
    Fits a :class:`GaussianEnsemble` to transitions, MBPO style.

    Each member trains on its own bootstrap of the training set (fixed for the round); a holdout split
    (``holdout_ratio`` of the data, at most ``max_holdout``) drives early stopping. As in MBPO, each round starts
    with no snapshot (best holdout MSE +inf), so the first epoch always counts; training stops once no member
    improved its holdout MSE by more than ``improvement_threshold`` (relative) for more than ``patience`` epochs,
    and every member is restored to its best snapshot of the round (the shared log-variance bounds keep their last
    value, as in MBPO). The ``num_elites`` best members become the elites.

    :param ensemble: The model to train.
    :param learning_rate: Adam learning rate.
    :param batch_size: Minibatch size.
    :param holdout_ratio: Fraction of the data held out.
    :param max_holdout: Cap on the number of holdout transitions.
    :param patience: Training stops after more than this many epochs without improvement.
    :param max_epochs: Optional cap on the number of epochs of one round.
    :param improvement_threshold: Relative holdout-MSE improvement that counts as progress.
    """

    #: TOM's official resampling scheme (``fit(resample=True)``): holdout fraction, minibatches per epoch, epoch cap
    RESAMPLE_HOLDOUT_RATIO = 0.1
    RESAMPLE_BATCHES_PER_EPOCH = 100
    RESAMPLE_MAX_EPOCHS = 30

    def __init__(
        self,
        ensemble: GaussianEnsemble,
        learning_rate: float = 1e-3,
        batch_size: int = 256,
        holdout_ratio: float = 0.2,
        max_holdout: int = 5000,
        patience: int = 5,
        max_epochs: int | None = None,
        improvement_threshold: float = 0.01,
    ) -> None:
        self.ensemble = ensemble
        self.optimizer = th.optim.Adam(ensemble.parameters(), lr=learning_rate)
        self.batch_size = batch_size
        self.holdout_ratio = holdout_ratio
        self.max_holdout = max_holdout
        self.patience = patience
        self.max_epochs = max_epochs
        self.improvement_threshold = improvement_threshold

    @staticmethod
    def make_targets(obs: th.Tensor, rewards: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
        """Regression targets ``[r, s' - s]`` of shape ``(n, 1 + obs_dim)`` (written in place: no temporaries)."""
        targets = obs.new_empty((obs.shape[0], 1 + obs.shape[1]))
        targets[:, 0] = rewards.reshape(-1)
        th.sub(next_obs, obs, out=targets[:, 1:])
        return targets

    def loss(self, inputs: th.Tensor, targets: th.Tensor, sample_weight: th.Tensor | None = None) -> th.Tensor:
        """
        The training objective of one minibatch, differentiable: :func:`weighted_nll_loss` of every member, plus the
        penalty that tightens the learned log-variance bounds and each layer's L2 weight decay (as the MBPO reference).

        :param inputs: Standardised inputs ``(members, batch, input_dim)``.
        :param targets: Targets ``(members, batch, output_dim)``.
        :param sample_weight: Per-sample weights ``(members, batch)``, or None for plain maximum likelihood.
        """
        ensemble = self.ensemble
        mean, logvar = ensemble(inputs)
        nll = weighted_nll_loss(mean, logvar, targets, sample_weight)
        return nll + ensemble.logvar_bound_penalty() + ensemble.weight_decay_loss()

    @th.no_grad()
    def _evaluate(self, inputs: th.Tensor, targets: th.Tensor, weights: th.Tensor | None) -> tuple[th.Tensor, th.Tensor]:
        """Per-member (optionally weighted) holdout MSE and NLL."""
        n_members = self.ensemble.ensemble_size
        mean, logvar = self.ensemble(inputs.unsqueeze(0).expand(n_members, -1, -1))
        mse = ((mean - targets) ** 2).mean(-1)
        nll = gaussian_nll(mean, logvar, targets)
        if weights is not None:
            mse, nll = mse * weights, nll * weights
        return mse.mean(-1), nll.mean(-1)

    @th.no_grad()
    def elite_error(self, obs: th.Tensor, actions: th.Tensor, rewards: th.Tensor, next_obs: th.Tensor) -> tuple[float, float]:
        """
        The elites' mean MSE and Gaussian NLL (as on the holdout, unweighted) on the transitions given.

        :return: ``(mse, nll)``.
        """
        inputs = self.ensemble.make_inputs(obs, actions)
        mse, nll = self._evaluate(inputs, self.make_targets(obs, rewards, next_obs), None)
        elites = self.ensemble.elite_indices
        return float(mse[elites].mean()), float(nll[elites].mean())

    def fit(
        self,
        obs: th.Tensor,
        actions: th.Tensor,
        rewards: th.Tensor,
        next_obs: th.Tensor,
        sample_weight: th.Tensor | None = None,
        resample: bool = False,
    ) -> FitResult:
        """
        Train on a set of transitions (all tensors on the ensemble's device).

        :param sample_weight: Optional non-negative per-transition weights (``(n,)``): the NLL of each sample
            is multiplied by its weight (weighted maximum likelihood); the holdout metrics are weighted too.
            Weights are used as given (normalise them beforehand if you want mean 1).
        :param resample: Use ``sample_weight`` as TOM's official code does instead: the holdout
            (``RESAMPLE_HOLDOUT_RATIO`` of the rows, at most ``max_holdout``) is drawn first (uniformly) and its
            metrics are weighted; every epoch is ``RESAMPLE_BATCHES_PER_EPOCH`` minibatches per member drawn from the
            rest with replacement ∝ ``sample_weight`` (in place of the fixed bootstrap), with a plain NLL; at most
            ``RESAMPLE_MAX_EPOCHS`` epochs. Early stopping and elites still use the weighted holdout MSE (the official
            code stops on its single network's weighted holdout NLL).
        """
        start = time.perf_counter()
        ensemble = self.ensemble
        n_members = ensemble.ensemble_size
        device = obs.device
        n = obs.shape[0]
        if sample_weight is not None:
            sample_weight = sample_weight.reshape(-1).to(device=device, dtype=obs.dtype)
            if sample_weight.shape[0] != n:
                raise ValueError(f"sample_weight has {sample_weight.shape[0]} entries for {n} transitions.")
            if not bool(th.isfinite(sample_weight).all()) or bool((sample_weight < 0).any()):
                raise ValueError("sample_weight must be finite and non-negative.")
            if not bool(th.isfinite(sample_weight.sum())):
                # e.g. KL's unclipped raw weights at the largest float: the draws and the early-stopping and elite
                # decisions depend only on the weights' ratios, and th.multinomial draws wrong rows from an infinite sum
                sample_weight = sample_weight / sample_weight.max()
        elif resample:
            raise ValueError("resample=True needs a sample_weight to draw the training rows from.")

        hold_idx, train_idx = self._split(n, device, self.RESAMPLE_HOLDOUT_RATIO if resample else self.holdout_ratio)
        max_epochs = self.max_epochs
        if resample:
            max_epochs = min(max_epochs or self.RESAMPLE_MAX_EPOCHS, self.RESAMPLE_MAX_EPOCHS)
        n_holdout, n_train = hold_idx.shape[0], train_idx.shape[0]
        if n_train < 2:
            raise ValueError(f"Not enough transitions ({n}) to train the dynamics model.")

        # The copies of the data this round keeps: standardised inputs (in place) and targets. Nothing else
        # grows with n beyond the bootstrap indices: with a 1M-transition buffer every extra copy is ~100 MB.
        inputs = th.cat([obs, actions], dim=-1)
        ensemble.fit_input_normalizer(inputs, exclude=hold_idx)
        inputs.sub_(ensemble.input_mean).div_(ensemble.input_std)
        targets = self.make_targets(obs, rewards, next_obs)
        hold_inputs, hold_targets = inputs[hold_idx], targets[hold_idx]
        hold_weights = None if sample_weight is None else sample_weight[hold_idx]
        train_probabilities = None
        if resample:
            assert sample_weight is not None
            train_probabilities = sample_weight[train_idx]
            if not bool(train_probabilities.sum() > 0):
                raise ValueError("resample=True needs a positive sample_weight on some training (non-holdout) row.")

        # Per-member bootstrap of the training set, fixed for this round; with resampling, drawn anew every epoch
        bootstrap = self._training_rows(train_idx, n_members) if train_probabilities is None else train_idx

        # MBPO resets every member's snapshot to (none, +inf) at the start of each round: the first epoch always
        # counts, so a warm-started member is never reverted to its pre-round weights (the holdout is redrawn every
        # round and overlaps last round's training data, so the pre-round model would often look best).
        best_mse = th.full((n_members,), float("inf"), device=device)
        # (The pre-round copy is a placeholder only: the first evaluation improves every member on +inf and replaces it.)
        best_state = {name: param.detach().clone() for name, param in self._member_parameters()}
        epochs_since_update = 0
        epoch = 0
        params: list[th.Tensor] = list(ensemble.parameters())
        adam = AdamKernel(self.optimizer, params)
        while True:
            epoch += 1
            if train_probabilities is not None:
                resampled_rows = self.RESAMPLE_BATCHES_PER_EPOCH * self.batch_size
                bootstrap = self._training_rows(train_idx, n_members, train_probabilities, resampled_rows)
            # A fresh visiting order of the bootstrap columns every epoch. One permutation serves all members:
            # each member's bootstrap is an i.i.d. draw, so any order of it independent of the draw is again an
            # i.i.d. sequence, independent across members (as one shuffle per member would give), for n_rows
            # indices instead of an argsort of n_members x n_rows random keys.
            n_rows = bootstrap.shape[1]
            order = th.randperm(n_rows, device=device)
            # Running sum in one tensor: thousands of kept scalar tensors fragment the heap of a 1M-row round
            loss_sum = th.zeros((), device=device)
            n_batches = 0
            for start_b in range(0, n_rows, self.batch_size):
                # Minibatch indices of each member (gathered per minibatch: no n_members x n_train copy per epoch)
                idx = bootstrap[:, order[start_b : start_b + self.batch_size]]
                weight = None if sample_weight is None or resample else sample_weight[idx]
                loss = self.loss(inputs[idx], targets[idx], weight)
                adam.step(list(th.autograd.grad(loss, params)))
                loss_sum += loss.detach()
                n_batches += 1
            train_loss = float(loss_sum) / n_batches

            if n_holdout == 0:
                if max_epochs is None or epoch >= max_epochs:
                    break
                continue
            mse, _ = self._evaluate(hold_inputs, hold_targets, hold_weights)
            # relative improvement (best - mse) / best > threshold; any value improves on the initial +inf
            improved = th.isinf(best_mse) | (best_mse - mse > self.improvement_threshold * best_mse)
            if bool(improved.any()):
                best_mse = th.where(improved, mse, best_mse)
                self._snapshot(best_state, improved)
                epochs_since_update = 0
            else:
                epochs_since_update += 1
            if epochs_since_update > self.patience or (max_epochs is not None and epoch >= max_epochs):
                break

        if n_holdout > 0:
            ensemble.load_state_dict(best_state, strict=False)  # the members' layers; the bounds keep their last value
            mse, nll = self._evaluate(hold_inputs, hold_targets, hold_weights)
            elites = th.argsort(mse)[: ensemble.num_elites]
        else:
            mse = nll = th.full((n_members,), float("nan"), device=device)
            elites = th.arange(ensemble.num_elites, device=device)
        ensemble.elite_indices.copy_(th.sort(elites).values)
        ensemble.trained.fill_(1)
        return FitResult(
            epochs=epoch,
            holdout_mse=float(mse[elites].mean()),
            holdout_nll=float(nll[elites].mean()),
            train_loss=train_loss,
            seconds=time.perf_counter() - start,
            elites=ensemble.elite_indices.tolist(),
            member_holdout_mse=mse.tolist(),
            holdout_weight_ess=effective_sample_size(hold_weights) if hold_weights is not None else float(n_holdout),
        )

    def _split(self, n: int, device: th.device, ratio: float) -> tuple[th.Tensor, th.Tensor]:
        """A random holdout (``ratio`` of ``n`` rows, at most ``max_holdout``) and the training rows."""
        n_holdout = min(int(n * ratio), self.max_holdout)
        perm = th.randperm(n, device=device)
        return perm[:n_holdout], perm[n_holdout:]

    @staticmethod
    def _training_rows(
        train_idx: th.Tensor, n_members: int, probabilities: th.Tensor | None = None, n_rows: int | None = None
    ) -> th.Tensor:
        """
        ``(n_members, n_train)`` rows each member trains on in an epoch: a uniform bootstrap of ``train_idx`` (with
        replacement, independent per member), or ``(n_members, n_rows)`` rows drawn ∝ ``probabilities`` (one per
        row of ``train_idx``).
        """
        n_train = train_idx.shape[0]
        if probabilities is not None:
            n_rows = n_train if n_rows is None else n_rows
            draws = th.multinomial(probabilities, n_members * n_rows, replacement=True)
            return train_idx[draws].view(n_members, n_rows)
        # positions mapped to rows in place, a column block at a time: no second n_members x n_train tensor
        bootstrap = th.randint(n_train, (n_members, n_train), device=train_idx.device)
        for block in bootstrap.split(tuning.BOOTSTRAP_BLOCK_COLUMNS, dim=1):
            block.copy_(train_idx[block])
        return bootstrap

    def _member_parameters(self) -> list[tuple[str, th.Tensor]]:
        """The members' own parameters (leading ``ensemble_size`` axis): not the shared log-variance bounds."""
        return [(name, p) for name, p in self.ensemble.named_parameters() if name not in ("max_logvar", "min_logvar")]

    def _snapshot(self, best_state: dict[str, th.Tensor], improved: th.Tensor) -> None:
        """
        Copy the current parameters of the improved members into ``best_state``. As in MBPO, a snapshot holds the
        members' layers only: the shared log-variance bounds keep the value training left them at.
        """
        for name, param in self._member_parameters():
            mask = improved.view(-1, *([1] * (param.dim() - 1)))
            best_state[name] = th.where(mask, param.detach(), best_state[name])
