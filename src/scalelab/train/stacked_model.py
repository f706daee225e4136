"""k decoder LMs of one shape as one set of batched weights: the engine of stacked training.

A learning-rate sweep trains k copies of one shape on the same batches. Running them as
one model whose every weight has a leading member axis (``[k, *shape]``) turns k small
matmuls into one batched matmul (``bmm``), k sets of small elementwise kernels into one
set of k-times-larger ones and k optimizer calls into a few. Measured on a 2-core CPU
at d_model 64-128 (``bench/stacked_sweep.py``): per member the matmuls cost the same and
the elementwise work about the same on one thread; the gain is in two threads (larger
kernels split better), in the per-run costs paid once, and in the attention kernel
(:func:`causal_attention`).

:class:`StackedDecoder` is :class:`~scalelab.models.decoder.DecoderLM`'s forward pass
written over such weights (llama and gpt2, dropout 0), with the same operations in the
same precision: ``bmm`` where the single model has ``F.linear`` (both bf16 under
autocast), the same RMSNorm/LayerNorm and rotary, causal softmax attention (the k x B
sequences form one batch) and the same chunked vocabulary loss
(:func:`stacked_linear_cross_entropy`, the batched twin of
:func:`scalelab.models.loss.linear_cross_entropy`). Members never mix: member i's loss
depends on member i's weights only, so the gradient of the summed losses is each
member's own gradient.

Memory layout: every member's weights live in one row of a flat fp32 buffer ``flat``
[k, P] (matrices first, then vectors) and their gradients in ``flat_grad`` [k, P]; the
per-name parameters are views into them. So a member's global gradient norm is one
reduction over its row, clipping one multiply, and AdamW (torch's fused kernel, one
parameter group per member and decay class) works on two contiguous rows per member.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from scalelab.models.config import ModelConfig
from scalelab.models.decoder import DecoderLM, apply_rope, rope_tables
from scalelab.models.loss import DEFAULT_CHUNK, IGNORE_INDEX, LOG2E


def _chunk_loss_and_grad(
    logits: torch.Tensor,
    labels: torch.Tensor,
    grad_dtype: torch.dtype,
    scale: float,
    all_valid: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-member summed token loss [k] and ``scale`` x (softmax - one-hot) [k, n, V].

    ``logits`` [k, n, V], ``labels`` [n] shared by the members. The same in-place steps
    as ``scalelab.models.loss._chunk_loss_and_grad_eager`` (one exp2 per logit), batched.
    """
    k, n, _ = logits.shape
    lf = logits.float() if logits.dtype != torch.float32 else logits  # [k, n, V], owned
    safe = labels.clamp_min(0).view(1, n, 1).expand(k, n, 1)  # [k, n, 1]
    target = lf.gather(2, safe)  # [k, n, 1]
    row_max = lf.amax(dim=2, keepdim=True)  # [k, n, 1]
    lf.sub_(row_max).mul_(LOG2E).exp2_()  # exp(logit - max)
    denom = lf.sum(dim=2, keepdim=True)  # [k, n, 1]
    token_loss = (row_max + denom.log() - target).squeeze(2)  # [k, n] = lse - target
    row_scale = denom.reciprocal().mul_(scale)  # [k, n, 1]
    minus_one = torch.full_like(target, -scale)
    if not all_valid:
        valid = (labels != IGNORE_INDEX).view(1, n, 1)
        token_loss = token_loss * valid.squeeze(2)
        row_scale = row_scale * valid
        minus_one = minus_one * valid
    lf.mul_(row_scale).scatter_add_(2, safe, minus_one)
    return token_loss.sum(1), lf.to(grad_dtype)


