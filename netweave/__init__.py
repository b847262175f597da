"""Runtime helpers shared by the core and the adapter sub-services (logging, gRPC server set-up)."""
