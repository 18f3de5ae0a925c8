"""Writing and reading golden files: atomic, no pickle, clear errors for truncated or malformed files."""

import json
import os
import zipfile
import zlib

import numpy as onp

from minicp.files import atomic_savez
from minicp.golden.make import INPUTS, Golden, input_digest, input_draw
from minicp.testing.files import open_regular
from minicp.testing.reference import seeded_inputs

__all__ = ["save_golden", "read_golden", "regenerate_inputs"]


def save_golden(golden, path, overwrite=True):
    """Write a ``Golden`` as a compressed .npz (no pickled objects), atomically: a temporary file in the same
    folder, then ``os.replace``; a symlink at ``path`` is refused, and with ``overwrite=False`` an existing
    file. With ``inputs="seed"`` q, k, v, dout are left out. Returns the path written."""
    if not isinstance(golden, Golden):
        raise ValueError(f"golden must be a minicp.golden.Golden, got {type(golden).__name__}")
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"path must end in .npz, got {path!r}")
    arrays = dict(golden.arrays)
    if golden.config.get("inputs") == "seed":
        for key in INPUTS:
            arrays.pop(key, None)
    arrays["config"] = onp.asarray(json.dumps(golden.config))
    atomic_savez(path, arrays, overwrite=overwrite, lock=True)
    return path


def read_golden(path):
    """The arrays and config of a golden .npz (``allow_pickle=False``), inputs regenerated when the file
    recorded only their seed. ValueError saying what is wrong for anything else."""
    with open_regular(path) as fh:  # ValueError for a FIFO, a directory, a missing or unreadable file
        try:
            with onp.load(fh, allow_pickle=False) as z:
                arrays = {key: z[key] for key in z.files}
        except ValueError as e:
            raise ValueError(f"{path}: not a minicp golden file (unreadable without pickle: {e})") from e
        except (OSError, EOFError, zipfile.BadZipFile, KeyError, zlib.error) as e:
            raise ValueError(
                f"{path}: cannot read as .npz, truncated or not a zip archive ({type(e).__name__}: {e})"
            ) from e
    if "config" not in arrays:
        raise ValueError(f"{path}: no 'config' entry; not a minicp golden file")
    try:
        config = json.loads(str(arrays.pop("config")[()]))
    except (json.JSONDecodeError, TypeError, IndexError) as e:
        raise ValueError(f"{path}: 'config' is not valid JSON ({e})") from e
    if not isinstance(config, dict):
        raise ValueError(f"{path}: 'config' must be a JSON object, got {type(config).__name__}")
    if config.get("inputs") == "seed":
        arrays.update(regenerate_inputs(config, path))
    return Golden(arrays, config)


def regenerate_inputs(config, source):
    """q, k, v, dout of an attention file from its recorded case, verified against ``input_sha256``."""
    try:
        inputs = seeded_inputs(
            int(config["seed"]),
            int(config["batch"]),
            int(config["heads"]),
            int(config["seq_len"]),
            int(config["head_dim"]),
            int(config["out_rows"]),
            config["dtype"],
            input_draw(config, source),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{source}: cannot regenerate the inputs from the config ({type(e).__name__}: {e})") from e
    if input_digest(inputs) != config.get("input_sha256"):
        raise ValueError(
            f"{source}: inputs regenerated from seed {config.get('seed')} do not match the recorded "
            "input_sha256 (a different NumPy random stream, or an edited config)"
        )
    return inputs
