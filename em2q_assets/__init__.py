"""em2q_assets."""
