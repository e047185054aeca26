"""Forecasting: window queries over Flight, frequencies, LightGBM models, the registry and the prediction service."""
