"""Tests for cxrlab.callbacks.explanations.sanity: ROAD, deletion/insertion and localisation
against pytorch-grad-cam and quantus, and known answers on a model that reads one square."""

import math

import numpy as np
import pytest
import quantus
import torch
from pytorch_grad_cam.metrics.perturbation_confidence import (
    PerturbationConfidenceMetric,
    RemoveLeastRelevantFirst,
    RemoveMostRelevantFirst,
)
from pytorch_grad_cam.metrics.road import NoisyLinearImputer
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from torch import nn

from cxrlab.callbacks.explanations.sanity.deletion import deletion_insertion
from cxrlab.callbacks.explanations.sanity.localisation import (
    pointing_game,
    relevance_rank_accuracy,
)
from cxrlab.callbacks.explanations.sanity.road import noisy_linear_impute, road_curves

TOP, LEFT, SIZE, BRIGHT = 8, 16, 8, 0.9  # the square the model reads, on the 4 px grid
REGION, STEPS = 4, 8


class SquareModel(nn.Module):
    """Two classes; logits (-z, z) with z = gain * (mean of the square - 0.75)."""

    def __init__(self, gain: float = 20.0) -> None:
        super().__init__()
        self.gain = gain
        self.largest_batch = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.largest_batch = max(self.largest_batch, len(x))
        z = self.gain * (x[:, :, TOP:TOP + SIZE, LEFT:LEFT + SIZE].mean(dim=(1, 2, 3)) - 0.75)
        return torch.stack([-z, z], dim=1)


def p_class1(square_mean: float, gain: float = 20.0) -> float:
    """Softmax probability of class 1 of SquareModel, by hand: sigmoid(2z)."""
    return 1.0 / (1.0 + math.exp(-2.0 * gain * (square_mean - 0.75)))


def square_data(n: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images [n, 1, 32, 32] with a uniform bright square, the perfect map, a mask of it."""
    gen = torch.Generator().manual_seed(0)
    images = (0.3 + 0.4 * torch.rand(n, 1, 32, 32, generator=gen)).double()
    images[:, :, TOP:TOP + SIZE, LEFT:LEFT + SIZE] = BRIGHT
    mask = torch.zeros(n, 32, 32, dtype=torch.bool)
    mask[:, TOP:TOP + SIZE, LEFT:LEFT + SIZE] = True
    return images, mask.double(), mask


def random_maps(seed: int, n: int = 4) -> torch.Tensor:
    """Coarse random maps [n, 8, 8]; the metrics upsample them to the input."""
    return torch.rand(n, 8, 8, generator=torch.Generator().manual_seed(seed))


def conv_net() -> nn.Module:
    """A random float32 CNN, its logits scaled so imputation moves the probabilities."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        nn.Linear(16, 3))
    with torch.no_grad():
        net[-1].weight.mul_(30.0)
    return net.eval()


# --- independent implementations -------------------------------------------------------------

def test_imputation_matches_pytorch_grad_cam():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 24, 24, generator=gen)
    cams = torch.rand(3, 24, 24, generator=gen)
    # their mask is 1 where a pixel is kept; half the pixels go, many on the border
    keep = cams < torch.quantile(cams.flatten(1), 0.5, dim=1)[:, None, None]
    impute = NoisyLinearImputer(noise=0.0)
    theirs = torch.stack([impute(x, k.float()) for x, k in zip(images, keep, strict=True)])
    ours = noisy_linear_impute(images, ~keep[:, None], noise=0.0)
    assert (ours - images).abs().max() > 0.1  # the imputation did change something
    # theirs is float32 (eps 6e-8 near 1); ours float64 cast back to float32
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


