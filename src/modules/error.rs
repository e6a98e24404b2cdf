//! Not written yet: arrives with the foundation issue.
