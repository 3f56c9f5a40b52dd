"""Decoding image files to float [H, W] arrays in [0, 1], and the errors for bad files."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless
from samples import write_bomb_png, write_dicom

from cxrlab.config import ConfigError, load_config
from cxrlab.datamodules.images import Decoding, ImageTooLarge, read_image, read_mask


def ramp(h: int = 24, w: int = 32, top: int = 255) -> np.ndarray:
    """A smooth 2-D gradient reaching `top` (smooth so JPEG keeps it well)."""
    yy, xx = np.mgrid[:h, :w]
    return np.round((xx / (w - 1) * 0.7 + yy / (h - 1) * 0.3) * top).astype(np.int64)


def test_png_8bit(tmp_path: Path) -> None:
    arr = ramp().astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.float32 and out.shape == (24, 32)
    np.testing.assert_allclose(out, arr / 255.0, atol=1e-7)


def test_png_16bit_scaled_by_65535(tmp_path: Path) -> None:
    arr = ramp(top=65535).astype(np.uint16)
    arr[0, 0], arr[-1, -1] = 0, 65535
    Image.fromarray(arr).save(tmp_path / "a16.png")
    with Image.open(tmp_path / "a16.png") as img:
        assert img.mode.startswith("I")  # really stored as 16-bit
    out = read_image(tmp_path / "a16.png")
    np.testing.assert_allclose(out, arr / 65535.0, atol=1e-6)
    assert out[0, 0] == 0.0 and out[-1, -1] == 1.0


def test_rgb_to_gray(tmp_path: Path) -> None:
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[:2] = (100, 100, 100)  # gray stays gray
    rgb[2:] = (255, 0, 0)  # pure red: ITU-R 601 luma weight 0.299
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    out = read_image(tmp_path / "rgb.png")
    assert out.shape == (4, 6)
    np.testing.assert_allclose(out[:2], 100 / 255, atol=1e-7)
    np.testing.assert_allclose(out[2:], 0.299, atol=1 / 255)


def test_jpeg(tmp_path: Path) -> None:
    arr = ramp().astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    out = read_image(tmp_path / "a.jpg")
    assert out.shape == (24, 32)
    assert np.abs(out - arr / 255.0).mean() < 2 / 255  # lossy, but close


VOI = Decoding(dicom_window="voi")
PERCENTILE = Decoding(dicom_window="percentile")


def linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window, by hand, as a fraction of the output range."""
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


@pytest.mark.parametrize("suffix", [".dcm", ".DICOM"])
def test_dicom_without_window_min_max(tmp_path: Path, suffix: str) -> None:
    pixels = ramp(top=4000) + 50
    path = write_dicom(tmp_path / f"a{suffix}", pixels, "MONOCHROME2", slope=2.0, intercept=-100, bits_stored=12)
    expected = (pixels - pixels.min()) / (pixels.max() - pixels.min())
    np.testing.assert_allclose(read_image(path, VOI), expected, atol=1e-6)
    half = write_dicom(tmp_path / f"c{suffix}", pixels, bits_stored=12, WindowCenter=900)  # no width: no window
    np.testing.assert_allclose(read_image(half, VOI), expected, atol=1e-6)
    # auto keeps min-max where the pixels were already meant for display: a secondary capture,
    # or an 8-bit CR export
    sc = write_dicom(tmp_path / f"sc{suffix}", pixels, modality="OT", bits_stored=12)
    np.testing.assert_allclose(read_image(sc), expected, atol=1e-6)
    eight = ramp(top=200) + 20
    cr8 = write_dicom(tmp_path / f"cr8{suffix}", eight, modality="CR", bits_stored=8)
    np.testing.assert_allclose(read_image(cr8), (eight - 20) / 200, atol=1e-6)
    assert not np.allclose(read_image(cr8, PERCENTILE), (eight - 20) / 200, atol=1e-3)


