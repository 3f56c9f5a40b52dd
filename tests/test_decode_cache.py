"""The decode cache: equal to direct decoding (up to its 8 bits), invalidated by edits, safe with
concurrent builders, picklable into spawned loader workers."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cxrlab.datamodules.datamodule import CXRDataModule, CXRDataset
from cxrlab.datamodules.decode_cache import DecodeCache, quantize
from cxrlab.datamodules.images import Decoding, read_image
from cxrlab.datamodules.transforms import eval_transform

SIZE, MARGIN = 24, 0.1


@pytest.fixture
def make_dm(make_config: Callable) -> Callable[..., CXRDataModule]:
    def make(root: Path, **data: Any) -> CXRDataModule:
        base = {"data.root": str(root), "data.split": [0.6, 0.2, 0.2], "data.num_workers": 0}
        cfg = make_config(base | {"data.crop_margin": MARGIN, "data.image_size": SIZE} | {f"data.{k}": v for k, v in data.items()})
        return CXRDataModule(cfg.data, seed=0)

    return make


@pytest.fixture
def tree(folder_tree: Path, tmp_path: Path) -> Path:
    """A writable copy of the tiny 3 x 16 PNG tree."""
    return shutil.copytree(folder_tree, tmp_path / "tree")


def direct(path: str) -> torch.Tensor:
    """What a loader without cache yields for an eval image: decode, crop, resize (float)."""
    return eval_transform(SIZE, MARGIN)(torch.from_numpy(read_image(path))[None])


def test_cache_equals_direct_decoding(make_dm: Callable, tree: Path, tmp_path: Path) -> None:
    cached = make_dm(tree, cache=str(tmp_path / "cache"))
    cached.setup()
    plain = make_dm(tree)
    plain.setup()
    assert cached.skipped.empty and cached.table.equals(plain.table)
    for split in ("train", "val", "test"):
        a, b = cached.datasets[split], plain.datasets[split]
        for i in range(len(a)):
            x, y = a[i]
            # Equality, defined: the cached tensor is the direct one rounded to 8 bits, exactly.
            assert torch.equal(x, torch.from_numpy(quantize(b[i][0])).float()[None] / 255)
            assert (x - b[i][0]).abs().max() <= 0.5 / 255 + 1e-7 and y == b[i][1]
    index = (tmp_path / "cache" / f"{SIZE}.json").read_text()
    assert index.count(":") == 48 and (tmp_path / "cache" / f"{SIZE}.u8").stat().st_size == 48 * SIZE**2


def test_later_runs_read_the_cache_without_decoding(make_dm: Callable, tree: Path, tmp_path: Path) -> None:
    first = make_dm(tree, cache=str(tmp_path / "cache"))
    first.setup()
    path = first.datasets["val"].paths[0]
    before = first.datasets["val"][0][0]
    # Garbage of the same size and mtime: the key is unchanged, and decoding it would fail.
    st = os.stat(path)
    Path(path).write_bytes(b"\0" * st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = make_dm(tree, cache=str(tmp_path / "cache"))
    second.setup()  # building finds every image cached: nothing decoded, nothing skipped
    assert second.skipped.empty and torch.equal(second.datasets["val"][0][0], before)
    assert (tmp_path / "cache" / f"{SIZE}.u8").stat().st_size == 48 * SIZE**2


def test_changed_file_invalidates_its_entry(tree: Path, tmp_path: Path) -> None:
    cache = DecodeCache(tmp_path / "cache", SIZE, MARGIN, Decoding())
    path = str(tree / "normal" / "normal_000.png")
    assert cache.build([path]).empty
    old = cache.get(path)
    Image.fromarray(np.full((40, 40), 200, dtype=np.uint8)).save(path)  # new content, size, mtime
    assert (cache.get(path) == 200).all() and not (old == 200).all()  # decoded anew, not the stale slot
    assert cache.build([path]).empty and (cache.get(path) == 200).all()
    assert (tmp_path / "cache" / f"{SIZE}.u8").stat().st_size == SIZE**2  # the stale slot was reclaimed


def test_a_build_reclaims_the_slots_of_deleted_and_edited_files(tree: Path, tmp_path: Path) -> None:
    cache = DecodeCache(tmp_path / "cache", SIZE, MARGIN, Decoding())
    paths = sorted(str(p) for p in tree.rglob("*.png"))[:6]
    assert cache.build(paths).empty
    Path(paths[0]).unlink()  # gone: its slot is free
    Image.fromarray(np.full((40, 40), 90, dtype=np.uint8)).save(paths[1])  # edited: its old slot is free
    new = str(tree / "normal" / "new.png")
    Image.fromarray(np.full((40, 40), 30, dtype=np.uint8)).save(new)
    assert cache.build([*paths[1:], new]).empty
    assert (tmp_path / "cache" / f"{SIZE}.u8").stat().st_size == 6 * SIZE**2  # two images, no growth
    for p in [*paths[1:], new]:
        assert np.array_equal(cache.get(p), cache.prepare(p))


def test_other_settings_are_other_entries(tree: Path, tmp_path: Path) -> None:
    path = str(tree / "covid" / "covid_001.png")
    no_crop = DecodeCache(tmp_path / "cache", SIZE, 0.0, Decoding())
    cropped = DecodeCache(tmp_path / "cache", SIZE, 0.3, Decoding())
    no_crop.build([path])
    cropped.build([path])
    assert np.array_equal(no_crop.get(path), no_crop.prepare(path))
    assert np.array_equal(cropped.get(path), cropped.prepare(path))
    assert not np.array_equal(no_crop.get(path), cropped.get(path))


def test_bad_files_are_reported_not_cached(tree: Path, tmp_path: Path) -> None:
    (tree / "covid" / "covid_002.png").write_bytes(b"junk")
    paths = [str(tree / "covid" / n) for n in ("covid_001.png", "covid_002.png", "gone.png")]
    bad = DecodeCache(tmp_path / "cache", SIZE, MARGIN, Decoding()).build(paths)
    assert [Path(p).name for p in bad["path"]] == ["gone.png", "covid_002.png"]
    assert bad["error"].str.contains("not found|unreadable").all()
    assert (tmp_path / "cache" / f"{SIZE}.u8").stat().st_size == SIZE**2


def _build(cache: DecodeCache, paths: list[str], start: Any) -> int:
    start.wait()  # both processes begin together
    return len(cache.build(paths))


def test_concurrent_builders_do_not_corrupt(tree: Path, tmp_path: Path) -> None:
    paths = sorted(str(p) for p in tree.rglob("*.png"))
    cache = DecodeCache(tmp_path / "cache", SIZE, MARGIN, Decoding())
    ctx = multiprocessing.get_context("fork")  # cheap to start; spawn is tested with the loader below
    with ctx.Manager() as manager:
        start = manager.Barrier(2)
        with ctx.Pool(2) as pool:
            failures = pool.starmap(_build, [(cache, paths, start), (cache, paths[::-1], start)])
    assert failures == [0, 0]
    assert (tmp_path / "cache" / f"{SIZE}.u8").stat().st_size == len(paths) * SIZE**2  # each image once
    for p in paths:
        assert np.array_equal(cache.get(p), cache.prepare(p))


def test_cache_pickles_into_spawned_loader_workers(make_dm: Callable, tree: Path, tmp_path: Path) -> None:
    dm = make_dm(tree, cache=str(tmp_path / "cache"))
    dm.setup()
    # The cache's own pickling, whatever transform a loader adds (the cache did crop and resize).
    ds = CXRDataset(dm.split_table("val"), dm.classes, torch.nn.Identity(), dm.decoding, dm.cache)
    expected = torch.stack([ds[i][0] for i in range(len(ds))])  # opens the memmap in this process
    assert len(pickle.dumps(ds.cache)) < 2000  # settings only: no mapped data, no open handle
    copy = pickle.loads(pickle.dumps(ds))
    assert torch.equal(torch.stack([copy[i][0] for i in range(len(copy))]), expected)
    loader = DataLoader(ds, batch_size=4, num_workers=1, multiprocessing_context="spawn")
    assert torch.equal(torch.cat([b[0] for b in loader]), expected)


def test_unwritable_cache_folder_is_one_line(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    cache = DecodeCache(tmp_path / "file" / "cache", SIZE, MARGIN, Decoding())
    with pytest.raises(ValueError, match=r"^data.cache=.*file/cache: .*; choose a writable folder"):
        cache.build([str(tree / "normal" / "normal_000.png")])
