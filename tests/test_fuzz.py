"""Fuzz every public entry point with hypothesis: valid values mixed with hostile ones.

Each call must either return a result that passes the function's own invariants, or raise a ValueError /
TypeError whose message names one of the function's parameters. Anything else (KeyError, ZeroDivisionError,
AssertionError, a NaN result, a hang) fails. A hang is caught by a per-example alarm (SIGALRM), not only
by hypothesis' deadline, which can only judge an example after it returns.
"""

import contextlib
import math
import os
import signal
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minicp
from minicp import (
    files,
    value_and_grad,  # the public function: it checks its results
)
from minicp.lm.checkpoint import load_checkpoint
from minicp.lm.evaluate import perplexity_official
from minicp.lm.generate import sample_next, top_k_count
from minicp.lm.train import TrainConfig, train

SECONDS = 10  # per example: far above any valid tiny call, far below a hang
FUZZ = settings(
    max_examples=100,
    deadline=None,  # the alarm below is the real per-example limit
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=True,  # CI runs the same examples every time
)
EXAMPLES = {"count": 0}


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds=SECONDS):
    def alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def outcome(call, names):
    """The call's result, or None when it raised a ValueError / TypeError that names one of ``names``."""
    EXAMPLES["count"] += 1
    with time_limit():
        try:
            return call()
        except (ValueError, TypeError) as e:
            message = str(e)
            assert any(name in message for name in names), f"{type(e).__name__} names no parameter: {message}"
            return None


# values that broke entry points before: wrong types, bools, strings, NaN, inf, zero, negatives, huge
HOSTILE = [0, -1, -5, 1.5, "3", "no", True, False, None, math.nan, math.inf, -math.inf, 10**9, 10**18, [], [2]]
hostile = st.sampled_from(HOSTILE)
ints = lambda lo, hi: st.one_of(st.integers(lo, hi), st.integers(lo, hi).map(np.int64), hostile)
reals = lambda lo, hi: st.one_of(st.floats(lo, hi), hostile)

TINY = minicp.ModelConfig(arch="ecp", vocab=11, dim=8, heads=2, layers=1, seq_len=8, half_segment=2)
PARAMS = minicp.init_params(TINY, dtype="float64")
CONFIG_FIELDS = dict(
    vocab=ints(1, 20),
    dim=ints(1, 16),
    heads=ints(1, 4),
    layers=ints(1, 3),
    seq_len=ints(1, 16),
    rope_base=reals(1, 1e5),
    eps=reals(0, 1),
    separate_kv=st.one_of(st.booleans(), hostile),
    partial_segments=st.one_of(st.booleans(), hostile),
)


@FUZZ
@given(st.sampled_from(minicp.ARCHITECTURES), st.fixed_dictionaries({}, optional=CONFIG_FIELDS))
def test_model_config(arch, fields):
    cfg = outcome(
        lambda: minicp.ModelConfig(arch=arch, **fields),
        list(fields) + ["arch", "latent", "segment", "group", "split", "compressed", "rope_style", "head dim", "dim"],
    )
    if cfg is not None:
        assert cfg.dim % cfg.heads == 0 and 1 <= cfg.latent <= cfg.seq_len
        assert cfg.rope_base > 0 and math.isfinite(cfg.rope_base) and cfg.eps >= 0
        assert isinstance(cfg.separate_kv, bool) and isinstance(cfg.partial_segments, bool)


@FUZZ
@given(st.one_of(st.sampled_from(["float32", "float64"]), hostile, st.just("int32")), ints(0, 5))
def test_init_params(dtype, seed):
    params = outcome(lambda: minicp.init_params(TINY, seed=seed, dtype=dtype), ["dtype", "seed"])
    if params is not None:
        flat = minicp.flatten(params)
        assert all(v.dtype.kind == "f" and np.isfinite(v).all() for v in flat.values())
        assert np.abs(flat["layers.0.0.fn.to_q.weight"]).max() > 0


def _corrupt(kind):
    flat = {k: np.array(v) for k, v in minicp.flatten(PARAMS).items()}
    if kind == "nan":
        flat["layers.0.1.fn.net.0.weight"][1, 2] = np.nan
    elif kind == "inf":
        flat["to_logits.1.bias"][3] = np.inf
    elif kind == "int":
        flat["token_emb.weight"] = flat["token_emb.weight"].astype(np.int64)
    elif kind == "missing":
        del flat["to_logits.1.bias"]
    elif kind == "shape":
        flat["token_emb.weight"] = flat["token_emb.weight"][:5]
    return minicp.unflatten(flat)


