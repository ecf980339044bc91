"""Local paths and pyarrow.fs URIs (s3://...) behind one small interface, with atomic writes."""

from __future__ import annotations

import os
import uuid

import pyarrow.fs as pafs


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """A filesystem and the path inside it; plain paths become absolute local paths."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


# Object stores publish an object only once its upload completes, so a direct write is already
# all-or-nothing there (and their "rename" is a copy).
_OBJECT_STORES = {"s3", "gcs"}


def write_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Readers see the old file or the new, never half: on a local or network filesystem, write
    under a temporary name, then rename."""
    if fs.type_name in _OBJECT_STORES:
        with fs.open_output_stream(path) as out:
            out.write(data)
        return
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    tmp = f"{parent}/.tmp-{uuid.uuid4().hex}-{path.rsplit('/', 1)[1]}"
    with fs.open_output_stream(tmp) as out:
        out.write(data)
    fs.move(tmp, path)


def remove(fs: pafs.FileSystem, path: str) -> None:
    """Delete a file if it is there."""
    if exists(fs, path):
        fs.delete_file(path)


def remove_tree(fs: pafs.FileSystem, path: str) -> None:
    """Delete a folder and everything in it, if it is there."""
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()
