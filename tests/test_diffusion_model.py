"""Diffusion world model: sampler, EDM loss on real Breakout frames, rollouts, events, context noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.config import ConfigError, resolve_config
from models.diffusion.sampler import SamplerConfig, karras_sigmas, sample
from models.diffusion_world import DiffusionConfig, DiffusionWorldModel
from models.world import EVENT_DIM, Batch

CONFIG = "assets/configs/breakout-diffusion.yaml"


def tiny_model(seed: int = 0, num_actions: int = 4) -> DiffusionWorldModel:
    torch.manual_seed(seed)
    config = resolve_config(CONFIG, ["preset=tiny"])
    return DiffusionWorldModel(DiffusionConfig.parse(config["model"]), num_actions)


@pytest.fixture(scope="module")
def breakout() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real Breakout play: frames (N+1, 3, 64, 64) in [-1, 1], actions (N,), rewards (N,)."""
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    env = gym.make("ALE/Breakout-v5", repeat_action_probability=0.0)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    frames, actions, rewards = [obs], [], []
    for _ in range(64):
        act = int(rng.integers(4))
        obs, rew, term, trunc, _ = env.step(act)
        frames.append(obs)
        actions.append(act)
        rewards.append(rew)
        if term or trunc:
            break
    env.close()
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(64, 64), mode="area") / 127.5 - 1
    return x, torch.tensor(actions), torch.tensor(rewards, dtype=torch.float32)


def windows(data: tuple[torch.Tensor, ...], t: int, events: bool = True) -> Batch:
    """Every training window of T+1 frames; every other window carries a random unit event."""
    frames, actions, rewards = data
    starts = range(0, actions.shape[0] - t)
    b = len(starts)
    ev = torch.zeros(b, t, EVENT_DIM)
    if events:
        gen = torch.Generator().manual_seed(1)
        vec = F.normalize(torch.randn(EVENT_DIM, generator=gen), dim=0)
        ev[::2] = vec
    return Batch(
        frames=torch.stack([frames[s:s + t + 1] for s in starts]),
        actions=torch.stack([actions[s:s + t] for s in starts]),
        rewards=torch.stack([rewards[s:s + t] for s in starts]),
        terminations=torch.zeros(b, t),
        events=ev,
        valid=torch.ones(b, t + 1, dtype=torch.bool))


def fixed_loss(model: DiffusionWorldModel, batch: Batch) -> float:
    torch.manual_seed(123)  # same sigmas, noise and context-noise draws before and after
    with torch.no_grad():
        return float(model.loss(batch)[0].detach())


def test_karras_schedule() -> None:
    cfg = SamplerConfig(steps=3)
    sigmas = karras_sigmas(cfg)
    assert sigmas.shape == (4,)
    assert sigmas[0] == pytest.approx(5.0) and sigmas[2] == pytest.approx(2e-3) and sigmas[3] == 0
    assert bool((sigmas[1:] < sigmas[:-1]).all())
    assert karras_sigmas(SamplerConfig(steps=1)).tolist() == [5.0, 0.0]


