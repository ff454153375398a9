//! What a configured baseline approves, and from when.
