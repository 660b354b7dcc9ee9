//! Placeholder: the filter platform fills this crate.
