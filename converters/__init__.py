"""Conversion: int8 TFLite quantization, Edge TPU checks, C array export."""
