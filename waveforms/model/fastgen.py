"""Cached WaveNet inference: per-layer queues and fused weights in a compiled loop.

Each layer keeps a ring buffer of its last ``(kernel-1)·dilation`` inputs, so a
new sample costs one pass through the layers (O(layers · channels²)), never a
forward pass over the receptive field. One compiled loop (numba) runs the
network, :func:`_block`, over a block of streams in lockstep: one stream per
block (loop products) below ``BLOCK_MIN`` streams, else blocks of streams with
one GEMM per layer. Streams are independent and blocks run in parallel across cores.

Zero-initialised buffers reproduce Keras's causal zero padding exactly, so the
next-sample distribution equals the full model's on the same context.

The kernels are compiled with ``cache=True``, so only a machine's first generation pays for compiling them.
numba writes the machine code next to this source (``waveforms/model/__pycache__``) when that folder is
writable. When it is not (a read-only install, a container image), the cache goes to ``NUMBA_CACHE_DIR``,
which defaults here to ``$XDG_CACHE_HOME/waveforms/numba`` (``~/.cache/waveforms/numba``,
:func:`configure_cache`). A ``NUMBA_CACHE_DIR`` set by the user is always kept.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

PACKAGE = Path(__file__).resolve().parent


def default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "waveforms" / "numba"


def _writable(folder: Path) -> bool:
    """Whether numba could write its cache files in ``folder/__pycache__``."""
    cache = folder / "__pycache__"
    if cache.exists():
        return os.access(cache, os.W_OK | os.X_OK)
    return os.access(folder, os.W_OK | os.X_OK)


def configure_cache(package: Path = PACKAGE) -> str:
    """Choose the cache folder before kernels compile; returns it ("" = next to the source)."""
    chosen = os.environ.get("NUMBA_CACHE_DIR", "")
    if not chosen and not _writable(package):
        folder = default_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            return ""  # nowhere to write: numba compiles in memory, as without a cache
        chosen = os.environ["NUMBA_CACHE_DIR"] = str(folder)
    if chosen and "numba" in sys.modules:  # numba read its config at import: tell it too
        sys.modules["numba"].config.CACHE_DIR = chosen
    return chosen


configure_cache()  # before numba loads: a writable kernel cache

import numba  # noqa: E402
import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from waveforms.model.spec import Residual, read, spec  # noqa: E402

F32 = np.float32
BLOCK_MIN = 8  # from this many streams, step them in blocks with one matrix product (GEMM) per layer


@dataclass
class FastWeights:
    """The model's weights, fused per layer, as contiguous float32 arrays."""

    w0: np.ndarray  # (k0, Q, R) initial causal conv over one-hot codes
    b0: np.ndarray  # (R,)
    wd: np.ndarray  # (L, k, R, 2D) dilated conv, [filter | gate] outputs
    bd: np.ndarray  # (L, 2D)
    wsr: np.ndarray  # (L, D, S + R) skip and residual 1x1s side by side
    bsr: np.ndarray  # (L, S + R)
    w1: np.ndarray  # (S, S)
    b1: np.ndarray
    w2: np.ndarray  # (S, Q)
    b2: np.ndarray
    dilations: np.ndarray  # (L,) int64
    genre_bias: np.ndarray | None  # (G, L, 2D): the genre embedding through each layer's conditioning

    @classmethod
    def from_keras(cls, model, cfg) -> "FastWeights":
        """Read and fuse the weights of a Keras WaveNet built from ``cfg`` (see :mod:`waveforms.model.spec`)."""
        sp = spec(cfg)
        c = lambda a: np.ascontiguousarray(a, dtype=F32)  # noqa: E731
        stack = lambda arrays, axis=0: c(np.stack(arrays, axis=axis))  # noqa: E731
        w0, b0 = read(model, sp.input_conv)
        (w1,), b1 = read(model, sp.head_1)
        (w2,), b2 = read(model, sp.logits)
        dilated = [read(model, layer.dilated) for layer in sp.residuals]
        side = [_side_outputs(model, layer) for layer in sp.residuals]
        genre_bias = None
        if sp.genre_embedding:
            (emb,) = read(model, sp.genre_embedding)  # (G, E)
            genre_bias = stack([emb @ read(model, layer.cond)[0] for layer in sp.residuals if layer.cond], axis=1)
        return cls(
            w0=c(w0), b0=c(b0), wd=stack([k for k, _ in dilated]), bd=stack([b for _, b in dilated]),
            wsr=stack([k for k, _ in side]), bsr=stack([b for _, b in side]),
            w1=c(w1), b1=c(b1), w2=c(w2), b2=c(b2),
            dilations=np.asarray(sp.dilations, dtype=np.int64), genre_bias=genre_bias,
        )


