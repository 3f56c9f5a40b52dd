"""The trust model's maths against hand computations: temperature scaling, ECE, Mahalanobis
distance, leave-one-out templates, and Grad-CAM through the network's tail."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrlab.callbacks.explanations.gradcam import grad_cam, own_class_cam, tail_grad_cam
from cxrlab.callbacks.trust.calibration import expected_calibration_error, fit_temperature
from cxrlab.callbacks.trust.model_trust import observe_batch
from cxrlab.callbacks.trust.ood import fit_gaussians, pass_threshold
from cxrlab.callbacks.trust.templates import class_templates, held_out_corr, template_corr
from cxrlab.config import Config, from_dict, set_dotted, to_dict
from cxrlab.lightning_modules.classifier import CXRClassifier


def test_temperature_recovers_the_one_that_made_the_labels() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(20000, 4, generator=gen) * 4
    labels = torch.multinomial((logits / 2.5).softmax(1), 1, generator=gen)[:, 0]
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.05)


def test_ece_by_hand() -> None:
    # Confidence 0.9 and right (gap 0.1), confidence 0.6 and wrong (gap 0.6): ECE (0.1 + 0.6) / 2.
    probs = np.array([[0.9, 0.1], [0.6, 0.4]])
    assert expected_calibration_error(probs, np.array([0, 1])) == pytest.approx(0.35)
    # One bin holding both: |1/2 - 0.75| = 0.25.
    assert expected_calibration_error(probs, np.array([0, 1]), n_bins=1) == pytest.approx(0.25)


def test_mahalanobis_matches_the_true_covariance_with_many_images() -> None:
    gen = torch.Generator().manual_seed(0)
    cov = torch.tensor([[4.0, 1.2], [1.2, 1.0]])
    chol = torch.linalg.cholesky(cov)
    labels = torch.arange(100000) % 2
    means = torch.tensor([[0.0, 0.0], [6.0, -3.0]])
    x = means[labels] + torch.randn(100000, 2, generator=gen) @ chol.T
    g = fit_gaussians(x, labels, 2)
    query = torch.tensor([[1.0, 2.0], [6.0, -3.0], [20.0, 20.0]])
    precision = torch.linalg.inv(cov)
    want = torch.stack([torch.einsum("nd,de,ne->n", query - m, precision, query - m) for m in means]).min(0).values
    assert torch.allclose(g.distance(query), want, rtol=0.02, atol=0.02)
    # The threshold lets through the requested share of the images it was set on.
    d = g.distance(x)
    assert float((d <= pass_threshold(d, 0.95)).double().mean()) >= 0.95


def test_few_images_in_many_dimensions_give_finite_distances() -> None:
    x, labels = torch.randn(12, 300), torch.arange(12) % 3
    g = fit_gaussians(x, labels, 4)  # class 3 has no image
    d = g.distance(torch.randn(5, 300))
    assert torch.isfinite(d).all() and (d > 0).all()


def test_templates_and_leave_one_out_correlations_by_hand() -> None:
    gen = torch.Generator().manual_seed(1)
    maps, labels = torch.rand(9, 4, 4, generator=gen), torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2])
    templates = class_templates(maps, labels, 4)
    assert torch.allclose(templates[1], maps[3:7].mean(0)) and (templates[3] == 0).all()
    r = template_corr(maps, templates, labels)
    assert r[0] == pytest.approx(float(np.corrcoef(maps[0].flatten(), templates[0].flatten())[0, 1]), abs=1e-5)
    loo = held_out_corr(maps, labels, 4)
    for i in range(9):
        others = [j for j in range(9) if labels[j] == labels[i] and j != i]
        template = maps[others].mean(0)
        want = np.corrcoef(maps[i].flatten(), template.flatten())[0, 1]
        assert loo[i] == pytest.approx(float(want), abs=1e-5)
    assert torch.isnan(template_corr(torch.ones(1, 4, 4), templates, torch.tensor([0])))


@pytest.fixture(scope="module")
def model() -> CXRClassifier:
    cfg = Config()
    raw = to_dict(cfg)
    for key, value in {"model.backbone": "resnet18", "model.weights": "none", "data.image_size": 64}.items():
        set_dotted(raw, key, value)
    torch.manual_seed(0)
    return CXRClassifier(from_dict(raw, "test"), ["a", "b", "c"]).eval()


@pytest.mark.parametrize("layer", ["backbone.layer3", "backbone.layer4", "backbone.layer3.1.conv2"])
def test_trust_maps_equal_grad_cam_of_the_predicted_class(model: CXRClassifier, layer: str) -> None:
    """The tail-only backward pass (and grad_cam's full one for a layer inside a block) give the
    maps grad_cam gives at the same layer for each image's predicted class."""
    images = torch.rand(5, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    seen = observe_batch(model, images, layer)
    with torch.no_grad():
        logits = model(images)
    assert torch.allclose(seen.logits, logits, atol=1e-5)
    preds = logits.argmax(1)
    want = own_class_cam(model, layer, images, preds)
    assert torch.allclose(seen.maps, want, atol=1e-5 * float(want.abs().max()))
    full = grad_cam(model, layer, images)[torch.arange(5), preds]
    assert torch.allclose(want, full)


def test_tail_grad_cam_of_a_linear_tail_by_hand() -> None:
    """A GAP + linear tail: the weights of class c are w_c / (h w), so the map is ReLU(sum_k w_ck A_k) / (h w)."""
    tail = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2, bias=False))
    acts = torch.rand(2, 3, 4, 4)
    logits, maps = tail_grad_cam(tail, acts, torch.tensor([1, 0]))
    w = tail[2].weight.detach()
    want = torch.stack([(w[1][:, None, None] * acts[0]).sum(0), (w[0][:, None, None] * acts[1]).sum(0)]).relu() / 16
    assert torch.allclose(maps, want, atol=1e-6)
    assert torch.allclose(logits, tail(acts).detach())


def test_tolerance_factor_matches_published_tables() -> None:
    """One-sided normal tolerance factors (NIST/SEMATECH e-Handbook, 7.2.6.3): n=20, 95 % of the
    population with 95 % confidence: 2.396 (exact); Natrella's approximation is within 1 %."""
    from cxrlab.callbacks.trust.ood import tolerance_factor

    assert tolerance_factor(20, 0.95, 0.95) == pytest.approx(2.396, rel=0.01)
    assert tolerance_factor(100000, 0.95, 0.95) == pytest.approx(1.645, rel=0.01)


def test_foreign_needs_a_share_beyond_chance() -> None:
    """4 of 36 flagged at 5 % expected happens by chance (p ~ 0.1); 8 of 36 and all of them do not."""
    from cxrlab.experiments.evaluation.trust_report import is_foreign

    assert not is_foreign(4, 36, 0.05) and not is_foreign(0, 0, 0.05)
    assert is_foreign(8, 36, 0.05) and is_foreign(36, 36, 0.05)
