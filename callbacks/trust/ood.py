"""Out-of-distribution scores: Mahalanobis distance of an image's pooled features to the nearest
class of the training images (Lee et al. 2018), with a shared, shrunk covariance."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class FeatureGaussians:
    """Class means of standardised features and their shared precision matrix."""

    centre: Tensor  # [D] feature mean over all images
    scale: Tensor  # [D] feature standard deviation over all images
    means: Tensor  # [K, D] class means of the standardised features
    precision: Tensor  # [D, D]

    def distance(self, features: Tensor) -> Tensor:
        """Squared Mahalanobis distance [N] to the nearest class mean."""
        z = (features.double() - self.centre) / self.scale
        diff = z[:, None, :] - self.means[None]  # [N, K, D]
        d = torch.einsum("nkd,de,nke->nk", diff, self.precision, diff)
        return d.min(1).values.float()


def fit_gaussians(features: Tensor, labels: Tensor, n_classes: int) -> FeatureGaussians:
    """Class-conditional Gaussians with one covariance, shrunk towards the identity by the share
    of dimensions to images (few images in many dimensions leave the covariance singular)."""
    x = features.double()
    centre = x.mean(0)
    scale = x.std(0, unbiased=False).clamp_min(1e-6)
    z = (x - centre) / scale
    present = [k for k in range(n_classes) if (labels == k).any()]
    means = torch.stack([z[labels == k].mean(0) if k in present else z.mean(0) for k in range(n_classes)])
    within = z - means[labels]
    n, d = z.shape
    cov = within.T @ within / max(n - len(present), 1)
    shrink = d / (n + d)
    cov = (1 - shrink) * cov + shrink * torch.eye(d, dtype=cov.dtype) * cov.diagonal().mean()
    return FeatureGaussians(centre, scale, means, torch.linalg.pinv(cov, hermitian=True))


def tolerance_factor(n: int, share: float, confidence: float) -> float:
    """k of the one-sided normal tolerance bound mean + k sd, which holds at least `share` of the
    population with `confidence`, from n samples (Natrella's approximation)."""
    normal = torch.distributions.Normal(0.0, 1.0)
    z_p = float(normal.icdf(torch.tensor(share, dtype=torch.float64)))
    z_c = float(normal.icdf(torch.tensor(confidence, dtype=torch.float64)))
    a = 1 - z_c**2 / (2 * (n - 1))
    b = z_p**2 - z_c**2 / n
    return (z_p + math.sqrt(max(z_p**2 - a * b, 0.0))) / a


def pass_threshold(scores: Tensor, share: float, confidence: float = 0.95) -> float:
    """A score that at least `share` of in-distribution images stay below, with `confidence`: the
    tolerance bound of a log-normal fit to held-out scores (or their empirical quantile, if
    higher). A plain 95th percentile of a few dozen validation images lands anywhere among their
    top three scores, and lets through far fewer unseen images than it promises."""
    scores = scores.double().clamp_min(1e-12)
    empirical = float(torch.quantile(scores, share))
    if len(scores) < 8:
        return empirical
    logs = scores.log()
    bound = float((logs.mean() + tolerance_factor(len(scores), share, confidence) * logs.std()).exp())
    return max(empirical, bound)