@FUZZ
@given(
    st.sampled_from(["ok", "nan", "inf", "int", "missing", "shape"]),
    st.one_of(
        st.just(np.zeros((1, 8), np.int64)),
        st.just(np.full((2, 8), 10)),
        st.just(np.full((1, 8), 11)),
        st.just(np.zeros((1, 8))),
        st.just(np.zeros(8, int)),
        st.just(np.zeros((1, 3), int)),
        st.just("abc"),
    ),
    st.sampled_from([TINY, TINY.replace(vocab=12), TINY.replace(layers=2), TINY.replace(dim=4)]),
)
def test_forward_and_loss(kind, tokens, cfg):
    params = _corrupt(kind)
    names = ["params", "tokens", "token ids", "config", "seq_len"]
    logits = outcome(lambda: minicp.forward(params, tokens, cfg), names)
    if logits is not None:
        assert kind == "ok" and cfg == TINY and logits.shape == (*np.shape(tokens), cfg.vocab)
        assert np.isfinite(logits).all()
    value = outcome(lambda: minicp.loss(params, np.zeros((1, 9), np.int64), cfg), names)
    if value is not None:
        assert kind == "ok" and cfg == TINY and np.isfinite(value) and value > 0


Q = np.random.default_rng(0).standard_normal((1, 2, 8, 4))


def _qkv(kind):
    q, k, v = Q.copy(), Q.copy(), Q.copy()
    if kind == "nan_v":
        v[0, 1, 7, 2] = np.nan
    elif kind == "inf_q":
        q[0, 0, 0, 0] = np.inf
    elif kind == "list":
        q = q.tolist()
    elif kind == "int":
        k = k.astype(int)
    elif kind == "empty":
        q, k, v = q[..., :0], k[..., :0], v[..., :0]
    elif kind == "short":
        k, v = k[:, :, :4], v[:, :, :4]
    return q, k, v


@FUZZ
@given(
    st.sampled_from(["ok", "nan_v", "inf_q", "list", "int", "short", "empty"]),
    st.one_of(st.none(), st.floats(0.1, 2), hostile),
    ints(1, 8),
    st.one_of(st.booleans(), hostile),
)
def test_head_level_attention(kind, scale, half_segment, partial):
    q, k, v = _qkv(kind)
    names = ["q", "k", "v", "scale", "half_segment", "partial", "seq_len", "positions"]
    out = outcome(
        lambda: minicp.attention("ecp", q, k, v, scale=scale, half_segment=half_segment, partial=partial), names
    )
    if out is not None:
        assert kind == "ok" and out.shape == Q.shape and np.isfinite(out).all()
    mask = outcome(
        lambda: minicp.attention_mask("ecp", half_segment * 2, half_segment=half_segment, partial=partial),
        names + ["n"],
    )
    if mask is not None:
        assert mask.dtype == bool and mask.diagonal().all() and not np.triu(mask, 1).any()


@FUZZ
@given(
    st.sampled_from(minicp.ARCHITECTURES),
    ints(1, 32),
    ints(0, 4),
    ints(1, 3),
    st.sampled_from(["computed", "unmasked", "all", 3]),
    st.one_of(st.booleans(), hostile),
)
def test_steps_and_receptive_fields(arch, n, layers, heads, count, per_layer):
    names = [
        "seq_len",
        "layers",
        "heads",
        "count",
        "per_layer",
        "latent",
        "segment",
        "half_segment",
        "group",
        "split",
        "compressed",
        "partial",
        "tokens",
    ]
    total = outcome(
        lambda: minicp.count_attention_steps(
            arch, seq_len=n, layers=layers, heads=heads, count=count, per_layer=per_layer
        ),
        names,
    )
    if total is not None:
        values = total if per_layer else [total]
        assert all(isinstance(x, int) and x >= 0 for x in values)
    rf = outcome(lambda: minicp.receptive_field(arch, seq_len=n, layers=layers), names)
    if rf is not None:
        m = rf.mask()
        assert m.shape[1] == n and m.any(axis=1).all()


