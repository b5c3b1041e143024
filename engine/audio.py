"""Game audio out through sounddevice, fed step by step from `Step.audio`.

The real Atari simulator returns each agent step's emulator audio as uint8 PCM
(128 = silence) at `GameSpec.audio_rate` (~31 kHz). Those chunks go into a small
ring buffer that a PortAudio callback drains at the device's pace; an underrun
plays silence and a backlog beyond `max_latency_s` drops the oldest samples, so
sound never lags the picture by more than that.

Audio is a nicety: with no PortAudio library, no output device, or any error
while opening it, `AudioOut` becomes silent and prints ONE warning per process.
Nothing here may raise into the frame loop.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

_warned = False


def _warn_once(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        print(f"warning: {message}; playing without sound", file=sys.stderr)


@dataclass(frozen=True)
class AudioConfig:
    rate: int
    """Sample rate of the incoming uint8 chunks (GameSpec.audio_rate)."""
    max_latency_s: float = 0.15
    """Backlog above this is dropped (oldest first) to keep sound in sync with frames."""
    blocksize: int = 512
    """Frames per PortAudio callback (lower = less latency, more callbacks)."""


def resample_linear(samples: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Linear-interpolation resampling of a mono float32 chunk from src_rate to dst_rate.

    Good enough for 8-bit console sound; used only when the device refuses the game's rate.
    """
    if src_rate == dst_rate or samples.size == 0:
        return samples
    n_out = max(1, int(round(samples.size * dst_rate / src_rate)))
    x_out = np.linspace(0.0, samples.size - 1, n_out, dtype=np.float64)
    return np.interp(x_out, np.arange(samples.size), samples).astype(np.float32)


class _Ring:
    """Thread-safe float32 FIFO with a size cap (producer: frame loop, consumer: audio callback)."""

    def __init__(self, capacity: int) -> None:
        self._buf = np.zeros(capacity, dtype=np.float32)
        self._start = 0
        self._size = 0
        self._lock = threading.Lock()

    def push(self, data: np.ndarray) -> None:
        cap = self._buf.size
        if data.size >= cap:
            data = data[-cap:]
        with self._lock:
            overflow = self._size + data.size - cap
            if overflow > 0:  # drop the oldest samples: late sound is worse than a click
                self._start = (self._start + overflow) % cap
                self._size -= overflow
            end = (self._start + self._size) % cap
            first = min(data.size, cap - end)
            self._buf[end:end + first] = data[:first]
            self._buf[:data.size - first] = data[first:]
            self._size += data.size

    def pop_into(self, out: np.ndarray) -> None:
        """Fill `out` (1-D) from the FIFO, zero-padding on underrun."""
        with self._lock:
            n = min(out.size, self._size)
            cap = self._buf.size
            first = min(n, cap - self._start)
            out[:first] = self._buf[self._start:self._start + first]
            out[first:n] = self._buf[:n - first]
            self._start = (self._start + n) % cap
            self._size -= n
        out[n:] = 0.0

    def __len__(self) -> int:
        return self._size


class AudioOut:
    """Plays uint8 step audio; silent (with one warning) when no device can be opened."""

    def __init__(self, config: AudioConfig) -> None:
        self.config = config
        self.device_rate = config.rate
        self._stream: Any = None
        self._ring = _Ring(max(1024, int(config.max_latency_s * config.rate * 4)))
        if config.rate <= 0:
            return
        try:
            import sounddevice as sd  # PortAudio binding; raises OSError when libportaudio is missing
        except Exception as err:  # noqa: BLE001 - any failure means "no sound", never a crash
            _warn_once(f"sound unavailable ({type(err).__name__}: {err})")
            return
        try:
            self._stream = self._open(sd, config.rate)
        except Exception:  # noqa: BLE001 - device refuses the game's rate: try its own rate
            try:
                default = sd.query_devices(kind="output")
                rate = int(default["default_samplerate"])
                self._stream = self._open(sd, rate)
            except Exception as err:  # noqa: BLE001
                _warn_once(f"no audio output device ({type(err).__name__}: {str(err).splitlines()[0]})")
                self._stream = None
                return
        self._ring = _Ring(max(1024, int(config.max_latency_s * self.device_rate)))

    def _open(self, sd: Any, rate: int) -> Any:
        stream = sd.OutputStream(samplerate=rate, channels=1, dtype="float32",
                                 blocksize=self.config.blocksize, callback=self._callback)
        stream.start()
        self.device_rate = rate
        return stream

    def _callback(self, outdata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        # Runs on PortAudio's thread: no allocation-heavy work, never raise.
        self._ring.pop_into(outdata[:, 0])

    @property
    def active(self) -> bool:
        return self._stream is not None

    def push(self, samples: np.ndarray | None) -> None:
        """Queue one step's uint8 samples (128 = silence)."""
        if self._stream is None or samples is None or samples.size == 0:
            return
        try:
            pcm = (samples.astype(np.float32) - 128.0) / 128.0
            self._ring.push(resample_linear(pcm, self.config.rate, self.device_rate))
        except Exception as err:  # noqa: BLE001 - never crash the game for sound
            _warn_once(f"audio error ({err})")
            self.close()

    def clear(self) -> None:
        """Drop queued sound (on pause or reset)."""
        self._ring.pop_into(np.empty(len(self._ring), dtype=np.float32))

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
                stream.close()
            except Exception:  # noqa: BLE001
                pass
