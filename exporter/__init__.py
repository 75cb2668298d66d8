"""torch -> ONNX, int8 quantization, parity gates, signing."""
