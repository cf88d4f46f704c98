"""The synthetic study feeders the study tests use (their home: em2q_resources.synthetic_studies)."""

from em2q_resources.synthetic_studies import (  # noqa: F401  (re-exported for the tests)
    CONDITIONS,
    feed_member,
    feed_region_member,
    member_id,
    small_study,
)
