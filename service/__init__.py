"""The HTTP service: routes, storage, the vLLM engine, background jobs and metrics."""