@FUZZ
@given(
    st.sampled_from(minicp.ARCHITECTURES),
    ints(1, 16),
    ints(1, 4),
    st.dictionaries(
        st.sampled_from(
            ["latent", "compressed", "split", "half_segment", "segment", "group", "partial", "shift", "layer"]
        ),
        st.one_of(st.integers(0, 8), hostile, st.sampled_from(["varlen", "roll"])),
        max_size=3,
    ),
)
def test_patterns(arch, n, heads, args):
    names = ["n", "heads", "pattern argument", "seq_len", "history"] + list(args)
    pats = outcome(lambda: minicp.patterns(arch, n, heads, **args), names)
    if pats is not None:
        assert len(pats) == heads
        for p in pats:
            m = p.mask()
            assert m.shape == (n, n) and not np.triu(m, 1).any()


@FUZZ
@given(
    ints(0, 4),
    st.one_of(st.floats(0, 3), hostile),
    st.one_of(st.none(), ints(1, 20)),
    st.one_of(st.floats(0, 0.99), hostile),
    st.one_of(st.none(), ints(0, 10), st.just(11)),
    st.sampled_from([np.array([1, 2, 3]), np.array([[1, 2]]), np.array([]), np.array([1.5]), np.array([12]), "ab"]),
)
def test_generate(max_new, temperature, top_k, filter_thres, eos, prompt):
    names = ["max_new_tokens", "temperature", "top_k", "filter_thres", "eos", "prompt", "vocab"]
    out = outcome(
        lambda: minicp.generate(
            PARAMS, prompt, TINY, max_new, temperature=temperature, top_k=top_k, filter_thres=filter_thres, eos=eos
        ),
        names,
    )
    if out is not None:
        assert out.dtype == np.int64 and out.shape[-1] <= max_new and ((0 <= out) & (out < TINY.vocab)).all()


@FUZZ
@given(
    st.sampled_from([np.zeros((2, 5)), np.array([[0.0, np.nan]]), np.array([[np.inf, 1.0]]), np.zeros(3)]),
    st.one_of(st.floats(0, 5), hostile),
    st.one_of(st.none(), ints(1, 5)),
    st.one_of(st.floats(0, 1), hostile),
)
def test_sampling_pieces(logits, temperature, k, filter_thres):
    tok = outcome(
        lambda: sample_next(logits, np.random.default_rng(0), temperature=temperature, k=k),
        ["logits", "temperature", "k"],
    )
    if tok is not None:
        assert np.isfinite(logits).all() and ((0 <= tok) & (tok < logits.shape[-1])).all()
    kk = outcome(lambda: top_k_count(11, filter_thres, k), ["filter_thres", "top_k"])
    if kk is not None:
        assert 1 <= kk <= 11


@FUZZ
@given(ints(1, 8), st.one_of(st.none(), ints(1, 8)), st.sampled_from(["every_token_once", "official", "x"]))
def test_perplexity(batch, stride, method):
    ids = np.arange(40) % TINY.vocab
    names = ["batch", "stride", "method"]
    ppl = outcome(lambda: minicp.perplexity(PARAMS, ids, TINY, method=method, batch=batch, stride=stride), names)
    if ppl is not None:
        assert math.isfinite(ppl) and ppl >= 1
    ppl = outcome(lambda: perplexity_official(PARAMS, ids, TINY, batch=batch), names)
    assert ppl is None or (math.isfinite(ppl) and ppl >= 1)


TRAIN_FIELDS = dict(
    steps=ints(0, 3),
    batch=ints(1, 3),
    grad_accum=ints(1, 2),
    lr=reals(1e-5, 1e-2),
    eps=reals(1e-9, 1e-6),
    weight_decay=reals(0, 0.5),
    clip=st.one_of(st.none(), reals(0, 2)),
    seed=ints(0, 3),
    sampling=st.sampled_from(["chunks", "random", "x"]),
    eval_every=ints(0, 2),
)


