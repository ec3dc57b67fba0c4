"""Learned dynamics: the probabilistic ensemble, its training, model rollouts and termination functions."""
