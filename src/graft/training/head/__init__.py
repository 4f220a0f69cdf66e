"""Training a head on cached features: linear probe, SGD heads, calibration, feature choice, the OOD fit."""
