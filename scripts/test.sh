#!/usr/bin/env bash
# Install the project with its dev tools into .venv, then lint, type-check and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null && ! ldconfig -p 2>/dev/null | grep -q libportaudio; then
  (apt-get update -qq && apt-get install -y -qq libportaudio2) >/dev/null 2>&1 || echo "note: libportaudio2 not installed; audio tests run silent"
fi
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[dev]"
export SDL_VIDEODRIVER=dummy SDL_AUDIODRIVER=dummy HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=2
ruff check engine models benchmarks scripts play.py train.py tests
mypy engine models benchmarks scripts play.py train.py
python -m pytest tests