def _side_outputs(model, layer: Residual) -> tuple[np.ndarray, np.ndarray]:
    """A layer's skip and residual 1x1s side by side: kernel (D, S + R), bias (S + R,).

    The last layer has no residual 1x1; zeros stand in (its residual output feeds nothing).
    """
    (ks,), bs = read(model, layer.skip)
    if layer.residual is not None:
        (kr,), br = read(model, layer.residual)
    else:
        r = layer.dilated.kernel[1]  # the residual stream's channels
        kr, br = np.zeros((ks.shape[0], r), F32), np.zeros(r, F32)
    return np.concatenate([ks, kr], axis=1), np.concatenate([bs, br])


class State:
    """Per-stream cache: ring buffers of every layer's past inputs and the last codes."""

    def __init__(self, fw: FastWeights, streams: int, genres: np.ndarray | None = None):
        k = fw.wd.shape[1]
        lengths = (k - 1) * fw.dilations
        self.buf_len = np.maximum(lengths, 1).astype(np.int64)
        self.buf_off = np.concatenate([[0], np.cumsum(self.buf_len)[:-1]]).astype(np.int64)
        r = fw.wd.shape[2]
        self.bufs = np.zeros((int(self.buf_len.sum()), streams, r), dtype=F32)  # time slot, stream, channel
        self.history = np.full((streams, max(fw.w0.shape[0] - 1, 1)), -1, dtype=np.int64)
        self.t = 0  # time index of the next input
        bias = np.broadcast_to(fw.bd, (streams, *fw.bd.shape)).copy()
        if genres is not None:
            if fw.genre_bias is None:
                raise ValueError("this model is not conditioned on genre")
            bias += fw.genre_bias[np.asarray(genres, dtype=np.int64)]
        self.bias = np.ascontiguousarray(bias, dtype=F32)  # (K, L, 2D)
        self.streams = streams


class Net(NamedTuple):
    """The network as the kernels read it: :class:`FastWeights`'s arrays with the streams' own dilated-conv
    biases (``bias``: :attr:`State.bias`, the genre's conditioning added)."""

    w0: np.ndarray
    b0: np.ndarray
    wd: np.ndarray
    bias: np.ndarray  # (K, L, 2D)
    wsr: np.ndarray
    bsr: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    dil: np.ndarray


class Cache(NamedTuple):
    """The streams' state the kernels update in place (:class:`State`'s arrays and the last logits)."""

    buf_off: np.ndarray
    buf_len: np.ndarray
    bufs: np.ndarray
    history: np.ndarray
    last_logits: np.ndarray  # (K, Q)


class Steps(NamedTuple):
    """One call's work: ``n_forced`` known inputs, then ``n_steps - n_forced`` sampled ones, from time ``t0``."""

    forced: np.ndarray  # (K, max(n_forced, 1)) int64
    n_forced: int
    n_steps: int
    t0: int
    temperature: float
    top_p: float
    uniforms: np.ndarray  # (K, n_new) float64
    out: np.ndarray  # (K, n_new) int64: the sampled codes
    record: bool
    logits_out: np.ndarray  # (K, n_steps, Q) when ``record``