class _StackedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk, dtype):  # type: ignore[override]
        # hidden [k, N, d], weight [k, V, d], labels [N] -> mean loss per member [k].
        k, n_tok, _ = hidden.shape
        h, w = hidden.to(dtype), weight.to(dtype)
        n_valid = int((labels != IGNORE_INDEX).sum())
        inv = 1.0 / max(n_valid, 1)
        fold = inv if dtype != torch.float16 else 1.0  # as linear_cross_entropy does
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(h) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        grad_w = grad_w if need_w else None
        loss = torch.zeros(k, dtype=torch.float32, device=hidden.device)
        wt = w.transpose(1, 2)  # [k, d, V]
        for start in range(0, n_tok, chunk):
            stop = min(start + chunk, n_tok)
            hs = h[:, start:stop]  # [k, n, d]
            part, g = _chunk_loss_and_grad(
                torch.bmm(hs, wt), labels[start:stop], dtype, fold, n_valid == n_tok
            )
            loss += part
            if need_h:
                grad_h[:, start:stop] = torch.bmm(g, w)  # [k, n, d]
            if need_w:
                if dtype == torch.float32:
                    grad_w.baddbmm_(g.transpose(1, 2), hs)  # [k, V, d]
                else:  # bf16 product, accumulated in fp32
                    grad_w.add_(torch.bmm(g.transpose(1, 2), hs))
        ctx.save_for_backward(grad_h, grad_w)
        ctx.hidden_dtype, ctx.weight_dtype = hidden.dtype, weight.dtype
        ctx.post_scale = inv / fold
        return loss * inv

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        grad_h, grad_w = ctx.saved_tensors
        grad_out = (grad_out * ctx.post_scale).view(-1, 1, 1)  # [k, 1, 1]
        unit = bool((grad_out == 1.0).all())  # the usual sum of the losses: skip the passes
        gh = gw = None
        if grad_h is not None:
            gh = (grad_h if unit else grad_h * grad_out.to(grad_h.dtype)).to(ctx.hidden_dtype)
        if grad_w is not None:
            gw = (grad_w if unit else grad_w * grad_out).to(ctx.weight_dtype)
        return gh, gw, None, None, None


def stacked_linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *, chunk: int = DEFAULT_CHUNK
) -> torch.Tensor:
    """Mean cross-entropy of each member: ``hidden`` [k, N, d], ``weight`` [k, V, d],
    ``labels`` [N] (-100 ignored) -> [k] fp32; member i equals
    ``linear_cross_entropy(hidden[i], weight[i], labels)``. ``chunk`` tokens of every
    member at a time: at k = 4, V = 1024 chunks of 512 ran as fast as 1024 and 1.3x as
    fast as chunks of 128 (measured here), though [k, 512, V] is k times one model's.
    """
    device_type = hidden.device.type
    dtype = (
        torch.get_autocast_dtype(device_type)
        if torch.is_autocast_enabled(device_type)
        else hidden.dtype
    )
    return _StackedLinearCrossEntropy.apply(hidden, weight, labels, chunk, dtype)


