"""Test-wide setup: headless pygame, no audio device, offline text encoder, few CPU threads."""

import os
import signal

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import torch  # noqa: E402

# Tests send Ctrl+C (SIGINT) to collect, play and fit in subprocesses. A suite started in the
# background of a non-interactive shell (`cmd &`, nohup) inherits SIGINT ignored, children
# inherit that, and Python then installs no KeyboardInterrupt handler: the interrupt would be
# lost. Python's own handler here gives every child the default disposition back.
signal.signal(signal.SIGINT, signal.default_int_handler)

torch.set_num_threads(min(2, torch.get_num_threads()))
