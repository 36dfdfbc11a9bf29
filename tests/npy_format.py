"""A storage format that exists only in the tests: one ``.npy`` file per frame.

It shows that a format is one small package plus one registry entry: nothing of the
daemon, the store or recovery knows it. The image is a folder ``<name>.npys`` holding
``<index>.npy`` for every frame received (frames never received have no file) and
``description.json`` with the metadata, written at finalize.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from framesink.core import Compression, FrameLayout, OutputFiles, StorageOptions
from framesink.store import Folder, Journal, JournalState

DESCRIPTION = "description.json"


def frame_file(index: int) -> str:
    return f"{index:08d}.npy"


class NpyImage:
    """Frames as ``.npy`` files in a folder; zero-filled frames are simply absent."""

    is_direct = False

    def __init__(self, parent: Folder, files: OutputFiles, layout: FrameLayout) -> None:
        self.parent = parent
        self.files = files
        self.folder = parent.subfolder(files.partial)
        self.layout = layout
        self.frames = 0

    def append(self, chunks: Sequence[np.ndarray[Any, Any]]) -> None:
        for chunk in chunks:
            for frame in chunk:
                with self.folder.create_binary(frame_file(self.frames)) as handle:
                    np.save(handle, frame, allow_pickle=False)
                self.frames += 1

    def append_empty(self, count: int) -> None:
        self.frames += count

    def sync(self) -> None:
        self.folder.sync()

    def close(self) -> None:
        self.folder.sync()
        self.folder.close()

    def close_quietly(self) -> None:
        self.folder.close()

    def describe(
        self, metadata: Mapping[str, Any], frame_metadata: Iterable[tuple[int, dict[str, Any]]]
    ) -> None:
        document = {
            "metadata": dict(metadata),
            "frames": self.frames,
            "planes": len(list(frame_metadata)),
        }
        with (
            self.parent.open_subfolder(self.files.partial) as folder,
            folder.create_text(DESCRIPTION, fresh=True) as handle,
        ):
            handle.write(json.dumps(document))


class InterruptedNpy:
    """The frames a crash left: each journaled frame with its file, or zero-filled."""

    def __init__(self, folder: Folder, layout_bytes: int, frames: int) -> None:
        self.folder = folder
        self.frame_bytes = layout_bytes
        self.frames = frames

    def read(self, first: int, into: np.ndarray[Any, np.dtype[np.uint8]]) -> bool:
        for offset in range(len(into) // self.frame_bytes):
            name = frame_file(first + offset)
            if not self.folder.is_file(name):
                return False
            with self.folder.open_binary(name) as handle:
                frame = np.load(handle, allow_pickle=False)
            target = into[offset * self.frame_bytes : (offset + 1) * self.frame_bytes]
            target[:] = np.frombuffer(frame.tobytes(), np.uint8)
        return True

    def close(self) -> None:
        self.folder.close()


class NpyFramesFormat:
    name = "npy-frames"
    suffix = ".npys"
    record_aliases = ()
    compressions = frozenset({Compression.NONE})

    def check_layout(self, layout: FrameLayout, acquisition: str | None = None) -> None:
        """Any layout fits."""

    def create(
        self,
        folder: Folder,
        files: OutputFiles,
        layout: FrameLayout,
        options: StorageOptions,
        journal: Journal,
    ) -> NpyImage:
        return NpyImage(folder, files, layout)

    def open_interrupted(
        self, folder: Folder, source: str, state: JournalState
    ) -> InterruptedNpy | None:
        header = state.header
        frame_bytes = int(np.prod(header.frame_shape)) * np.dtype(header.dtype).itemsize
        return InterruptedNpy(folder.open_subfolder(source), frame_bytes, state.frames or 0)


FORMAT = NpyFramesFormat()


def write_entry_point(site: os.PathLike[str] | str) -> None:
    """Register FORMAT for processes that have ``site`` on their path (an entry point)."""
    info = os.path.join(site, "framesink_npy_format-0.dist-info")
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "METADATA"), "w") as handle:
        handle.write("Metadata-Version: 2.1\nName: framesink-npy-format\nVersion: 0\n")
    with open(os.path.join(info, "entry_points.txt"), "w") as handle:
        handle.write("[framesink.formats]\nnpy-frames = tests.npy_format:FORMAT\n")
