"""Deployment: the predictor API, export, quantisation, the HTTP service and benchmarking."""