# tanh(x) ≈ x·P(x²)/Q(x²) on [-9, 9] (max error 3e-7, below float32 resolution near ±1),
# fitted by least squares; pure arithmetic, so the compiler vectorises the gate loops.
_P = (0.9999999230898629, 0.13384781653812403, 0.0035002851223899047, 2.0695279278806042e-05, 1.34901663918552e-08)
_Q = (1.0, 0.46718084657958076, 0.025894250311872164, 0.00032937057922719415, 7.828650972022243e-07)


@numba.njit(fastmath=True, cache=True, inline="always")
def _tanh(x):
    x = min(max(x, np.float32(-9.0)), np.float32(9.0))
    x2 = x * x
    num = np.float32(_P[0]) + x2 * (np.float32(_P[1]) + x2 * (np.float32(_P[2]) + x2 * (np.float32(_P[3]) + x2 * np.float32(_P[4]))))
    den = np.float32(_Q[0]) + x2 * (np.float32(_Q[1]) + x2 * (np.float32(_Q[2]) + x2 * (np.float32(_Q[3]) + x2 * np.float32(_Q[4]))))
    return x * num / den


@numba.njit(fastmath=True, cache=True, inline="always")
def _gate(f, g):
    """tanh(f) · sigmoid(g), with sigmoid(g) = (1 + tanh(g/2)) / 2."""
    return _tanh(f) * (np.float32(0.5) + np.float32(0.5) * _tanh(np.float32(0.5) * g))


@numba.njit(fastmath=False, cache=True)
def _sample(logits, temperature, top_p, u):
    """Exact sample from softmax(logits / temperature) by inverse CDF; argmax when temperature is 0.

    With ``top_p < 1`` (nucleus sampling) the draw is from the most probable codes whose mass
    first reaches ``top_p`` (ties at the boundary all kept), renormalised; the others get 0.
    """
    q = logits.shape[0]
    best = 0
    for j in range(1, q):
        if logits[j] > logits[best]:
            best = j
    if temperature <= 0.0:
        return best
    top = logits[best]
    total = 0.0
    p = np.empty(q, dtype=np.float64)
    for j in range(q):
        p[j] = np.exp((np.float64(logits[j]) - top) / temperature)
        total += p[j]
    floor = 0.0
    if top_p < 1.0:
        ranked = np.sort(p)
        mass = 0.0
        for j in range(q - 1, -1, -1):
            mass += ranked[j]
            if mass >= top_p * total:
                floor = ranked[j]
                break
        total = 0.0
        for j in range(q):
            if p[j] < floor:
                p[j] = 0.0
            total += p[j]
    target = u * total
    cdf = 0.0
    for j in range(q):
        cdf += p[j]
        if cdf > target:
            return j
    return best


@numba.njit(fastmath=True, cache=True, inline="always")
def _product_add(out, a, w, tmp, loops):
    """out += a @ w for a (b, n), w (n, m): with ``loops`` row by row, skipping zero inputs; else one GEMM into tmp.

    One stream at a time, the loops beat a BLAS call on these small matrices;
    over a block of streams, the GEMM wins.
    """
    if loops:
        for u in range(a.shape[0]):
            for i in range(w.shape[0]):
                ai = a[u, i]
                if ai != 0.0:
                    for j in range(w.shape[1]):
                        out[u, j] += ai * w[i, j]
    else:
        np.dot(a, w, tmp)
        out += tmp