class _CausalAttention(torch.autograd.Function):
    """Softmax attention a chunk of heads at a time, so that each chunk's [c, T, T] scores
    and their gradient stay in cache; only the probabilities (in the matmul dtype) are
    kept for backward, which is the usual one: dS = P * (dP - rowsum(dP * P)) (the
    softmax Jacobian; the same algebra as FlashAttention-2's backward, Dao 2023,
    arXiv:2307.08691, Algorithm 2, without its recomputation)."""

    @staticmethod
    def forward(ctx, q, k, v, bias):  # type: ignore[override]
        n, h, t, d = q.shape  # q, k, v [n, H, T, hd]; bias [>= T, >= T]
        dev = q.device.type
        dt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else q.dtype
        qf, kf, vf = (x.reshape(n * h, t, d).to(dt) for x in (q, k, v))  # [nH, T, hd]
        chunk = max(1, _ATTENTION_CHUNK_BYTES // (4 * t * t))
        probs = torch.empty(n * h, t, t, dtype=dt, device=q.device)
        y = torch.empty(n * h, t, d, dtype=dt, device=q.device)
        for a in range(0, n * h, chunk):
            b = min(a + chunk, n * h)
            s = torch.bmm(qf[a:b], kf[a:b].transpose(1, 2)).float()  # [c, T, T] fp32
            s.mul_(1.0 / math.sqrt(d)).add_(bias[:t, :t])
            probs[a:b] = torch.softmax(s, dim=-1)
            torch.bmm(probs[a:b], vf[a:b], out=y[a:b])
        ctx.save_for_backward(qf, kf, vf, probs)
        ctx.chunk, ctx.dtypes = chunk, (q.dtype, k.dtype, v.dtype)
        return y.view(n, h, t, d)

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        qf, kf, vf, probs = ctx.saved_tensors
        n, h, t, d = dy.shape
        dy = dy.reshape(n * h, t, d).to(qf.dtype)
        dq, dk, dv = torch.empty_like(qf), torch.empty_like(kf), torch.empty_like(vf)
        for a in range(0, n * h, ctx.chunk):
            b = min(a + ctx.chunk, n * h)
            p = probs[a:b]  # [c, T, T]
            torch.bmm(p.transpose(1, 2), dy[a:b], out=dv[a:b])
            dp = torch.bmm(dy[a:b], vf[a:b].transpose(1, 2)).float()  # dL/dP [c, T, T]
            pf = p.float()
            dp.sub_((dp * pf).sum(-1, keepdim=True)).mul_(pf).mul_(1.0 / math.sqrt(d))
            ds = dp.to(qf.dtype)  # dL/d(scores before scaling)
            torch.bmm(ds, kf[a:b], out=dq[a:b])
            torch.bmm(ds.transpose(1, 2), qf[a:b], out=dk[a:b])
        shape = (n, h, t, d)
        grads = (g.view(shape).to(dtype) for g, dtype in zip((dq, dk, dv), ctx.dtypes))
        return (*grads, None)


# Scores of one chunk of heads: 1 MiB of fp32 (16 heads at T = 128) was the fastest here.
_ATTENTION_CHUNK_BYTES = 1 << 20


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """Causal softmax attention of ``q``, ``k``, ``v`` [n, H, T, hd] -> [n, H, T, hd].

    With ``bias`` (the causal mask [>= T, >= T]: 0 on and below the diagonal, -inf above;
    CPU) by :class:`_CausalAttention`: scores in the matmul dtype, softmax in fp32, the
    probabilities back in the matmul dtype. At T = 128, head dim 32, bf16 its forward +
    backward ran 2.7x as fast as SDPA's CPU flash kernel and 1.75x as fast as SDPA's
    math kernel (measured here: the same function, rounded differently). Without
    ``bias`` (GPUs): SDPA's fused kernels.
    """
    if bias is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return _CausalAttention.apply(q, k, v, bias)


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``x`` [k, N, in] times ``w`` [k, out, in] transposed (+ ``b`` [k, out]) -> [k, N, out]."""
    if b is None:
        return torch.bmm(x, w.transpose(1, 2))
    return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))


class StackedDecoder:
    """k decoder LMs of one :class:`ModelConfig` as batched weights (see the module doc).

    ``params`` maps DecoderLM's parameter names to leaf tensors [k, *shape] that are views
    of ``flat`` [k, P]; their ``.grad`` are views of ``flat_grad`` [k, P]. ``matrix_size``
    is the length of the leading part of a row that holds the matrices (weight-decayed).
    """

    def __init__(self, cfg: ModelConfig, k: int, device: torch.device | str = "cpu") -> None:
        if not cfg.is_decoder or cfg.dropout > 0:
            raise ValueError("StackedDecoder needs a decoder arch without dropout")
        self.cfg, self.k, self.device = cfg, k, torch.device(device)
        with torch.device("meta"):
            shapes = {n: p.shape for n, p in DecoderLM(cfg).named_parameters()}
        # Matrices first (AdamW decays them), then vectors; each in DecoderLM's order.
        self.names = [n for n in shapes if len(shapes[n]) >= 2]
        self.names += [n for n in shapes if len(shapes[n]) < 2]
        self.shapes = shapes
        self.offsets: dict[str, tuple[int, int]] = {}
        pos = 0
        for n in self.names:
            self.offsets[n] = (pos, pos + math.prod(shapes[n]))
            pos += math.prod(shapes[n])
        self.matrix_size = sum(math.prod(shapes[n]) for n in self.names if len(shapes[n]) >= 2)
        self.size = pos
        self.flat = torch.zeros(k, pos, device=self.device)  # [k, P] the weights
        self.flat_grad = torch.zeros(k, pos, device=self.device)  # [k, P] their gradients
        self.params = {n: self._bind(n) for n in self.names}
        if cfg.arch == "llama":
            cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
            self.rope = (cos.to(self.device), sin.to(self.device))
        self.causal_bias = None  # CPU: the mask of causal_attention; elsewhere SDPA's own
        if self.device.type == "cpu":
            n = cfg.max_seq_len
            self.causal_bias = torch.full((n, n), -math.inf).triu(1)

    def _bind(self, name: str) -> nn.Parameter:
        a, b = self.offsets[name]
        shape = (self.k, *self.shapes[name])
        p = nn.Parameter(self.flat[:, a:b].view(shape))  # shares flat's storage
        p.grad = self.flat_grad[:, a:b].view(shape)  # backward accumulates into it
        return p

    # ---------------------------------------------------------------- members
    @torch.no_grad()
    def set_member(self, i: int, state: dict[str, torch.Tensor]) -> None:
        """Load a DecoderLM state dict into member ``i``."""
        for n in self.names:
            self.params[n][i].copy_(state[n])

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        """Member ``i`` as a DecoderLM state dict (views: copy before changing ``flat``)."""
        return {n: self.params[n][i].detach() for n in self.names}

    def select(self, keep: Sequence[int]) -> StackedDecoder:
        """A new stack of the members ``keep`` (weights copied; gradients zero)."""
        out = StackedDecoder(self.cfg, len(keep), self.device)
        with torch.no_grad():
            out.flat.copy_(self.flat[list(keep)])
        return out

    # ---------------------------------------------------------------- training
    def zero_grad(self) -> None:
        self.flat_grad.zero_()

    @torch.no_grad()
    def clip_grad_norms(self, max_norms: torch.Tensor) -> torch.Tensor:
        """Clip each member's global gradient norm to ``max_norms`` [k] (0: no clipping),
        as ``torch.nn.utils.clip_grad_norm_`` does per model; return the norms [k]."""
        norms = torch.linalg.vector_norm(self.flat_grad, dim=1)  # [k]
        coef = (max_norms / (norms + 1e-6)).clamp(max=1.0)
        coef = torch.where(max_norms > 0, coef, 1.0)
        self.flat_grad.mul_(coef.unsqueeze(1))
        return norms

    def losses(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean next-token loss of every member [k] on the shared batch ``input_ids`` and
        ``labels`` [B, T] (already shifted, -100 = no loss)."""
        h = self.hidden_states(input_ids)  # [k, B*T, d]
        head = self.params["wte.weight" if self.cfg.tie_embeddings else "lm_head.weight"]
        return stacked_linear_cross_entropy(h, head, labels.reshape(-1))

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Final-norm hidden states [k, B*T, d] of every member."""
        cfg, p, k = self.cfg, self.params, self.k
        b, t = input_ids.shape
        x = p["wte.weight"].index_select(1, input_ids.reshape(-1))  # [k, B*T, d] fp32
        if cfg.arch == "gpt2":
            x = (x.view(k, b, t, -1) + p["wpe.weight"][:, None, :t]).view(k, b * t, -1)
        for i in range(cfg.n_layer):
            pre = f"blocks.{i}."
            x = x + self._attention(self._norm(x, pre + "norm1"), pre + "attn.", b, t)
            x = x + self._mlp(self._norm(x, pre + "norm2"), pre + "mlp.")
        return self._norm(x, "norm_f")

    def _norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        w = self.params[name + ".weight"].unsqueeze(1)  # [k, 1, d]
        d = x.shape[-1]
        if self.cfg.arch == "llama":
            return F.rms_norm(x, (d,), eps=self.cfg.norm_eps) * w
        bias = self.params[name + ".bias"].unsqueeze(1)
        return torch.addcmul(bias, F.layer_norm(x, (d,), eps=self.cfg.norm_eps), w)

    def _attention(self, x: torch.Tensor, pre: str, b: int, t: int) -> torch.Tensor:
        cfg, p, k = self.cfg, self.params, self.k
        qkv = _linear(x, p[pre + "qkv.weight"], p.get(pre + "qkv.bias"))  # [k, B*T, 3d]
        qkv = qkv.view(k * b, t, 3, cfg.n_head, cfg.head_dim)  # [kB, T, 3, H, hd]
        qk = qkv[:, :, :2].permute(2, 0, 3, 1, 4)  # [2, kB, H, T, hd]
        if cfg.arch == "llama":
            qk = apply_rope(qk, self.rope[0][:t], self.rope[1][:t])
        q, kk = qk.unbind(0)
        v = qkv[:, :, 2].transpose(1, 2)
        y = causal_attention(q, kk, v, self.causal_bias)  # [kB, H, T, hd]
        y = y.transpose(1, 2).reshape(k, b * t, cfg.d_model)
        return _linear(y, p[pre + "proj.weight"], p.get(pre + "proj.bias"))

    def _mlp(self, x: torch.Tensor, pre: str) -> torch.Tensor:
        p = self.params
        h = _linear(x, p[pre + "fc.weight"], p.get(pre + "fc.bias"))  # [k, B*T, 2f] or f
        if self.cfg.arch == "llama":
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h, approximate="tanh")
        return _linear(h, p[pre + "proj.weight"], p.get(pre + "proj.bias"))


class StackedAdamW:
    """torch's fused AdamW over a stack: for each member a group of its matrices (row
    ``flat[i, :matrix_size]``, decoupled weight decay) and one of its vectors (the rest
    of the row, no decay), each one contiguous tensor -- the same update, element by
    element, as :func:`scalelab.train.step.make_optimizer` gives one model.

    ``settings[i]`` is ``(weight_decay, beta1, beta2, eps)`` of member i; the learning
    rates are set every step with :meth:`set_lrs`.
    """

    def __init__(
        self, stack: StackedDecoder, settings: Sequence[tuple[float, float, float, float]]
    ):
        self.stack = stack
        pm = stack.matrix_size
        groups: list[dict] = []
        self.rows: list[list[torch.Tensor]] = []
        for i, (wd, b1, b2, eps) in enumerate(settings):
            parts = [(stack.flat[i, :pm], stack.flat_grad[i, :pm], wd)]
            if pm < stack.size:
                parts.append((stack.flat[i, pm:], stack.flat_grad[i, pm:], 0.0))
            self.rows.append([])
            for row, grad, decay in parts:
                row.grad = grad
                self.rows[i].append(row)
                groups.append(
                    {"params": [row], "weight_decay": decay, "betas": (b1, b2), "eps": eps}
                )
        try:
            self.optimizer = torch.optim.AdamW(groups, lr=1e-3, fused=True)
        except (RuntimeError, TypeError):  # pragma: no cover - a device without the fused kernel
            self.optimizer = torch.optim.AdamW(groups, lr=1e-3)
        self._member_of = [i for i, rows in enumerate(self.rows) for _ in rows]

    def set_lrs(self, lrs: Sequence[float]) -> None:
        for group, i in zip(self.optimizer.param_groups, self._member_of, strict=True):
            group["lr"] = lrs[i]

    def step(self) -> None:
        self.optimizer.step()

    def moments(self, i: int) -> tuple[int, torch.Tensor, torch.Tensor] | None:
        """Member ``i``'s AdamW state: (steps taken, exp_avg [P], exp_avg_sq [P]); None
        before its first step."""
        states = [self.optimizer.state.get(r) for r in self.rows[i]]
        if not all(states):
            return None
        return (
            int(states[0]["step"]),
            torch.cat([s["exp_avg"] for s in states]),
            torch.cat([s["exp_avg_sq"] for s in states]),
        )

    def set_moments(
        self, i: int, steps: int, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor
    ) -> None:
        """Install member ``i``'s AdamW state (as :meth:`moments` returns it)."""
        pm = self.stack.matrix_size
        for row, (a, b) in zip(self.rows[i], ((0, pm), (pm, self.stack.size))):
            self.optimizer.state[row] = {
                "step": torch.tensor(float(steps), dtype=torch.float32, device=row.device),
                "exp_avg": exp_avg[a:b].to(row.device, torch.float32).clone(),
                "exp_avg_sq": exp_avg_sq[a:b].to(row.device, torch.float32).clone(),
            }