def test_sampler_calls_and_one_step_is_one_denoise() -> None:
    calls: list[float] = []

    def denoise(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        calls.append(float(s[0]))
        return 0.5 * x

    x = torch.randn(2, 3, 8, 8)
    heun = SamplerConfig(steps=3, method="heun")
    sample(denoise, x, karras_sigmas(heun), "heun")
    assert len(calls) == heun.network_calls == 5
    out = sample(lambda x, s: 0.5 * x, x, karras_sigmas(SamplerConfig(steps=1)), "euler")
    assert torch.allclose(out, 0.5 * x)


def test_sampler_deterministic_for_seed(breakout: tuple[torch.Tensor, ...]) -> None:
    model = tiny_model().eval()
    frames, actions, _ = breakout
    for name in model.sampler_presets:
        model.set_sampler(name)
        outs = []
        for seed in (7, 7, 8):
            state = model.start(frames[None, :4], actions[None, :3])
            gen = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                _, pred = model.advance(state, actions[3:4], torch.zeros(1, EVENT_DIM), gen)
            outs.append(pred.frame)
        assert torch.equal(outs[0], outs[1]), name
        assert not torch.equal(outs[0], outs[2]), name


def test_loss_goes_down_and_events_matter(breakout: tuple[torch.Tensor, ...]) -> None:
    model = tiny_model()
    batch = windows(breakout, model.train_window)
    before = fixed_loss(model, batch)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    torch.manual_seed(0)
    for _ in range(40):
        loss, logs = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert set(logs) >= {"loss/denoise", "loss/reward", "loss/termination", "context_noise"}
    after = fixed_loss(model, batch)
    assert after < 0.8 * before, (before, after)

    # The trained model's next frame is a function of the event vector.
    model.eval()
    frames, actions, _ = breakout
    event = batch.events[0, -1][None]
    outs = []
    for ev in (torch.zeros(1, EVENT_DIM), event):
        state = model.start(frames[None, :4], actions[None, :3])
        with torch.no_grad():
            _, pred = model.advance(state, actions[3:4], ev, torch.Generator().manual_seed(0))
        outs.append(pred.frame)
    assert (outs[0] - outs[1]).abs().max() > 1e-4


def test_context_noise_applied_in_training(breakout: tuple[torch.Tensor, ...]) -> None:
    model = tiny_model()
    batch = windows(breakout, model.train_window, events=False)
    seen: dict[str, torch.Tensor] = {}
    prepare = model.unet.prepare

    def spy(context: torch.Tensor, actions: torch.Tensor, bucket: torch.Tensor, events: torch.Tensor):
        seen.update(context=context, bucket=bucket)
        return prepare(context, actions, bucket, events)

    model.unet.prepare = spy  # type: ignore[method-assign]
    torch.manual_seed(0)
    model.loss(batch)
    clean = batch.frames[:, :model.train_window]
    diff = (seen["context"] - clean).flatten(1).std(1)  # (B,) measured noise std
    expected = model.context_noise_level(seen["bucket"])
    assert seen["bucket"].max() > 0 and seen["bucket"].min() >= 0
    assert seen["bucket"].max() < model.cfg.context_noise_buckets
    assert torch.allclose(diff, expected, atol=0.02)
    assert float(expected.max()) <= model.cfg.context_noise_max + 1e-6


def test_rollout_shapes_unbounded(breakout: tuple[torch.Tensor, ...]) -> None:
    model = tiny_model().eval()
    frames, actions, _ = breakout
    state = model.start(frames[None, :4].repeat(2, 1, 1, 1, 1), actions[None, :3].repeat(2, 1))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for i in range(12):  # longer than the context: the window rolls
            state, pred = model.advance(state, torch.tensor([i % 4, 1]), torch.zeros(2, EVENT_DIM), gen)
    assert pred.frame.shape == (2, 3, 64, 64)
    assert pred.reward.shape == (2,) and pred.termination.shape == (2,)
    assert float(pred.frame.abs().max()) <= 1.0
    assert set(pred.reward.tolist()) <= set(model.cfg.heads.reward_values)
    assert state.frames.shape == (2, 4, 3, 64, 64) and state.actions.shape == (2, 3)
    assert torch.equal(state.frames[:, -1], pred.frame)


def test_reward_values_are_what_the_game_pays(breakout: tuple[torch.Tensor, ...]) -> None:
    """The head predicts a reward sign; play reports the configured value of that class
    (CarRacing: -0.2 a step, not -1, so the neural HUD score tracks the real one)."""
    frames, actions, _ = breakout
    config = resolve_config("assets/configs/carracing-diffusion.yaml", ["preset=tiny"])
    model = DiffusionWorldModel(DiffusionConfig.parse(config["model"]), 9).eval()
    assert model.cfg.heads.reward_values == (-0.2, 0.0, 3.27)
    state = model.start(frames[None, :4], actions[None, :3])
    for cls, paid in enumerate(model.cfg.heads.reward_values):
        with torch.no_grad():
            model.head.mlp[-1].bias.copy_(torch.tensor([0.0, 0.0, 0.0, -9.0]))
            model.head.mlp[-1].bias[cls] = 50.0
            _, pred = model.advance(state, torch.tensor([0]), torch.zeros(1, EVENT_DIM))
        assert float(pred.reward[0]) == pytest.approx(paid)
    with pytest.raises(ConfigError, match="reward_values"):
        DiffusionConfig.parse({**config["model"], "heads": {"reward_values": [1.0, 2.0]}})


def test_config_errors() -> None:
    config = resolve_config(CONFIG, ["preset=tiny"])
    with pytest.raises(ConfigError, match="model.unet.chanels"):
        DiffusionConfig.parse({**config["model"], "unet": {"chanels": [8]}})
    with pytest.raises(ConfigError, match="sampler"):
        DiffusionConfig.parse({**config["model"], "sampler": "turbo"})
    for game in ("breakout", "pong", "boxing", "carracing"):
        for preset in ("tiny", "small", "base"):
            cfg = resolve_config(f"assets/configs/{game}-diffusion.yaml", [f"preset={preset}"])
            assert cfg["family"] == "diffusion" and cfg["game"] == game
            DiffusionConfig.parse(cfg["model"])


def test_samplers_on_exact_gaussian_denoiser() -> None:
    """Data ~ N(0, 0.5^2) has the exact denoiser D(x; s) = x * 0.25 / (0.25 + s^2): the ODE
    solution must have std 0.5. Many-step Heun gets there; 1-step Euler gives the mean (0)."""
    sd = 0.5

    def exact(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return x * sd**2 / (sd**2 + s[:, None] ** 2)

    def std(cfg: SamplerConfig) -> float:
        x = torch.randn(20000, 1, generator=torch.Generator().manual_seed(0)) * cfg.sigma_max
        return float(sample(exact, x, karras_sigmas(cfg), cfg.method).std())

    assert std(SamplerConfig(steps=1)) < 0.06
    assert abs(std(SamplerConfig(steps=12, method="heun")) - sd) < 0.03
    assert abs(std(SamplerConfig(steps=40, method="euler")) - sd) < 0.05


def test_motion_weights_single_out_moving_pixels(breakout: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    """Real Breakout frames: the weights average 1, are higher where the ball or paddle moved
    (and one pixel around it), and are flat for frames where nothing moved."""
    from models.diffusion.edm import motion_weights

    frames = breakout[0]
    window = frames[None, 20:23]  # (1, 3, 3, 64, 64)
    w = motion_weights(window, 20.0, 0.1)
    assert w.shape == (1, 1, 64, 64)
    assert torch.allclose(w.mean(), torch.tensor(1.0))
    moved = ((window[:, 1:] - window[:, :-1]).abs().amax(2) > 0.1).any(1)[0]  # (64, 64)
    assert moved.any() and moved.float().mean() < 0.05
    assert w[0, 0][moved].min() > 5 * w[0, 0][~moved].min()
    still = motion_weights(window[:, :1].expand(1, 3, 3, 64, 64), 20.0, 0.1)
    assert torch.allclose(still, torch.ones_like(still))


def test_motion_weighted_loss_differs_and_backpropagates(breakout: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    frames, actions, rewards = breakout
    config = resolve_config(CONFIG, ["preset=tiny", "model.edm.motion_weight=20"])
    weighted = DiffusionWorldModel(DiffusionConfig.parse(config["model"]), 4)
    plain_config = resolve_config(CONFIG, ["preset=tiny", "model.edm.motion_weight=0"])
    plain = DiffusionWorldModel(DiffusionConfig.parse(plain_config["model"]), 4)
    plain.load_state_dict(weighted.state_dict())
    b, t = 4, plain.train_window
    batch = Batch(frames=torch.stack([frames[i: i + t + 1] for i in range(10, 10 + b)]),
                  actions=torch.stack([actions[i: i + t] for i in range(10, 10 + b)]),
                  rewards=torch.zeros(b, t), terminations=torch.zeros(b, t),
                  events=torch.zeros(b, t, EVENT_DIM), valid=torch.ones(b, t + 1, dtype=torch.bool))
    torch.manual_seed(1)
    loss_w, logs_w = weighted.loss(batch)
    torch.manual_seed(1)
    _, logs_p = plain.loss(batch)
    assert float(logs_w["loss/denoise"]) != pytest.approx(float(logs_p["loss/denoise"]), rel=1e-3)
    loss_w.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in weighted.parameters() if p.requires_grad and p.grad is not None)


def test_motion_from_context_weights_do_not_look_at_the_target(
        breakout: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    """With model.edm.motion_from_context the weights come from the context alone: a still
    context and a target that moved give the plain loss (flat weights), where the default mask,
    which sees the target's change, weights it; motion_reach widens the moving region."""
    from models.diffusion.edm import motion_weights

    frames, actions, _ = breakout
    window = frames[None, 20:23]
    narrow = (motion_weights(window, 20.0, 0.1, reach=1) > 1).sum()
    wide = (motion_weights(window, 20.0, 0.1, reach=4) > 1).sum()
    assert wide > narrow > 0

    def denoise_loss(*overrides: str) -> float:
        config = resolve_config(CONFIG, ["preset=tiny", *overrides])
        torch.manual_seed(0)
        model = DiffusionWorldModel(DiffusionConfig.parse(config["model"]), 4)
        t = model.train_window
        still = frames[10:11].expand(t, -1, -1, -1)  # a context where nothing moves ...
        window = torch.cat([still, frames[30:31]])[None]  # ... then a target that differs
        batch = Batch(frames=window, actions=actions[None, 10: 10 + t], rewards=torch.zeros(1, t),
                      terminations=torch.zeros(1, t), events=torch.zeros(1, t, EVENT_DIM),
                      valid=torch.ones(1, t + 1, dtype=torch.bool))
        torch.manual_seed(1)
        return float(model.loss(batch)[1]["loss/denoise"])

    plain = denoise_loss("model.edm.motion_weight=0")
    assert denoise_loss("model.edm.motion_weight=20", "model.edm.motion_from_context=true",
                        "model.edm.motion_reach=4") == pytest.approx(plain, rel=1e-5)
    assert denoise_loss("model.edm.motion_weight=20") != pytest.approx(plain, rel=1e-3)


def test_high_sigma_fraction_trains_that_share_at_the_play_level(
        breakout: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    """model.edm.high_sigma_fraction: that share of a batch is noised at high_sigma, the rest
    log-normally; out-of-range shares are refused with the key named."""
    from models.diffusion.edm import EDMConfig, EDMLoss

    model = tiny_model()
    frames, actions, _ = breakout
    t = model.train_window
    context, acts = frames[None, :t].expand(64, -1, -1, -1, -1), actions[None, :t].expand(64, -1)
    prep = model.unet.prepare(context, acts, torch.zeros(64, dtype=torch.long),
                              model.event_input(torch.zeros(64, EVENT_DIM), torch.zeros(64, EVENT_DIM)))
    seen: list[torch.Tensor] = []
    hook = model.denoiser.net.register_forward_hook(lambda _m, args, _o: seen.append(args[1]))
    for fraction in (0.0, 0.5, 1.0):
        torch.manual_seed(0)
        EDMLoss(EDMConfig(high_sigma_fraction=fraction, high_sigma=5.0))(model.denoiser, frames[t:t + 1].expand(64, -1, -1, -1), prep)
    hook.remove()
    at_high = [float((c_noise == torch.tensor(5.0).log() / 4).float().mean()) for c_noise in seen]
    assert at_high[0] == 0.0 and 0.25 < at_high[1] < 0.75 and at_high[2] == 1.0
    with pytest.raises(ConfigError, match="high_sigma_fraction"):
        EDMConfig(high_sigma_fraction=1.5)


def test_reward_class_weights_scale_the_rare_class(breakout: tuple[torch.Tensor, ...]) -> None:
    """A scoring step counts reward_class_weights[2] times in the reward loss (Breakout: 8)."""
    frames, actions, _ = breakout
    models = {}
    for w in ("[1.0, 1.0, 1.0]", "[1.0, 1.0, 8.0]"):
        config = resolve_config(CONFIG, ["preset=tiny", f"model.heads.reward_class_weights={w}"])
        models[w] = DiffusionWorldModel(DiffusionConfig.parse(config["model"]), 4)
    plain, weighted = models.values()
    weighted.load_state_dict(plain.state_dict())
    b, t = 2, plain.train_window
    batch = Batch(frames=torch.stack([frames[i: i + t + 1] for i in range(b)]),
                  actions=torch.stack([actions[i: i + t] for i in range(b)]),
                  rewards=torch.ones(b, t), terminations=torch.zeros(b, t),
                  events=torch.zeros(b, t, EVENT_DIM), valid=torch.ones(b, t + 1, dtype=torch.bool))
    torch.manual_seed(0)
    r_plain = float(plain.loss(batch)[1]["loss/reward"])
    torch.manual_seed(0)
    r_weighted = float(weighted.loss(batch)[1]["loss/reward"])
    assert r_weighted == pytest.approx(8 * r_plain, rel=1e-4)


def test_self_rollout_context_is_the_models_own(breakout: tuple[torch.Tensor, ...]) -> None:
    """With rollout_steps K the windows are K frames longer, the picked rows' context is what the
    model draws from the real frames before it, and the loss still backpropagates."""
    config = resolve_config(CONFIG, ["preset=tiny", "model.rollout_steps=2", "model.rollout_fraction=1"])
    torch.manual_seed(0)
    model = DiffusionWorldModel(DiffusionConfig.parse(config["model"]), 4)
    assert model.train_window == model.context_frames + 2
    batch = windows(breakout, model.train_window)
    c = model.context_frames
    real = batch.frames[:, -(c + 1):-1]
    rolled = model._rolled_context(batch, real)
    assert rolled.shape == real.shape
    assert not rolled.requires_grad  # no gradient through the play sampler's steps
    assert torch.equal(rolled[:, :c - 2], real[:, :c - 2])  # only the last K frames are drawn
    assert (rolled[:, -2:] - real[:, -2:]).abs().mean() > 1e-3
    # The first drawn frame is the play sampler's step from the real frames before it.
    from models.diffusion.sampler import initial_noise

    torch.manual_seed(5)
    again = model._rolled_context(batch, real)
    torch.manual_seed(5)
    torch.randperm(real.shape[0])  # the draw of the rows comes first
    noise = initial_noise(tuple(real[:, 0].shape), model.samplers[model.sampler_name], "cpu", None)
    events = model.event_input(batch.events[:, c - 1], batch.events[:, c - 2])  # with its change (event_onset)
    first, _ = model.generate(batch.frames[:, :c], batch.actions[:, :c], events, noise)
    assert torch.allclose(again[:, c - 2], first, atol=1e-5)
    model.train()
    loss, _ = model.loss(batch)
    loss.backward()
    assert model.unet.event_proj.weight.grad is not None
    with pytest.raises(ConfigError, match="rollout"):
        DiffusionConfig.parse({**config["model"], "rollout_fraction": 2})


def test_head_reads_the_models_own_draws_with_drawn_fraction(breakout: tuple[torch.Tensor, ...]) -> None:
    """heads.drawn_fraction: that share of rows gives the head (the context's last frame, the
    play sampler's draw from the context) rather than the real pair; evaluation and crops keep
    the real pairs, and the loss still trains the head."""
    config = resolve_config(CONFIG, ["preset=tiny", "model.heads.drawn_fraction=0.5"])
    torch.manual_seed(0)
    model = DiffusionWorldModel(DiffusionConfig.parse(config["model"]), 4)
    batch = windows(breakout, model.train_window)
    b, c = batch.frames.shape[0], model.context_frames
    context, target = batch.frames[:, -(c + 1):-1], batch.frames[:, -1]
    actions = batch.actions[:, -c:]
    real_last = context[:, -1].flip(0)  # stands apart from the context (self-rolled rows differ too)
    model.train()
    torch.manual_seed(3)
    prev, nxt = model._head_pairs(real_last, target, context, actions, batch.events, False)
    n = round(b * 0.5)
    assert torch.equal(prev[:n], context[:n, -1]) and torch.equal(prev[n:], real_last[n:])
    assert torch.equal(nxt[n:], target[n:])
    # The drawn rows are exactly the play step from their context.
    from models.diffusion.sampler import initial_noise

    torch.manual_seed(3)
    noise = initial_noise(tuple(target[:n].shape), model.samplers[model.sampler_name], "cpu", None)
    events = model.event_input(batch.events[:n, -1], batch.events[:n, -2])
    with torch.no_grad():
        drawn, _ = model.generate(context[:n], actions[:n], events, noise)
    assert torch.allclose(nxt[:n], drawn, atol=1e-5) and (nxt[:n] - target[:n]).abs().mean() > 1e-3
    for crop, training in ((True, True), (False, False)):
        model.train(training)
        prev, nxt = model._head_pairs(real_last, target, context, actions, batch.events, crop)
        assert prev is real_last and nxt is target
    model.train()
    loss, _ = model.loss(batch)
    loss.backward()
    assert model.head.mlp[-1].weight.grad is not None and model.head.mlp[-1].weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="drawn_fraction"):
        DiffusionConfig.parse({**config["model"], "heads": {"drawn_fraction": 1.5}})


def test_self_rollout_rolls_a_fixed_share(breakout: tuple[torch.Tensor, ...]) -> None:
    """round(B * rollout_fraction) rows are drawn every step, never a varying count: a new
    sub-batch size each step makes cuDNN plan its convolutions again at every step."""
    config = resolve_config(CONFIG, ["preset=tiny", "model.rollout_steps=1", "model.rollout_fraction=0.3"])
    model = DiffusionWorldModel(DiffusionConfig.parse(config["model"]), 4)
    batch = windows(breakout, model.train_window)
    b, c = batch.frames.shape[0], model.context_frames
    real = batch.frames[:, -(c + 1):-1]
    for seed in range(3):
        torch.manual_seed(seed)
        rolled = model._rolled_context(batch, real)
        changed = (rolled - real).flatten(1).abs().amax(1) > 0  # (B,)
        assert int(changed.sum()) == round(b * 0.3)


def test_event_onset_sees_the_change_of_the_event_vector(breakout: tuple[torch.Tensor, ...]) -> None:
    """With model.event_onset the step after an event starts is drawn differently from a later
    step under the same vector (the state carries the last step's vector), and the loss sees
    where in the window the event started; without it neither matters."""
    frames, actions, _ = breakout
    event = F.normalize(torch.randn(1, EVENT_DIM), dim=1)

    def step_from(model: DiffusionWorldModel, before: torch.Tensor | None) -> torch.Tensor:
        state = model.start(frames[None, :4], actions[None, :3], before)
        with torch.no_grad():
            state, pred = model.advance(state, torch.tensor([1]), event, torch.Generator().manual_seed(0))
        assert torch.equal(state.events, event)  # the next step sees no change
        return pred.frame

    def loss_with(model: DiffusionWorldModel, since: int) -> float:
        t = model.train_window
        events = torch.zeros(1, t, EVENT_DIM)
        events[:, since:] = event
        batch = Batch(frames=frames[None, : t + 1], actions=actions[None, :t], rewards=torch.zeros(1, t),
                      terminations=torch.zeros(1, t), events=events, valid=torch.ones(1, t + 1, dtype=torch.bool))
        torch.manual_seed(0)
        return float(model.loss(batch)[0].detach())

    for onset in (True, False):
        torch.manual_seed(0)
        config = resolve_config(CONFIG, ["preset=tiny", f"model.event_onset={str(onset).lower()}"])
        model = DiffusionWorldModel(DiffusionConfig.parse(config["model"]), 4).eval()
        with torch.no_grad():  # as if trained: the zero-initialised output layers hide the conditioning
            for p in model.parameters():
                p.normal_(0, 0.05)
        assert (model.unet.onset_proj is not None) == onset
        changed = not torch.equal(step_from(model, None), step_from(model, event))
        loss_changed = loss_with(model, model.train_window - 1) != pytest.approx(loss_with(model, 0), rel=1e-6)
        assert changed == onset and loss_changed == onset
