"""The netweave gRPC core: inventory services over a Redis-backed snapshot fed by adapters."""