@numba.njit(fastmath=True, cache=True)
def _block(s0, s1, dot_min, job, net, cache):
    """Advance streams ``s0:s1`` in lockstep by ``n_steps`` inputs: the network, once, for generation.

    Inputs ``i < n_forced`` come from ``forced`` (priming); later ones are
    sampled from the logits of the previous input and stored in ``out``. The
    logits after the last input stay in ``last_logits``; with ``record`` every
    step's logits also go to ``logits_out``. Each layer's products run as loops
    for blocks of fewer than ``dot_min`` streams and as one GEMM over the block otherwise.
    """
    forced, n_forced, n_steps, t0, temperature, top_p, uniforms, out, record, logits_out = job
    w0, b0, wd, bias, wsr, bsr, w1, b1, w2, b2, dil = net
    buf_off, buf_len, bufs, history, last_logits = cache
    b = s1 - s0
    loops = b < dot_min
    k0, _, r = w0.shape
    n_layers, k, _, two_d = wd.shape
    d_ch = two_d // 2
    s_ch = w1.shape[0]
    q = w2.shape[1]
    x = np.empty((b, r), dtype=np.float32)
    pre = np.empty((b, two_d), dtype=np.float32)
    z = np.empty((b, d_ch), dtype=np.float32)
    sr = np.empty((b, s_ch + r), dtype=np.float32)
    skip = np.empty((b, s_ch), dtype=np.float32)
    h = np.empty((b, s_ch), dtype=np.float32)
    logits = np.empty((b, q), dtype=np.float32)
    tmp_pre, tmp_sr = np.empty_like(pre), np.empty_like(sr)  # GEMM outputs (blocks of dot_min streams or more)
    tmp_h, tmp_logits = np.empty_like(h), np.empty_like(logits)
    logits[:, :] = last_logits[s0:s1]
    for i in range(n_steps):
        t = t0 + i
        for u in range(b):
            s = s0 + u
            if i < n_forced:
                code = forced[s, i]
            else:
                code = _sample(logits[u], temperature, top_p, uniforms[s, i - n_forced])
                out[s, i - n_forced] = code
            for j in range(r):  # the first causal conv over one-hot codes: one kernel row per tap
                x[u, j] = b0[j] + w0[k0 - 1, code, j]
            for m in range(1, k0):
                past = history[s, m - 1]
                if past >= 0:
                    for j in range(r):
                        x[u, j] += w0[k0 - 1 - m, past, j]
            for m in range(k0 - 2, 0, -1):
                history[s, m] = history[s, m - 1]
            history[s, 0] = code
        skip[:, :] = 0.0
        for layer in range(n_layers):
            d = dil[layer]
            off = buf_off[layer]
            blen = buf_len[layer]
            for u in range(b):  # dilated conv (+ genre bias) over this input and the buffered past ones
                for j in range(two_d):
                    pre[u, j] = bias[s0 + u, layer, j]
            _product_add(pre, x, wd[layer, k - 1], tmp_pre, loops)
            for m in range(1, k):
                _product_add(pre, bufs[off + (t - m * d) % blen, s0:s1], wd[layer, k - 1 - m], tmp_pre, loops)
            bufs[off + t % blen, s0:s1] = x
            for u in range(b):  # gate, then the skip and residual 1x1s side by side
                for j in range(d_ch):
                    z[u, j] = _gate(pre[u, j], pre[u, d_ch + j])
                for j in range(s_ch + r):
                    sr[u, j] = bsr[layer, j]
            _product_add(sr, z, wsr[layer], tmp_sr, loops)
            for u in range(b):
                for j in range(s_ch):
                    skip[u, j] += sr[u, j]
                for j in range(r):
                    x[u, j] += sr[u, s_ch + j]
        for u in range(b):  # relu, 1x1, relu, 1x1 to logits
            for j in range(s_ch):
                skip[u, j] = max(skip[u, j], np.float32(0.0))
                h[u, j] = b1[j]
        _product_add(h, skip, w1, tmp_h, loops)
        for u in range(b):
            for j in range(s_ch):
                h[u, j] = max(h[u, j], np.float32(0.0))
            for j in range(q):
                logits[u, j] = b2[j]
        _product_add(logits, h, w2, tmp_logits, loops)
        if record:
            for u in range(b):
                for j in range(q):
                    logits_out[s0 + u, i, j] = logits[u, j]
    last_logits[s0:s1] = logits


