"""`cxrlab predict CHECKPOINT IMAGE...`: class, per-class confidence and Grad-CAM overlays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cxrlab.callbacks.explanations.display import heatmap_grid, overlay
from cxrlab.callbacks.explanations.explanation import target_layer
from cxrlab.callbacks.explanations.gradcam import grad_cam
from cxrlab.datamodules.images import Decoding, read_image, read_mask
from cxrlab.datamodules.transforms import crop_margin, eval_transform
from cxrlab.experiments.evaluation.inference import pick_device
from cxrlab.experiments.evaluation.report import figure_png
from cxrlab.lightning_modules.checkpoint import load_classifier
from cxrlab.lightning_modules.classifier import CXRClassifier

DISPLAY_MAX = 1024  # overlays of large radiographs are drawn at most this many pixels on a side
BATCH = 16


def _fit(image: np.ndarray, shape: tuple[int, int], mode: str) -> np.ndarray:
    """Resize a [H, W] array to `shape` (bilinear for images, nearest for masks)."""
    if image.shape == shape:
        return image
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    out = F.interpolate(
        t, size=shape, mode=mode, **({"antialias": True} if mode == "bilinear" else {})
    )
    return out[0, 0].numpy()


def display_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """The overlay size of an image: its own, scaled down to DISPLAY_MAX on the long side."""
    scale = min(1.0, DISPLAY_MAX / max(shape))
    return (max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale)))


def lung_masks(paths: Sequence[str], n_images: int) -> list[str | None]:
    """One mask path per image: none, one for all, or one each."""
    if not paths:
        return [None] * n_images
    if len(paths) == 1:
        return [paths[0]] * n_images
    if len(paths) != n_images:
        raise ValueError(
            f"--lung_mask given {len(paths)} times for {n_images} images; give it once (one mask "
            "for every image) or once per image, in the order of the images"
        )
    return list(paths)


def shown_image(
    raw: np.ndarray, mask_path: str | None, margin: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """The field of view the model saw, at display size, and the lung mask fitted to it."""
    image = crop_margin(raw, margin)
    image = _fit(image, display_shape(image.shape), "bilinear")
    if mask_path is None:
        return image, None
    return image, _fit(crop_margin(read_mask(mask_path), margin), image.shape, "nearest") > 0.5


def predicted_maps(model: CXRClassifier, batch: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of each image's predicted class at the layer the training run explained: [N, h, w]."""
    wanted = sorted(set(predicted.tolist()))
    maps = grad_cam(model, target_layer(model, model.config.explain), batch, classes=wanted)
    channel = torch.tensor([wanted.index(c) for c in predicted.tolist()])
    return maps[torch.arange(len(batch)), channel].detach().cpu()


def _heatmap_path(folder: Path, image: str, used: set[Path]) -> Path:
    """folder/<stem>_gradcam.png, numbered when two images share a stem."""
    path = folder / f"{Path(image).stem}_gradcam.png"
    n = 1
    while path in used:
        n += 1
        path = folder / f"{Path(image).stem}_{n}_gradcam.png"
    used.add(path)
    return path


def predict(
    checkpoint: str | Path,
    images: Sequence[str | Path],
    heatmap_dir: str | Path | None = None,
    lung_mask: Sequence[str | Path] = (),
    cutoff: float = 0.9,
    alpha: float = 0.4,
    device: str = "auto",
) -> list[dict[str, Any]]:
    """Predicted class, per-class confidences and (with heatmap_dir) an overlay PNG per image."""
    if not images:
        raise ValueError("IMAGE: give at least one image file (PNG, JPEG or DICOM)")
    if not 0.0 <= cutoff <= 1.0:
        raise ValueError(f"--cutoff {cutoff}: give a probability in [0, 1], e.g. 0.9")
    masks = lung_masks([str(m) for m in lung_mask], len(images))
    model = load_classifier(checkpoint).to(pick_device(device))
    margin = model.config.data.crop_margin
    transform = eval_transform(model.input_size, margin)
    decoding = Decoding.from_data(model.config.data)  # DICOM windows as in training
    folder = Path(heatmap_dir) if heatmap_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    used: set[Path] = set()
    results = []
    for start in range(0, len(images), BATCH):
        paths = [str(p) for p in images[start : start + BATCH]]
        raw = [read_image(p, decoding) for p in paths]
        batch = torch.stack([transform(torch.from_numpy(r)[None]) for r in raw]).to(model.device)
        with torch.inference_mode():
            probs = model(batch).float().softmax(dim=1).cpu()
        top, predicted = probs.max(dim=1)
        files: list[str | None] = [None] * len(paths)
        bare: list[str | None] = [None] * len(paths)
        if folder is not None:
            pairs = [
                shown_image(r, m, margin)
                for r, m in zip(raw, masks[start : start + BATCH], strict=True)
            ]
            shown, shown_masks = zip(*pairs, strict=True)
            maps = predicted_maps(model, batch, predicted)
            for i, path in enumerate(paths):
                target = _heatmap_path(folder, path, used)
                # The original beside the overlay, captioned, with a colour bar; and the bare
                # overlay at the image's own size, for tools that read pixels.
                title = f"{Path(path).name}: predicted {model.classes[int(predicted[i])]} (p {float(top[i]):.2f})"
                panel = heatmap_grid([shown[i]], [maps[i]], titles=[title], alphas=(alpha,),
                                     masks=None if shown_masks[i] is None else [shown_masks[i]])
                target.write_bytes(figure_png(panel))
                files[i] = str(target)
                overlay_path = target.with_name(target.name.replace("_gradcam.png", "_overlay.png"))
                Image.fromarray(overlay(shown[i], maps[i], alpha=alpha, mask=shown_masks[i])).save(overlay_path)
                bare[i] = str(overlay_path)
        for i, path in enumerate(paths):
            results.append(
                {
                    "image": path,
                    "label": model.classes[int(predicted[i])],
                    "confidence": float(top[i]),
                    "passes_cutoff": bool(top[i] >= cutoff),
                    "probabilities": {c: float(probs[i, k]) for k, c in enumerate(model.classes)},
                    "heatmap": files[i],
                    "overlay": bare[i],
                }
            )
    return results


def format_text(results: Sequence[dict[str, Any]], cutoff: float) -> str:
    """Human-readable lines: class and confidence, the cut-off verdict, all probabilities."""
    lines = []
    for r in results:
        verdict = (
            f">= cut-off {cutoff:g}"
            if r["passes_cutoff"]
            else f"below cut-off {cutoff:g}: uncertain"
        )
        lines.append(f"{r['image']}: {r['label']} {r['confidence']:.3f} ({verdict})")
        lines.append("    " + "  ".join(f"{c} {p:.3f}" for c, p in r["probabilities"].items()))
        if r["heatmap"]:
            lines.append(f"    heatmap: {r['heatmap']}")
    return "\n".join(lines)
