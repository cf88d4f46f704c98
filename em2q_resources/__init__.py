"""em2q_resources."""
