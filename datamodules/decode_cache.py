"""The decode cache: each image decoded, cropped and resized once, stored as 8 bits in one
memory-mapped file that every epoch, run and sweep worker reads.

Layout of `root/`, per input size S: `S.u8` holds S x S uint8 slots back to back, `S.json` maps a
key to [slot, path, mtime_ns, size], `S.lock` serialises builders. A key hashes the file's absolute
path, mtime and byte size with everything that shapes the stored pixels (decoding settings, crop
margin, S), so an edited file or a changed setting misses and is decoded anew. A build reclaims the
slots of files edited or deleted since they were cached and writes new images there first, so the
cache does not grow with every edit. Readers never see a reclaimed slot change under them: no key
they can compute still points to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from filelock import FileLock

from cxrlab.config import MAX_TABLE_BYTES
from cxrlab.config.load import read_text_capped
from cxrlab.datamodules.images import Decoding, read_image
from cxrlab.datamodules.transforms import eval_transform

FORMAT = 1  # bump when the stored bytes change meaning
INDEX_SECONDS = 30.0  # between index writes while building, so an interrupted build keeps its work


def quantize(x: torch.Tensor) -> np.ndarray:
    """[1, S, S] float in [0, 1] -> [S, S] uint8, rounding to the nearest of 256 levels."""
    return torch.round(x[0].clamp(0.0, 1.0) * 255).to(torch.uint8).numpy()


class DecodeCache:
    """8-bit images of size x size, after decoding and crop_margin; picklable for loader workers."""

    def __init__(self, root: str | Path, size: int, margin: float, decoding: Decoding) -> None:
        self.root = Path(root)
        self.size, self.margin, self.decoding = size, margin, decoding
        self.settings = f"{FORMAT}|{size}|{margin!r}|{decoding!r}"
        self._index: dict[str, int] | None = None
        self._slots: np.ndarray | None = None

    # Opened lazily in each process: a memmap would pickle as a full copy of the data.
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_index": None, "_slots": None}

    @property
    def data_file(self) -> Path:
        """The slots, S x S bytes each, back to back."""
        return self.root / f"{self.size}.u8"

    @property
    def index_file(self) -> Path:
        """JSON {key: slot}, replaced atomically by builders."""
        return self.root / f"{self.size}.json"

    def key(self, path: str | Path) -> str:
        """The cache key of a file as it is now on disk."""
        path = os.path.abspath(path)
        st = os.stat(path)
        return hashlib.sha1(f"{path}|{st.st_mtime_ns}|{st.st_size}|{self.settings}".encode()).hexdigest()

    def prepare(self, path: str | Path) -> np.ndarray:
        """Decode, crop and resize one file exactly as eval_transform does, then quantise: the
        bytes a slot holds (ValueError / FileNotFoundError for a bad file)."""
        x = torch.from_numpy(read_image(path, self.decoding))[None]
        return quantize(eval_transform(self.size, self.margin)(x))

    def get(self, path: str | Path) -> np.ndarray:
        """The [S, S] uint8 image of `path`: its slot, or decoded now when the file is not cached
        (new or changed since the build; such reads do not write to the cache)."""
        if self._index is None:
            self._open()
        try:
            slot = _slot(self._index.get(self.key(path)))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: image file not found") from None
        if slot is None or self._slots is None or slot >= len(self._slots):
            return self.prepare(path)
        return np.array(self._slots[slot])

    def _open(self) -> None:
        # The index is read before the data is mapped, and builders write data before the index
        # that points to it, so every slot this index names lies inside the mapping.
        self._index = _read_index(self.index_file)
        n = self.data_file.stat().st_size // self.size**2 if self.data_file.exists() else 0
        self._slots = (
            np.memmap(self.data_file, dtype=np.uint8, mode="r", shape=(n, self.size, self.size)) if n else None
        )

    def build(self, paths: Sequence[str], workers: int = 4) -> pd.DataFrame:
        """Add every path not yet cached; return the files that failed to decode as (path, error).

        One builder at a time holds the lock; a second one waiting on it then finds the first one's
        images and adds only what is still missing.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            return self._build(paths, workers)
        except OSError as e:  # an unwritable or full cache folder is a setting to fix, not a crash
            raise ValueError(f"data.cache={self.root}: {e.strerror or e}; choose a writable folder with free space") from None

    def _build(self, paths: Sequence[str], workers: int) -> pd.DataFrame:
        """build() inside an existing cache folder."""
        bad: list[tuple[str, str]] = []
        with FileLock(str(self.root / f"{self.size}.lock")):
            index = _read_index(self.index_file)
            free = [_slot(index.pop(k)) for k in [k for k, entry in index.items() if _stale(entry)]]
            todo: list[tuple[str, str]] = []
            for p in paths:
                try:
                    k = self.key(p)
                except FileNotFoundError:
                    bad.append((p, f"{p}: image file not found"))
                    continue
                if k not in index:
                    todo.append((p, k))
            slot_bytes = self.size**2
            self.data_file.touch()
            with open(self.data_file, "r+b") as out:
                end = out.seek(0, os.SEEK_END)
                if end % slot_bytes:  # a builder killed mid-write left a partial slot: drop it
                    out.truncate(end - end % slot_bytes)
                    end -= end % slot_bytes
                free, fresh, saved = sorted(s for s in free if s * slot_bytes < end), end // slot_bytes, time.monotonic()
                for (p, k), image in zip(todo, self._decode(todo, workers), strict=True):
                    if isinstance(image, str):
                        bad.append((p, image))
                        continue
                    slot = free.pop(0) if free else fresh
                    fresh += slot == fresh
                    out.seek(slot * slot_bytes)
                    out.write(image.tobytes())
                    st = os.stat(p)
                    index[k] = [slot, os.path.abspath(p), st.st_mtime_ns, st.st_size]
                    if time.monotonic() - saved > INDEX_SECONDS:
                        _write_index(self.index_file, index, out)
                        saved = time.monotonic()
                _write_index(self.index_file, index, out)
        self._index = None  # reopen on the next read: the data file has grown
        return pd.DataFrame(bad, columns=["path", "error"])

    def _decode(self, todo: list[tuple[str, str]], workers: int) -> Iterator[np.ndarray | str]:
        """Decoded slots in `todo` order (an error string for a bad file), decoded in threads."""

        def one(item: tuple[str, str]) -> np.ndarray | str:
            try:
                return self.prepare(item[0])
            except (ValueError, FileNotFoundError) as e:
                return str(e)

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            yield from pool.map(one, todo)


def _read_index(path: Path) -> dict[str, Any]:
    return json.loads(read_text_capped(path, MAX_TABLE_BYTES, "a decode-cache index")) if path.exists() else {}


def _slot(entry: Any) -> int | None:
    """The slot of an index entry ([slot, path, mtime_ns, size]; a bare slot in caches built
    before slots were reclaimed)."""
    return entry if entry is None or isinstance(entry, int) else entry[0]


def _stale(entry: Any) -> bool:
    """Whether the file an entry was decoded from is gone or changed since (bare slots: unknown)."""
    if isinstance(entry, int):
        return False
    _, path, mtime_ns, size = entry
    try:
        st = os.stat(path)
    except OSError:
        return True
    return (st.st_mtime_ns, st.st_size) != (mtime_ns, size)


def _write_index(path: Path, index: dict[str, Any], data: Any) -> None:
    """Flush the data the index points to, then replace the index atomically."""
    data.flush()
    os.fsync(data.fileno())
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(index))
    os.replace(tmp, path)
