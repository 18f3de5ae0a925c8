"""Golden test vectors for kernel authors: ``minicp golden`` and its reader.

A golden file is a plain ``.npz`` (no pickle; ``numpy.load(path)`` in any NumPy, ``np.load`` then
``torch.from_numpy``, ``jnp.asarray``, or any zip + .npy reader) holding seeded inputs, the reference
outputs, the gradients for a seeded upstream gradient, the attention pattern, and a JSON config.
Everything is computed in float64 and stored in the requested dtype; the same arguments and seed give
the same file bit for bit.

Attention level (``make_golden``, ``minicp golden --arch ...``), one attention layer of all heads:

=====================  ====================  ========================================================
key                    shape, dtype          meaning
=====================  ====================  ========================================================
q, k, v                (b, h, n, d), S       inputs; q is NOT pre-scaled (scale d^-0.5 is applied inside)
out                    (b, h, R, d), S       attention output of the R computed rows (R = n except
                                             PerceiverAR's first layer, R = latent)
rows                   (R,), int64           token position of each output row
dout                   (b, h, R, d), S       upstream gradient
dq, dk, dv             (b, h, n, d), S       gradients of sum(out * dout) with respect to q, k, v
mask                   (1 or h, n, n), bool  True = query i may attend to key j; (1, n, n) when all heads
                                             share the pattern; only stored when n <= mask_limit (8192)
block_head             (B,), int64           the block list, one entry per (head, block): head index,
block_row_start/stop   (B,), int64           query rows [start, stop) and key columns (-1 when the
block_col_start/stop   (B,), int64           block's positions are not one contiguous range)
block_diagonal         (B,), int64           local (r, c) visible iff c <= r + diagonal ...
block_masked           (B,), bool            ... when masked; everything visible when not
block_rows, block_cols (sum,), int64         every block's row/column positions concatenated (lossless)
block_rows_offsets     (B + 1,), int64       block i's rows are block_rows[off[i]:off[i + 1]]
block_cols_offsets     (B + 1,), int64       (same for the columns)
config                 0-d unicode           JSON: arch, pattern_args (as given), resolved_pattern_args
                                             (every default filled in), sizes, seed, dtype, numeric
                                             tolerances, inputs ("stored" or "seed"), input_sha256, ...
=====================  ====================  ========================================================

S is the storage dtype: float64, float32 or float16 as requested; **bfloat16 is stored as float32
arrays whose values are exactly bfloat16 numbers** (NumPy has no bfloat16): convert with
``torch.from_numpy(a).to(torch.bfloat16)`` or ``jnp.asarray(a, jnp.bfloat16)`` (exact). Rounding is
float64 -> float32 -> bfloat16, round to nearest even, as PyTorch's ``.to(torch.bfloat16)``. The dtype
names, the storage table and the rounding belong to ``minicp.testing`` (``DTYPES``, ``STORAGE``,
``round_to_bfloat16``, ``to_storage``), as do the golden values without a file
(``minicp.testing.reference_arrays``); this package exports only what is its own.

Model level (``make_model_golden``, ``minicp golden --model ...``), the whole language model:
``tokens`` (b, n + 1) int64; ``param/<official name>`` for every parameter (e.g.
``param/layers.0.0.fn.to_q.weight``); ``logits`` (b, rows, V) of ``forward(params, tokens[:, :n])``;
``loss`` (0-d) of ``loss(params, tokens)`` (the official wrapper's loss); ``grad/<name>`` = d loss /
d param; ``config`` with the full ModelConfig.

Reproducibility: attention level splits the seed with ``numpy.random.SeedSequence(seed).spawn(4)``,
one generator each for q, k, v, dout, draws ``standard_normal`` in float32 (float64 for a float64
case; ``"draw": 2`` in the config; files of format_version 1 used one float64 stream,
``default_rng(seed)``, for all four in turn, and still load), rounds them to the dtype, and computes every
reference value in float64 **from the rounded inputs**; so a kernel that reads the stored inputs is
measured only by its own arithmetic. Model level: ``init_params(config, seed)`` (float64, rounded),
tokens from ``default_rng(seed + 1).integers(0, vocab, (b, n + 1))``.

Compact files: ``make_golden(..., inputs="seed")`` (CLI ``--inputs seed``) leaves q, k, v, dout out;
``load_golden`` redraws them from the recorded seed and verifies their sha256 (``input_sha256``).

Safety: files are written atomically (temporary file + ``os.replace``; a symlink at the target is
refused). ``read_golden`` / ``load_golden`` never unpickle, and check a file before reading it: from the zip
directory, the config and each member's .npy header they refuse members the config does not list, names
given twice, a listing other than what the config's case implies, more than ``READ_LIMIT`` bytes of arrays
(``max_bytes=None`` lifts it) and a recomputation of more than ``WORK_LIMIT`` multiply-adds
(``max_work=None``), all before any array data is decompressed; then every config field (scale, tolerance
...) is compared with what the case gives, and the outputs with a recomputation that never reads a cache.
``make_golden`` refuses cases beyond ``WORK_LIMIT`` alike. Errors name the file and the field or array.

Judging a kernel with a file: ``assert_matches_golden(fn, path, grad_fn=...)`` (the budgets of
``minicp.testing``; docs/tolerances.md). Other mask conventions: ``mask_export`` (True = masked,
additive 0 / -inf) and ``row_ranges`` (key intervals per query row, linear in n).
"""

from minicp.golden.check import assert_matches_golden, check_golden, load_golden
from minicp.golden.config import (
    FORMAT,
    FORMAT_VERSION,
    INPUT_MODES,
    MASK_LIMIT,
    WORK_LIMIT,
    attention_work,
    tolerance_config,
)
from minicp.golden.io import READ_LIMIT, read_golden, save_golden
from minicp.golden.make import Golden, block_arrays, make_golden
from minicp.golden.masks import MASK_CONVENTIONS, mask_export, row_ranges
from minicp.golden.model import make_model_golden

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MASK_LIMIT",
    "INPUT_MODES",
    "WORK_LIMIT",
    "READ_LIMIT",
    "Golden",
    "make_golden",
    "make_model_golden",
    "save_golden",
    "load_golden",
    "read_golden",
    "check_golden",
    "assert_matches_golden",
    "attention_work",
    "block_arrays",
    "tolerance_config",
    "mask_export",
    "row_ranges",
    "MASK_CONVENTIONS",
]