@pytest.mark.parametrize("percentile", [30, 80])
def test_road_scores_match_pytorch_grad_cam_at_a_percentile(percentile):
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(4, 1, 8, 8, generator=gen)
    cams = torch.rand(4, 8, 8, generator=gen)
    model = conv_net()
    with torch.no_grad():
        classes = model(images).argmax(dim=1)
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in classes]
    imputer = NoisyLinearImputer(noise=0.0)
    morf = PerturbationConfidenceMetric(RemoveMostRelevantFirst(percentile, imputer))
    lerf = PerturbationConfidenceMetric(RemoveLeastRelevantFirst(percentile, imputer))
    theirs_morf = morf(images, cams.numpy(), targets, model)
    theirs_lerf = lerf(images, cams.numpy(), targets, model)
    # Their percentile p removes the pixels with cam >= percentile(cam, p); on a grid of 1 px
    # regions that is our step k = their count (the same for every image: distinct values).
    counts = {int((c >= np.percentile(c, percentile)).sum()) for c in cams.numpy()}
    assert len(counts) == 1
    k = counts.pop()
    ours = road_curves(model, images, cams, region=1, steps=k, noise=0.0)
    # they score f(x_k) - f(x_0) in float32
    assert np.abs(theirs_morf).max() > 0.01
    np.testing.assert_allclose(ours.morf[:, k] - ours.morf[:, 0], theirs_morf, atol=1e-6, rtol=0)
    np.testing.assert_allclose(ours.lerf[:, k] - ours.lerf[:, 0], theirs_lerf, atol=1e-6, rtol=0)


def quantus_scores(metric: type, maps: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
    """A quantus localisation metric on precomputed maps [N, H, W] and masks [N, H, W]."""
    n = len(maps)
    x = np.zeros((n, 1, *maps.shape[-2:]), dtype=np.float32)
    scores = metric(normalise=False, disable_warnings=True)(
        model=nn.Sequential(nn.Flatten(), nn.Linear(x[0].size, 2)), x_batch=x,
        y_batch=np.zeros(n, dtype=int), a_batch=maps.numpy()[:, None],
        s_batch=masks.numpy()[:, None].astype(np.float32))
    return np.asarray(scores, dtype=np.float64)


def localisation_cases() -> tuple[torch.Tensor, torch.Tensor]:
    """Random maps [6, 16, 16] with box masks, one mask from the map, one mask empty."""
    gen = torch.Generator().manual_seed(2)
    maps = torch.rand(6, 16, 16, generator=gen)
    masks = torch.zeros(6, 16, 16, dtype=torch.bool)
    masks[:, 4:10, 3:12] = True
    masks[1] = maps[1] > 0.8
    masks[2, :2, :2] = True  # box plus a corner
    masks[5] = False
    return maps, masks


def test_pointing_game_matches_quantus():
    maps, masks = localisation_cases()
    maps[3] = 0.5  # all pixels tie at the maximum: a hit when any lies inside, as in quantus
    ours = pointing_game(maps, masks)
    theirs = quantus_scores(quantus.PointingGame, maps, masks)
    np.testing.assert_array_equal(ours[:5].numpy(), theirs[:5].astype(bool))
    assert ours[1] and ours[3]
    # empty mask: a miss here; quantus' NaN in a bool array reads True
    assert not ours[5] and theirs[5]


# quantus warns about the empty mask it is given on purpose
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:Return np.nan:UserWarning")
def test_relevance_rank_accuracy_matches_quantus():
    maps, masks = localisation_cases()
    ours = relevance_rank_accuracy(maps, masks).numpy()
    theirs = quantus_scores(quantus.RelevanceRankAccuracy, maps, masks)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)  # NaN == NaN for the empty mask
    assert ours[1] == 1.0 and math.isnan(ours[5])


def test_localisation_upsamples_coarse_maps():
    maps = torch.zeros(1, 4, 4)
    maps[0, 1, 2] = 1.0  # the cell covering rows 4:8, cols 8:12 at 16 px
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[0, 4:8, 8:12] = True
    assert pointing_game(maps, mask).item()
    assert relevance_rank_accuracy(maps, mask).item() > 0.5


# --- known answers ----------------------------------------------------------------------------

def test_deletion_curve_by_hand():
    images, perfect, _ = square_data()
    result = deletion_insertion(SquareModel(), images, perfect, region=REGION, steps=STEPS)
    # the 4 regions of the square go first; the square's mean falls by a quarter each step
    expected = [p_class1(BRIGHT * (4 - min(k, 4)) / 4) for k in range(STEPS + 1)]
    np.testing.assert_allclose(result.deletion, np.tile(expected, (4, 1)), atol=1e-12)
    by_hand = sum((a + b) / 2 for a, b in zip(expected[:-1], expected[1:], strict=True)) / STEPS
    assert result.deletion_auc == pytest.approx(by_hand, abs=1e-12)
    # once the square is back in the blur, the model sees the original
    np.testing.assert_allclose(result.insertion[:, 4:], p_class1(BRIGHT), atol=1e-12)
    assert result.insertion[:, 0].max() < 0.1