def test_dicom_monochrome1_inverted(tmp_path: Path) -> None:
    pixels = ramp(top=4000) + 50
    out = read_image(write_dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1", intercept=-100, bits_stored=12), VOI)
    expected = 1 - (pixels - pixels.min()) / (pixels.max() - pixels.min())
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out[0, 0] == 1.0  # the smallest stored value is the brightest in MONOCHROME1


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_dicom_window_applied_after_modality_lut(tmp_path: Path, photometric: str) -> None:
    stored = ramp(top=4000) + 50
    center, width = 3000.0, 2001.0  # in rescaled units: 2 * stored - 100
    path = write_dicom(
        tmp_path / "w.dcm", stored, photometric, slope=2.0, intercept=-100, bits_stored=12, window=(center, width)
    )
    expected = linear_window(2.0 * stored - 100, center, width)
    if photometric == "MONOCHROME1":
        expected = 1 - expected
    for decoding in (VOI, Decoding()):  # a narrow window is the file's display intent: auto keeps it
        np.testing.assert_allclose(read_image(path, decoding), expected, atol=1e-6)
    assert 0 < (expected == 0).sum() < expected.size and (expected == 1).sum() > 0  # both ends clip


def lut_item(descriptor: list[int], data: list[int]) -> Dataset:
    """A Modality/VOI LUT sequence item with explicit US VRs (the tags' VR is ambiguous)."""
    item = Dataset()
    item.add(DataElement(0x00283002, "US", descriptor))
    item.add(DataElement(0x00283006, "US", data))
    return item


def test_dicom_modality_lut_sequence(tmp_path: Path) -> None:
    stored = ramp(top=4095)
    item = lut_item([4096, 0, 16], [(4095 - v) * 3 for v in range(4096)])  # reversed, 3x scale
    item.ModalityLUTType = "US"
    path = write_dicom(tmp_path / "mlut.dcm", stored, bits_stored=12, ModalityLUTSequence=Sequence([item]))
    modality = (4095 - stored) * 3
    expected = (modality - modality.min()) / (modality.max() - modality.min())
    np.testing.assert_allclose(read_image(path, VOI), expected, atol=1e-6)


def test_dicom_voi_lut_sequence(tmp_path: Path) -> None:
    stored = ramp(top=4095)
    curve = np.round(np.sqrt(np.arange(4096) / 4095) * 1000).astype(int)  # a gamma curve to 0..1000
    path = write_dicom(
        tmp_path / "vlut.dcm", stored, bits_stored=12, VOILUTSequence=Sequence([lut_item([4096, 0, 16], curve.tolist())])
    )
    for decoding in (VOI, Decoding()):  # a VOI LUT is a deliberate display curve: auto applies it
        np.testing.assert_allclose(read_image(path, decoding), curve[stored] / 1000, atol=1e-6)


def washed_out_cr(tmp_path: Path, name: str = "cr.dcm") -> Path:
    """Like pydicom-data's RG1_UNCR.dcm: a 12-bit MONOCHROME1 CR whose VOI window spans all 4096
    values while the anatomy occupies a narrow band (600..1000), plus a few detector extremes."""
    rng = np.random.default_rng(0)
    body = 800 + 200 * np.sin(np.linspace(0, 6 * np.pi, 96))[None, :] * np.cos(np.linspace(0, 4, 128))[:, None]
    stored = np.clip(body + rng.normal(0, 20, body.shape), 600, 1000).round()
    stored[0, :5], stored[-1, -5:] = 0, 4095  # collimator edge and a lead marker
    return write_dicom(tmp_path / name, stored, "MONOCHROME1", modality="CR", bits_stored=12, window=(2048, 4096))


def test_percentile_window_fixes_washed_out_cr(tmp_path: Path) -> None:
    path = washed_out_cr(tmp_path)
    voi = read_image(path, VOI)
    assert np.median(voi) > 0.7 and np.percentile(voi, 99) - np.percentile(voi, 1) < 0.11  # washed out
    for decoding in (PERCENTILE, Decoding()):  # auto notices the window spans the detector range
        out = read_image(path, decoding)
        assert 0.35 < np.median(out) < 0.65
        assert np.percentile(out, 99) - np.percentile(out, 1) > 0.9
    # the percentiles are the configured ones: 5..95 clips more pixels than the default 0.5..99.5
    narrow = read_image(path, Decoding(dicom_window="percentile", dicom_percentiles=(5.0, 95.0)))
    assert ((narrow == 0) | (narrow == 1)).mean() > 0.09 > ((out == 0) | (out == 1)).mean()


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGLSLossless, RLELossless])
def test_dicom_compressed_transfer_syntaxes(tmp_path: Path, syntax: str) -> None:
    stored = ramp(64, 80, top=4095)  # openjpeg needs at least 64 px for its default resolution levels
    plain = read_image(write_dicom(tmp_path / "plain.dcm", stored, bits_stored=12, window=(1500, 1000)))
    packed = write_dicom(tmp_path / "packed.dcm", stored, bits_stored=12, window=(1500, 1000), transfer_syntax=syntax)
    np.testing.assert_array_equal(read_image(packed), plain)


