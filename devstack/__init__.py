"""Local development stack: dev PKI, process supervision, and `make run`."""
