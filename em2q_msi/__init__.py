"""em2q_msi."""
