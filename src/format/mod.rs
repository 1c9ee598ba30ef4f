//! On-disk formats.
