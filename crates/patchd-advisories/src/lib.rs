//! Vendor advisories: parsing and matching (skeleton; filled in by issue 16).
