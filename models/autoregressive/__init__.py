"""Autoregressive world-model parts: FSQ frame tokenizer, dynamics transformer, MaskGIT sampler."""
