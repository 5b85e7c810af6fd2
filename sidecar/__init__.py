"""The tollgate sidecar: config, router, executor and transports."""
