//! Migration of records written by older serializers of a state, as the store meets them in
//! compactions and savepoints. The store does not read values: the state layer registers, per
//! state, the tag entry of its present serializers and a conversion of a record written under
//! any older entry (see [`crate::format::SchemaTag`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::SchemaTag;

/// Converts the value of a record written under an older tag entry (the first argument) into
/// the value the state's present serializers write, appending it to the output. Its error is
/// a sentence.
pub(crate) type Convert = Arc<dyn Fn(&[u32], &[u8], &mut Vec<u8>) -> std::result::Result<(), String> + Send + Sync>;

/// How the records of one state are brought to its present serializers.
#[derive(Clone)]
pub(crate) struct StateMigration {
    /// The state's name, for errors.
    pub(crate) name: Arc<str>,
    /// The tag entry of the present serializers.
    pub(crate) tag: Vec<u32>,
    pub(crate) convert: Convert,
}

/// The migrations a store knows, by state id.
#[derive(Clone, Default)]
pub(crate) struct Migrations {
    pub(crate) states: HashMap<u16, StateMigration>,
    /// States whose conversion failed in a background compaction: not tried there again.
    pub(crate) failed: HashSet<u16>,
}

impl Migrations {
    /// The entry `entry` of state `state` becomes after migration, if it must convert.
    fn target(&self, state: u16, entry: &[u32]) -> Option<&StateMigration> {
        self.states.get(&state).filter(|m| m.tag != entry)
    }

    /// The tag of records tagged `tag` once migrated.
    pub(crate) fn migrated(&self, tag: &SchemaTag) -> SchemaTag {
        SchemaTag::new(tag.versions().iter().map(|(s, v)| match self.target(*s, v) {
            Some(m) => (*s, m.tag.clone()),
            None => (*s, v.clone()),
        }))
    }

    /// Whether records tagged `tag` hold records of a state to convert (one not failed,
    /// unless `retry`).
    pub(crate) fn converts(&self, tag: &SchemaTag, retry: bool) -> bool {
        tag.versions().iter().any(|(s, v)| self.target(*s, v).is_some() && (retry || !self.failed.contains(s)))
    }

    /// Converts the record at `key` read from a source tagged `tag`, if it must: the new
    /// value goes to `out` and `Ok(true)` is returned.
    pub(crate) fn convert(&self, tag: &SchemaTag, key: &[u8], value: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        let Some(state) = key.get(2..4).map(|b| u16::from_be_bytes([b[0], b[1]])) else { return Ok(false) };
        let Some(entry) = tag.of(state) else { return Ok(false) };
        let Some(m) = self.target(state, entry) else { return Ok(false) };
        out.clear();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (m.convert)(entry, value, out)))
            .unwrap_or_else(|_| Err("the conversion panicked".into()));
        match result {
            Ok(()) => Ok(true),
            Err(why) => Err(migration_error(&m.name, state, key, why)),
        }
    }
}

/// The error of a failed conversion of the record at `key`.
pub(crate) fn migration_error(name: &str, state: u16, key: &[u8], why: String) -> Error {
    let key_group = key.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    Error::Migration { state: name.to_owned(), state_id: state, key_group, why }
}
