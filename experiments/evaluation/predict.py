"""`cxrlab predict CHECKPOINT IMAGE...`: class, per-class confidence and Grad-CAM overlays."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cxrlab.callbacks.explanations.display import heatmap_grid, overlay
from cxrlab.callbacks.explanations.explanation import target_layer
from cxrlab.callbacks.explanations.methods import heatmaps
from cxrlab.callbacks.trust.model_trust import judge, trust_of
from cxrlab.datamodules.image_header import film_problem
from cxrlab.datamodules.images import Decoding, read_image, read_mask
from cxrlab.datamodules.sources.findings import NO_FINDING
from cxrlab.datamodules.transforms import crop_margin, eval_transform
from cxrlab.experiments.evaluation.inference import pick_device
from cxrlab.experiments.evaluation.report import figure_png
from cxrlab.lightning_modules.checkpoint import load_classifier
from cxrlab.lightning_modules.classifier import CXRClassifier
from cxrlab.lightning_modules.probabilities import MULTILABEL_THRESHOLD

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


def _heatmap_path(folder: Path, image: str, used: set[Path]) -> Path:
    """folder/<stem>_gradcam.png, numbered when two images share a stem."""
    path = folder / f"{Path(image).stem}_gradcam.png"
    n = 1
    while path in used:
        n += 1
        path = folder / f"{Path(image).stem}_{n}_gradcam.png"
    used.add(path)
    return path


TRUST_FIELDS = ("in_distribution", "ood_score", "template_corr", "explanation_typical", "shortcut_flag")


def model_input(model: CXRClassifier, raws: Sequence[np.ndarray]) -> torch.Tensor:
    """Decoded [H, W] arrays as the model takes them (cropped and resized as in training)."""
    transform = eval_transform(model.input_size, model.config.data.crop_margin)
    return torch.stack([transform(torch.from_numpy(np.ascontiguousarray(r, dtype=np.float32))[None]) for r in raws])


def _round(v: float | None, digits: int = 4) -> float | None:
    return None if v is None or math.isnan(v) else round(float(v), digits)


def predict_arrays(
    model: CXRClassifier,
    raws: Sequence[np.ndarray],
    names: Sequence[str],
    *,
    heatmap: bool = False,
    forced: Sequence[str | None] | None = None,
    lung_masks: Sequence[np.ndarray | None] | None = None,
) -> list[dict[str, Any]]:
    """Label, calibrated probabilities and trust verdicts of decoded images ([H, W] in [0, 1]);
    `forced` names the header problem of images predicted despite it, `heatmap` adds each image's
    Grad-CAM (at layer resolution)."""
    forced = list(forced) if forced is not None else [None] * len(raws)
    if model.multilabel:
        return _predict_findings(model, raws, names, forced, heatmap)
    trust = trust_of(model)
    masks = list(lung_masks) if lung_masks is not None else [None] * len(raws)
    results: list[dict[str, Any]] = []
    for start in range(0, len(raws), BATCH):
        chunk = slice(start, start + BATCH)
        batch = model_input(model, raws[chunk]).to(model.device)
        chunk_masks = masks[chunk]
        lungs = None
        if all(m is not None for m in chunk_masks):
            lungs = model_input(model, [m.astype(np.float32) for m in chunk_masks])[:, 0] > 0.5
        v = judge(model, trust, batch, model.config.explain, lungs)
        top, predicted = v.probs.max(1)
        for i, name in enumerate(names[chunk]):
            row: dict[str, Any] = {
                "image": str(name),
                "label": model.classes[int(predicted[i])],
                "confidence": float(top[i]),
                "probabilities": {c: float(v.probs[i, k]) for k, c in enumerate(model.classes)},
                "trust": "ok" if trust is not None else "unavailable",
                "in_distribution": v.in_distribution[i],
                "ood_score": None if v.ood_score is None else _round(v.ood_score[i]),
                "template_corr": None if v.template_corr is None else _round(v.template_corr[i]),
                "explanation_typical": v.typical[i],
                "shortcut_flag": v.shortcut_flag[i],
                "refused": forced[start + i],
            }
            if heatmap:
                row["gradcam"] = v.maps[i].cpu().numpy().round(5).tolist()
            results.append(row)
    return results


def _predict_findings(
    model: CXRClassifier, raws: Sequence[np.ndarray], names: Sequence[str], forced: Sequence[str | None], heatmap: bool
) -> list[dict[str, Any]]:
    """Multi-label: every finding whose probability reaches its threshold (chosen on validation in
    training), most probable first, each with its Grad-CAM when `heatmap`; the out-of-distribution
    score and shortcut flag where the checkpoint has a trust model."""
    cuts = model.label_thresholds or [MULTILABEL_THRESHOLD] * len(model.classes)
    layer = target_layer(model, model.config.explain)
    trust = trust_of(model)
    results: list[dict[str, Any]] = []
    for start in range(0, len(raws), BATCH):
        batch = model_input(model, raws[start:start + BATCH]).to(model.device)
        v = judge(model, trust, batch, model.config.explain)
        probs = v.probs.cpu()
        maps = heatmaps(model, layer, batch, "gradcam").cpu() if heatmap else None
        for i, name in enumerate(names[start:start + BATCH]):
            p = probs[i].tolist()
            present = sorted((k for k, c in enumerate(cuts) if p[k] >= c), key=lambda k: -p[k])
            row: dict[str, Any] = {
                "image": str(name),
                "label": "|".join(model.classes[k] for k in present) or NO_FINDING,
                "confidence": max(p),
                "findings": {model.classes[k]: p[k] for k in present},
                "probabilities": dict(zip(model.classes, p, strict=True)),
                "thresholds": dict(zip(model.classes, cuts, strict=True)),
                "trust": "ok" if trust is not None else "unavailable",
                "in_distribution": v.in_distribution[i],
                "ood_score": None if v.ood_score is None else _round(v.ood_score[i]),
                "template_corr": None,
                "explanation_typical": None,  # no templates: a film has several findings
                "shortcut_flag": v.shortcut_flag[i],
                "refused": forced[start + i],
            }
            if maps is not None:  # each present finding's map; the most probable one's when none is
                row["gradcam"] = {model.classes[k]: maps[i, k].numpy().round(5).tolist() for k in present or [int(np.argmax(p))]}
            results.append(row)
    return results


def predict(
    checkpoint: str | Path,
    images: Sequence[str | Path],
    heatmap_dir: str | Path | None = None,
    lung_mask: Sequence[str | Path] = (),
    cutoff: float = 0.9,
    alpha: float = 0.4,
    device: str = "auto",
    force: bool = False,
) -> list[dict[str, Any]]:
    """Predicted class, calibrated confidences and trust verdicts per image file, and (with
    heatmap_dir) a Grad-CAM panel per image. A DICOM whose header is no frontal chest film is
    refused (a row with `refused` and no label) unless `force`."""
    if not images:
        raise ValueError("IMAGE: give at least one image file (PNG, JPEG or DICOM)")
    if not 0.0 <= cutoff <= 1.0:
        raise ValueError(f"--cutoff {cutoff}: give a probability in [0, 1], e.g. 0.9")
    masks = lung_masks([str(m) for m in lung_mask], len(images))
    model = load_classifier(checkpoint).to(pick_device(device))
    decoding = Decoding.from_data(model.config.data)  # DICOM windows as in training
    paths = [str(p) for p in images]
    problems = [film_problem(p) for p in paths]
    take = [i for i, problem in enumerate(problems) if problem is None or force]
    raw = [read_image(paths[i], decoding) for i in take]
    lungs = [read_mask(masks[i]) if masks[i] else None for i in take]
    judged = predict_arrays(
        model, raw, [paths[i] for i in take], forced=[problems[i] for i in take],
        lung_masks=lungs, heatmap=heatmap_dir is not None,
    )
    rows = {i: r for i, r in zip(take, judged, strict=True)}
    margin = model.config.data.crop_margin
    folder = Path(heatmap_dir) if heatmap_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    used: set[Path] = set()
    results = []
    for i, path in enumerate(paths):
        if i not in rows:
            results.append({"image": path, "label": None, "refused": problems[i]})
            continue
        r = rows[i]
        r["passes_cutoff"] = r["confidence"] >= cutoff
        r["heatmap"] = r["overlay"] = None
        if folder is not None:
            shown, shown_mask = shown_image(raw[take.index(i)], masks[i], margin)
            cams = r.pop("gradcam")
            # Multi-label: one row per present finding; the file's overlay is the first (most probable).
            cams = {k: torch.tensor(v) for k, v in cams.items()} if isinstance(cams, dict) else {r["label"]: torch.tensor(cams)}
            cam = next(iter(cams.values()))
            target = _heatmap_path(folder, path, used)
            # The original beside the overlay, captioned, with a colour bar; and the bare
            # overlay at the image's own size, for tools that read pixels.
            titles = [f"{Path(path).name}: predicted {k} (p {r['probabilities'][k]:.2f})" for k in cams]
            panel = heatmap_grid([shown] * len(cams), list(cams.values()), titles=titles, alphas=(alpha,),
                                 masks=None if shown_mask is None else [shown_mask] * len(cams))
            target.write_bytes(figure_png(panel))
            bare = target.with_name(target.name.replace("_gradcam.png", "_overlay.png"))
            Image.fromarray(overlay(shown, cam, alpha=alpha, mask=shown_mask)).save(bare)
            r["heatmap"], r["overlay"] = str(target), str(bare)
        results.append(r)
    return results


def trust_words(r: dict[str, Any]) -> str:
    """What the trust model says of one prediction, in a few words."""
    if r.get("trust") != "ok":
        return "trust unavailable (checkpoint written before trust models)"
    words = ["in distribution" if r["in_distribution"] else f"OUT OF DISTRIBUTION (score {r['ood_score']:.1f}, over 1 is unlike training)"]
    if "findings" not in r:  # a multi-label film has no one class whose template its map could follow
        words.append({True: "typical heatmap", None: "empty heatmap"}.get(
            r["explanation_typical"], f"atypical heatmap (r {r['template_corr']:.2f})"))
    if r["shortcut_flag"]:
        words.append("SHORTCUT FLAG: heatmap outside the anatomy")
    if r["refused"]:
        words.append(f"forced past: {r['refused'].split(': ', 1)[-1]}")
    return ", ".join(words)


def summary(results: Sequence[dict[str, Any]]) -> list[str]:
    """The lines after the per-image ones: how many predictions the trust model doubts, and why."""
    judged = [r for r in results if r.get("label") is not None]
    lines = []
    refused = len(results) - len(judged)
    if refused:
        lines.append(f"{refused} of {len(results)} images refused (not a frontal chest radiograph); --force predicts them anyway")
    if not judged or judged[0].get("trust") != "ok":
        return lines
    n = len(judged)
    ood = sum(not r["in_distribution"] for r in judged)
    atypical = sum(r["explanation_typical"] is False for r in judged)
    flagged = sum(bool(r["shortcut_flag"]) for r in judged)
    if ood:
        lines.append(f"{ood} of {n} images are out of distribution: their predictions are not reliable")
    if atypical:
        lines.append(f"{atypical} of {n} images have atypical heatmaps: the model looked elsewhere than usual")
    if flagged:
        lines.append(f"{flagged} of {n} images carry a shortcut flag: the heatmap sits outside the anatomy")
    if not (ood or atypical or flagged):
        typical = "" if "findings" in judged[0] else ", with typical heatmaps"
        lines.append(f"all {n} images are in distribution{typical} and no shortcut flag")
    return lines


def format_text(results: Sequence[dict[str, Any]], cutoff: float) -> str:
    """Human-readable lines: class and confidence, the cut-off and trust verdicts, all
    probabilities, then the summary."""
    lines = []
    for r in results:
        if r.get("label") is None:
            lines.append(f"{r['refused']}: refused; --force predicts it anyway")
            continue
        verdict = (
            f">= cut-off {cutoff:g}"
            if r["passes_cutoff"]
            else f"below cut-off {cutoff:g}: uncertain"
        )
        if "findings" in r:  # multi-label: what is present, each at or over its own threshold
            found = ", ".join(f"{c} {p:.3f}" for c, p in r["findings"].items()) or "no finding over its threshold"
            lines.append(f"{r['image']}: {found}; {trust_words(r)}")
        else:
            lines.append(f"{r['image']}: {r['label']} {r['confidence']:.3f} ({verdict}); {trust_words(r)}")
        lines.append("    " + "  ".join(f"{c} {p:.3f}" for c, p in r["probabilities"].items()))
        if r["heatmap"]:
            lines.append(f"    heatmap: {r['heatmap']}")
    return "\n".join(lines + summary(results))
