"""Shipping a finished run to a code competition: the offline bundle, its runtime, TorchScript/ONNX
export, and the time-budget planner."""