def test_truncated_png_names_file(tmp_path: Path) -> None:
    Image.fromarray(ramp(64, 64).astype(np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut.png: unreadable image"):
        read_image(tmp_path / "cut.png")


@pytest.mark.parametrize("name", ["junk.png", "junk.jpg", "junk.dcm"])
def test_garbage_bytes_name_file(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"\x00\x01garbage" * 20)
    with pytest.raises(ValueError, match=f"{name}: "):
        read_image(tmp_path / name)


def test_broken_dicom_window_names_file(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "w0.dcm", ramp(top=4000), bits_stored=12, window=(2000, 0))
    with pytest.raises(ValueError, match=r"w0.dcm: unreadable image \(ValueError: .*Window Width"):
        read_image(path, VOI)


def test_missing_and_degenerate(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothere.png: image file not found"):
        read_image(tmp_path / "nothere.png")
    Image.fromarray(np.zeros((1, 10), dtype=np.uint8)).save(tmp_path / "line.png")
    with pytest.raises(ValueError, match=r"line.png: expected a 2-D image, got shape \(1, 10\)"):
        read_image(tmp_path / "line.png")


def test_read_mask(tmp_path: Path) -> None:
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2:5, 3:7] = 255
    mask[0, 0] = 100  # below half: outside
    Image.fromarray(mask).save(tmp_path / "m.png")
    out = read_mask(tmp_path / "m.png")
    assert out.dtype == bool
    np.testing.assert_array_equal(out, mask > 128)


def test_png_16bit_keeps_every_level(tmp_path: Path) -> None:
    levels = np.arange(0, 65536, 37, dtype=np.uint16)[: 40 * 40].reshape(40, 40)  # 1600 distinct values
    Image.fromarray(levels).save(tmp_path / "deep.png")
    out = read_image(tmp_path / "deep.png")
    assert len(np.unique(out)) == 1600  # not squeezed through 8 bits (256 levels)
    np.testing.assert_array_equal(np.round(out.astype(np.float64) * 65535).astype(np.uint16), levels)


def test_rgb_jpeg_of_gray_film_is_gray(tmp_path: Path) -> None:
    gray = ramp(32, 48).astype(np.uint8)
    Image.fromarray(np.repeat(gray[..., None], 3, axis=2)).save(tmp_path / "film.jpg", quality=95)
    with Image.open(tmp_path / "film.jpg") as img:
        assert img.mode == "RGB"
        decoded = np.asarray(img)
    # A gray film has no chroma, so every decoded channel is the same luma, and gray is that luma.
    assert (decoded[..., 0] == decoded[..., 1]).all() and (decoded[..., 1] == decoded[..., 2]).all()
    out = read_image(tmp_path / "film.jpg")
    assert out.shape == (32, 48)
    np.testing.assert_array_equal(np.round(out * 255).astype(np.uint8), decoded[..., 0])


@pytest.mark.parametrize("max_pixels", [50_000_000, 100_000_000])  # PIL's refusal (> 2x) and ours
def test_decompression_bomb_refused_unread(tmp_path: Path, max_pixels: int) -> None:
    bomb = write_bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 30_000
    start = time.perf_counter()
    with pytest.raises(ImageTooLarge, match=rf"bomb.png: .*169000000 pixels exceeds data.max_pixels={max_pixels}"):
        read_image(bomb, Decoding(max_pixels=max_pixels))
    assert time.perf_counter() - start < 0.5  # decoding 169 MP takes seconds and 1.7 GB


def test_pixel_limit_checked_from_dicom_header(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "big.dcm", ramp(64, 80, top=4095), bits_stored=12)
    with pytest.raises(ImageTooLarge, match=r"big.dcm: 64 x 80 = 5120 pixels exceeds data.max_pixels=5000"):
        read_image(path, Decoding(max_pixels=5000))
    assert read_image(path, Decoding(max_pixels=5120)).shape == (64, 80)
    frames = write_dicom(tmp_path / "frames.dcm", np.stack([ramp(64, 80, top=4095)] * 3), bits_stored=12)
    with pytest.raises(ImageTooLarge, match=r"frames.dcm: 64 x 80 x 3 = 15360 pixels"):  # every frame decodes
        read_image(frames, Decoding(max_pixels=10000))


def test_decoding_from_config_keys() -> None:
    cfg = load_config(overrides={"data.dicom_window": "percentile", "data.dicom_percentiles": "1,99", "data.max_pixels": 1000})
    assert Decoding.from_data(cfg.data) == Decoding("percentile", (1.0, 99.0), 1000)
    assert Decoding.from_data(load_config().data) == Decoding()  # the schema's defaults, nowhere else
    for key, value, message in [
        ("data.dicom_percentiles", "99,1", r"data.dicom_percentiles=\[99.0, 1.0\] must be two percentiles low < high"),
        ("data.dicom_percentiles", "0,50,100", r"data.dicom_percentiles=.* must be two percentiles"),
        ("data.dicom_window", "window", r"data.dicom_window='window' is not one of auto, voi, percentile"),
        ("data.max_pixels", "0", r"data.max_pixels=0 .*>= 1"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(overrides={key: value})