@settings(FUZZ, max_examples=40)
@given(st.fixed_dictionaries({}, optional=TRAIN_FIELDS))
def test_train_config_and_train(fields):
    tcfg = outcome(lambda: minicp.TrainConfig(**fields), list(fields) + ["betas"])
    if tcfg is None:
        return
    assert all(math.isfinite(x) for x in (tcfg.lr, tcfg.eps, tcfg.weight_decay)) and tcfg.lr > 0
    tcfg = tcfg.replace(steps=min(tcfg.steps, 2), batch=min(tcfg.batch, 2), grad_accum=1)
    data = np.arange(200) % TINY.vocab
    res = outcome(lambda: minicp.train(TINY, data, tcfg, progress=False), ["lr", "training diverged"])
    if res is not None:
        assert res.step == tcfg.steps and all(math.isfinite(h["loss"]) for h in res.history)


@FUZZ
@given(
    st.sampled_from(["ok", "nan", "complex", "int8", "str"]),
    st.one_of(st.sampled_from(["float32", "float64", "int8"]), hostile),
)
def test_load_official_state_dict(kind, dtype):
    sd = {k: np.array(v) for k, v in minicp.flatten(PARAMS).items()}
    if kind == "nan":
        sd["to_logits.1.bias"][0] = np.nan
    elif kind == "complex":
        sd["to_logits.1.bias"] = sd["to_logits.1.bias"] + 1j
    elif kind == "int8":
        sd["token_emb.weight"] = sd["token_emb.weight"].astype(np.int8)
    elif kind == "str":
        sd["token_emb.weight"] = "weights"
    out = outcome(lambda: minicp.load_official_state_dict(sd, TINY, dtype=dtype), ["dtype", "state_dict"])
    if out is not None:
        assert kind == "ok" and all(np.isfinite(v).all() for v in minicp.flatten(out).values())


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "c.npz"
    minicp.train(
        TINY,
        np.arange(100) % 11,
        minicp.TrainConfig(steps=1, batch=1, grad_accum=1),
        checkpoint=str(path),
        progress=False,
    )
    return path.read_bytes()


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4), st.integers(0, 10**6))
def test_corrupt_checkpoints(tmp_path_factory, checkpoint_bytes, flips, cut):
    """Flipped bytes and truncation: the file loads (and passes its own checks) or is a CheckpointError."""
    data = bytearray(checkpoint_bytes)
    for at, value in flips:
        data[at % len(data)] = value
    path = tmp_path_factory.getbasetemp() / "corrupt.npz"
    path.write_bytes(bytes(data[: len(data) - cut % 64]))
    ck = outcome(lambda: load_checkpoint(str(path)), ["checkpoint"])
    if ck is not None:
        assert all(np.isfinite(v).all() for v in minicp.flatten(ck["params"]).values())
        assert ck["step"] >= 0 and isinstance(ck["history"], list)


# ---- bounds, overflows and writers (docs/inputs.md#bounded-work, #non-finite-values, #writing-files) ------

LIMITS = ["MAX_PARAMS", "MAX_BATCH", "MAX_ACTIVATION_BYTES", "MAX_GENERATED_TOKENS", "MAX_SCORE_ENTRIES", "MAX_WORK"]
ABSURD = st.sampled_from([10**6, 10**7, 2**22, 2**30])


