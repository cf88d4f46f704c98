"""em2q_resources/metadata."""
