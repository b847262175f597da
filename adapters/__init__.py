"""Backend adapters: each one is a gRPC sub-service serving o2ims.adapter.v1.AdapterService."""
