"""argo_bridge."""
