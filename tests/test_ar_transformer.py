"""Dynamics transformer: the cached, sliding-window play path equals recomputing the history."""

import torch

from models.autoregressive.maskgit import SamplerConfig, draw_noise, maskgit_decode
from models.autoregressive.transformer import DynamicsTransformer, TransformerConfig

N, V, A, E = 16, 50, 4, 384


def _model(window: int = 3) -> DynamicsTransformer:
    torch.manual_seed(0)
    cfg = TransformerConfig(width=32, layers=2, heads=2, window=window)
    return DynamicsTransformer(cfg, tokens_per_frame=N, codebook_size=V, num_actions=A, event_dim=E).eval()


def _rollout(model: DynamicsTransformer, cached: bool, context: torch.Tensor, actions: torch.Tensor,
             events: torch.Tensor, steps: int, sampler: SamplerConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate `steps` frames after `context` (B, C, N); returns tokens (B, steps, N) and the
    action-token outputs (B, steps, d) that carry reward and end."""
    b, c, _ = context.shape
    history = [context[:, i] for i in range(c)]
    gen = torch.Generator().manual_seed(123)
    cache = model.new_cache(b, torch.device("cpu"), torch.float32)
    if cached:
        for i in range(c - 1):
            model.step_cached(cache, torch.tensor(i), (history[i], actions[:, i], events[:, i]), None)
    outs = []
    for _ in range(steps):
        t = len(history) - 1
        found: list[torch.Tensor] = []

        def predict(tokens: torch.Tensor, k: int, t: int = t, found: list = found) -> torch.Tensor:
            if cached:
                clean = (history[t], actions[:, t], events[:, t]) if k == 0 else None
                logits, out = model.step_cached(cache, torch.tensor(t), clean, tokens, history[t])
                if out is not None:
                    found.append(out)
                return logits
            clean_tokens = torch.stack(history, 1)
            valid = torch.ones(b, t + 1, dtype=torch.bool)
            logits, out = model(clean_tokens, actions[:, : t + 1], events[:, : t + 1], valid,
                                tokens[:, None], history[t][:, None], torch.tensor([t + 1]))
            if k == 0:
                found.append(out[:, t])
            return logits[:, 0]

        with torch.no_grad():
            noise = draw_noise(sampler, b, N, V, torch.device("cpu"), gen)
            new = maskgit_decode(predict, N, model.mask_id, sampler, *noise)
        history.append(new)
        outs.append(found[0])
    return torch.stack(history[c:], 1), torch.stack(outs, 1)


def test_cached_generation_equals_uncached_past_the_window():
    model = _model(window=3)
    b, c, steps = 2, 2, 8  # 8 generated steps slide the 3-step ring more than twice
    torch.manual_seed(1)
    context = torch.randint(0, V, (b, c, N))
    actions = torch.randint(0, A, (b, c + steps))
    events = torch.randn(b, c + steps, E) * 0.1
    sampler = SamplerConfig(passes=3, temperature=1.0)
    tok_c, out_c = _rollout(model, True, context, actions, events, steps, sampler)
    tok_u, out_u = _rollout(model, False, context, actions, events, steps, sampler)
    assert torch.equal(tok_c, tok_u)
    torch.testing.assert_close(out_c, out_u, atol=1e-4, rtol=1e-4)


def test_window_slides_for_long_rollouts():
    model = _model(window=2)
    context = torch.randint(0, V, (1, 1, N))
    actions = torch.randint(0, A, (1, 41))
    events = torch.zeros(1, 41, E)
    tokens, outs = _rollout(model, True, context, actions, events, 40, SamplerConfig(passes=2))
    assert tokens.shape == (1, 40, N)
    assert int(tokens.max()) < V and int(tokens.min()) >= 0
    assert torch.isfinite(outs).all()


def test_maskgit_is_deterministic_for_a_seed_and_fills_every_token():
    model = _model()
    cache = model.new_cache(1, torch.device("cpu"), torch.float32)
    clean = (torch.randint(0, V, (1, N)), torch.tensor([1]), torch.zeros(1, E))

    def decode(seed: int) -> torch.Tensor:
        ring = cache.clone()
        gen = torch.Generator().manual_seed(seed)

        def predict(tokens: torch.Tensor, k: int) -> torch.Tensor:
            return model.step_cached(ring, torch.tensor(0), clean if k == 0 else None, tokens, clean[0])[0]

        with torch.no_grad():
            sampler = SamplerConfig(passes=4)
            noise = draw_noise(sampler, 1, N, V, torch.device("cpu"), gen)
            return maskgit_decode(predict, N, model.mask_id, sampler, *noise)

    first, again = decode(5), decode(5)
    assert torch.equal(first, again)
    assert (first != model.mask_id).all()