@numba.njit(parallel=True, cache=True)
def _run_blocks(n_blocks, dot_min, job, net, cache):
    """Split the streams into ``n_blocks`` blocks run in parallel by :func:`_block`."""
    streams = job.forced.shape[0]
    for blk in numba.prange(n_blocks):
        s0 = blk * streams // n_blocks
        s1 = (blk + 1) * streams // n_blocks
        if s1 > s0:
            _block(s0, s1, dot_min, job, net, cache)


class Sampler:
    """Incremental generation over ``streams`` streams sharing one model."""

    def __init__(self, fw: FastWeights, streams: int = 1, genres: np.ndarray | None = None):
        self.fw = fw
        self.state = State(fw, streams, genres)
        self.last_logits = np.zeros((streams, fw.w2.shape[1]), dtype=F32)
        self.fed = False

    def net(self) -> Net:
        fw = self.fw
        return Net(fw.w0, fw.b0, fw.wd, self.state.bias, fw.wsr, fw.bsr, fw.w1, fw.b1, fw.w2, fw.b2, fw.dilations)

    def _advance(self, forced: np.ndarray, n_new: int, temperature: float, top_p: float,
                 uniforms: np.ndarray | None, record: bool) -> tuple[np.ndarray, np.ndarray | None]:
        fw, st = self.fw, self.state
        k = st.streams
        forced = np.ascontiguousarray(np.asarray(forced, dtype=np.int64).reshape(k, -1))
        n_forced = forced.shape[1]
        if n_new and not (self.fed or n_forced):
            raise ValueError("feed at least one code before sampling")
        n_steps = n_forced + n_new
        if uniforms is None:
            uniforms = np.zeros((k, max(n_new, 1)))
        if n_forced == 0:
            forced = np.zeros((k, 1), dtype=np.int64)
        out = np.zeros((k, max(n_new, 1)), dtype=np.int64)
        logits_out = np.zeros((k, n_steps, fw.w2.shape[1]) if record else (1, 1, 1), dtype=F32)
        job = Steps(forced, n_forced, n_steps, st.t, float(temperature), float(top_p),
                    np.ascontiguousarray(uniforms, dtype=np.float64), out, record, logits_out)
        # Fewer than BLOCK_MIN streams: one block per stream, in parallel, with loop products;
        # more: up to one block per thread, each with one GEMM per layer.
        n_blocks = k if k < BLOCK_MIN else min(numba.get_num_threads(), k // BLOCK_MIN)
        # Each block thread calls BLAS on small matrices: BLAS's own threads would only contend.
        with threadpool_limits(limits=1, user_api="blas"):
            _run_blocks(n_blocks, BLOCK_MIN, job, self.net(), Cache(st.buf_off, st.buf_len, st.bufs, st.history,
                                                                    self.last_logits))
        st.t += n_steps
        self.fed = self.fed or n_steps > 0
        return out[:, :n_new].astype(np.uint8), (logits_out if record else None)

    def feed(self, codes: np.ndarray, record: bool = False) -> np.ndarray | None:
        """Push known codes ``(streams, n)`` through the cache; with ``record``, return the logits after each."""
        _, logits = self._advance(codes, 0, 1.0, 1.0, None, record)
        return logits

    def sample_with(self, uniforms: np.ndarray, temperature: float, top_p: float = 1.0) -> np.ndarray:
        """One new code per column of ``uniforms`` ``(streams, n)`` in [0, 1), each fed back in."""
        out, _ = self._advance(np.zeros((self.state.streams, 0)), uniforms.shape[1], temperature, top_p, uniforms,
                               False)
        return out


def sample_code(logits: np.ndarray, temperature: float, u: float, top_p: float = 1.0) -> int:
    """The sampling rule of the fast path, for one distribution (used by the naive reference)."""
    return int(_sample(np.ascontiguousarray(logits, dtype=F32), float(temperature), float(top_p), float(u)))