def test_road_known_answers_on_the_square():
    images, perfect, _ = square_data()
    result = road_curves(SquareModel(), images, perfect, region=REGION, steps=STEPS)
    # LeRF removes background only: the square, all the model reads, is never touched
    np.testing.assert_allclose(result.lerf, p_class1(BRIGHT), atol=1e-12)
    # MoRF imputes the square from the darker background around it
    assert result.morf[:, 4:].max() < 0.1
    assert result.gap > 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_square_map_beats_random_maps(seed):
    images, perfect, mask = square_data()
    noise = random_maps(seed)
    model = SquareModel()
    best = deletion_insertion(model, images, perfect, region=REGION, steps=STEPS)
    rand = deletion_insertion(model, images, noise, region=REGION, steps=STEPS)
    assert best.deletion_auc < rand.deletion_auc - 0.3
    assert best.insertion_auc > rand.insertion_auc + 0.3
    assert road_curves(model, images, perfect, region=REGION, steps=STEPS).gap > \
        road_curves(model, images, noise, region=REGION, steps=STEPS, seed=seed).gap + 0.3
    assert pointing_game(perfect, mask).all()
    assert pointing_game(noise, mask).double().mean() < 1.0
    assert (relevance_rank_accuracy(perfect, mask) == 1.0).all()
    assert relevance_rank_accuracy(noise, mask).mean() < 0.5


def test_curves_use_batches_and_do_not_depend_on_batch_size():
    images, _, _ = square_data()
    maps, model = random_maps(3), SquareModel()
    one = road_curves(model, images, maps, region=REGION, steps=STEPS, batch_size=1)
    assert model.largest_batch == 1
    many = road_curves(model, images, maps, region=REGION, steps=STEPS, batch_size=64)
    assert model.largest_batch > 1
    # noise is drawn image by image, step by step, whatever the grouping
    np.testing.assert_allclose(one.morf, many.morf, atol=1e-12)
    np.testing.assert_allclose(one.lerf, many.lerf, atol=1e-12)


# --- imputation -------------------------------------------------------------------------------

def ramp(height: int = 20, width: int = 20) -> torch.Tensor:
    """Two channels of linear ramps [1, 2, H, W] in [0, 1]."""
    rows = torch.arange(height, dtype=torch.float64)[:, None]
    cols = torch.arange(width, dtype=torch.float64)[None, :]
    return torch.stack([0.1 + 0.02 * rows + 0.015 * cols, 0.9 - 0.03 * cols + 0.0 * rows])[None]


def test_imputation_is_exact_inside_a_linear_ramp():
    image = ramp()
    removed = torch.zeros(1, 1, 20, 20, dtype=torch.bool)
    removed[..., 5:12, 6:15] = True
    removed[..., 14:18, 2:5] = True
    # symmetric neighbour weights average a linear image back to itself away from the border
    torch.testing.assert_close(noisy_linear_impute(image, removed, noise=0.0), image,
                               atol=1e-10, rtol=0)


def test_imputation_noise_is_seeded_and_only_on_removed_pixels():
    image = ramp()
    removed = torch.zeros(1, 1, 20, 20, dtype=torch.bool)
    removed[..., 2:18, 2:18] = True

    def noisy(seed: int) -> torch.Tensor:
        return noisy_linear_impute(image, removed, 0.05, torch.Generator().manual_seed(seed))

    diff = noisy(0) - image
    assert (diff[..., ~removed[0, 0]] == 0).all()
    assert diff[..., removed[0, 0]].std().item() == pytest.approx(0.05, rel=0.15)
    torch.testing.assert_close(noisy(0), noisy(0), atol=0, rtol=0)
    assert not torch.equal(noisy(0), noisy(1))


def test_bad_arguments_are_refused():
    images, perfect, mask = square_data()
    with pytest.raises(ValueError, match="steps must be below"):
        road_curves(SquareModel(), images, perfect, region=16, steps=4)
    with pytest.raises(ValueError, match="no pixel is left"):
        noisy_linear_impute(images, torch.ones(4, 1, 32, 32, dtype=torch.bool), noise=0.0)
    with pytest.raises(ValueError, match="NaN"):
        deletion_insertion(SquareModel(), images, perfect * math.nan, region=REGION, steps=STEPS)
    with pytest.raises(ValueError, match="pair up"):
        pointing_game(perfect[:2], mask)
