"""Deployment: version pointers, the proxy update, (later) the registry and promotion."""
