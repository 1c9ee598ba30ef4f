//! Helpers of the tests that check the committed vectors against `format-spec/`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `format-spec/`.
pub fn spec_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("format-spec")
}

/// `format-spec/vectors/`.
pub fn vectors_dir() -> PathBuf {
    spec_dir().join("vectors")
}

/// A page of `format-spec/` (a path below it).
pub fn spec_file(name: &str) -> String {
    let path = spec_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A vector file of `format-spec/vectors/`.
pub fn vector(name: &str) -> Vec<u8> {
    let path = vectors_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes as a README table cell shows them.
pub fn hex_cell(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        "(empty)".to_string()
    } else {
        format!("`{}`", hex(bytes))
    }
}

pub fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}

pub fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

pub fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
