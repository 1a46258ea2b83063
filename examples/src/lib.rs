//! Nothing here: the examples are this crate's `[[example]]` targets.