def _absurd_call(what, arch, big):
    """One request that a factor ``big`` makes absurd; the tokens are a zero-size broadcast view."""
    cfg = minicp.ModelConfig(arch=arch, vocab=16, dim=8, heads=2, layers=1, seq_len=16)
    tokens = lambda b, t: np.broadcast_to(np.zeros((), np.int64), (b, t))
    if what == "seq_len":
        cfg = cfg.replace(seq_len=big * 1024)
        return lambda: minicp.forward(minicp.init_params(cfg), tokens(1, cfg.seq_len), cfg)
    if what == "batch":
        return lambda: minicp.loss(minicp.init_params(cfg), tokens(big, 17), cfg)
    if what == "layers":
        return lambda: minicp.init_params(cfg.replace(layers=4 * big))
    if what == "generate":
        return lambda: minicp.generate(minicp.init_params(cfg), [1], cfg, big)
    if what == "train_batch":
        return lambda: minicp.TrainConfig(batch=big)
    q = np.broadcast_to(np.ones((), np.float32), (1, big // 2**10 + 1, 2**12, 4))
    return lambda: minicp.attention("transformer", q, q, q)


@FUZZ
@given(
    st.sampled_from(["seq_len", "batch", "layers", "generate", "train_batch", "attention"]),
    st.sampled_from(["transformer", "ecp", "longlora"]),
    ABSURD,
)
def test_absurd_sizes_fail_fast_naming_the_limit(what, arch, big):
    with time_limit(1):
        with pytest.raises(ValueError) as e:
            _absurd_call(what, arch, big)()
    assert any(f"({limit})" in str(e.value) for limit in LIMITS), str(e.value)
    assert "raise minicp.validate." in str(e.value)


@FUZZ
@given(
    st.sampled_from(minicp.ARCHITECTURES),
    st.integers(0, 45),
    st.sampled_from(["float16", "float32", "float64"]),
    st.integers(0, 3),
)
def test_overflowing_head_level_inputs_raise_or_stay_finite(arch, exponent, dtype, seed):
    sizes = {"perceiver_ar": dict(latent=8), "double": dict(latent=8), "compressed": dict(latent=8, compressed=4),
             "s_split": dict(latent=8, split=4), "ecp": dict(half_segment=4), "longlora": dict(group=4)}  # fmt: skip
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((1, 2, 16, 4)) * 10.0**exponent for _ in range(3))
    if not np.isfinite(np.asarray(q, dtype)).all():
        return  # the input itself is no longer finite in this dtype: refused by the input check, tested above
    q, k, v = (a.astype(dtype) for a in (q, k, v))
    out = outcome(lambda: minicp.attention(arch, q, k, v, **sizes.get(arch, {})), ["attention output", "q is float16"])
    assert out is None or dtype != "float16"  # float16 is refused (the reference computes in the inputs' dtype)
    if out is not None:
        assert np.isfinite(out).all()


@FUZZ
@given(st.integers(0, 38), st.sampled_from(["float32", "float64"]), st.sampled_from(["weights", "logits"]))
def test_overflowing_models_raise_or_stay_finite(exponent, dtype, where):
    flat = {k: np.array(v, dtype=dtype) for k, v in minicp.flatten(PARAMS).items()}
    if where == "weights":
        for name in ("layers.0.1.fn.net.3.weight", "to_logits.1.weight"):
            flat[name] *= 10.0**exponent
    else:
        flat["to_logits.1.bias"][::2] = 3 * 10.0**exponent
        flat["to_logits.1.bias"][1::2] = -3 * 10.0**exponent
    params, tokens = minicp.unflatten(flat), np.arange(18).reshape(2, 9) % 11
    names = ["logits", "loss", "gradient of"]
    for value in (
        outcome(lambda: minicp.forward(params, tokens[:, :-1], TINY), names),
        outcome(lambda: minicp.loss(params, tokens, TINY), names),
    ):
        assert value is None or np.isfinite(value).all()
    result = outcome(lambda: value_and_grad(params, tokens, TINY), names)
    if result is not None:
        assert np.isfinite(result[0]) and all(np.isfinite(g).all() for g in minicp.flatten(result[1]).values())


@settings(FUZZ, max_examples=10)
@given(st.integers(0, 3), st.booleans())
def test_a_held_checkpoint_is_never_written_by_another_writer(tmp_path_factory, seed, resume):
    path = str(tmp_path_factory.mktemp("held") / "c.npz")
    tcfg = TrainConfig(steps=1, batch=2, grad_accum=1, seed=seed)
    if resume:
        train(TINY, np.arange(200) % 11, tcfg, checkpoint=path, progress=False)
    before = open(path, "rb").read() if resume else None
    refused = []

    def second_writer():  # another thread: its own lock attempt, refused while this thread holds it
        try:
            args = dict(checkpoint=path, resume=resume, overwrite=not resume, progress=False)
            train(TINY, np.arange(200) % 11, tcfg.replace(steps=2), **args)
        except files.FileInUseError as e:
            refused.append(f"in use by process {os.getpid()}" in str(e))

    with files.locked(path):
        thread = threading.Thread(target=second_writer)
        thread.start()
        thread.join()
    assert refused == [True]
    assert (open(path, "rb").read() == before) if resume else not os.path.exists(path)


def test_fuzz_ran_enough_examples():
    """Runs last in this module (pytest keeps file order within a worker): the example count is reported."""
    if EXAMPLES["count"] == 0:
        pytest.skip("the fuzz tests ran in another worker")
    print(f"fuzz examples: {EXAMPLES['count']}")
