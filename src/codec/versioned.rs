//! [`VersionedSerde`]: a `serde` type that changes between versions of a job, with one
//! conversion per step.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{CodecError, Compatibility, OldReader, SerdeSerializer, Serializer, SerializerSnapshot};

/// Reads the value of one old version from its slot and converts it to the newest type.
type ReadVersion<T> = Arc<dyn Fn(&mut &[u8]) -> Result<T, CodecError> + Send + Sync>;

/// A `serde` type with a chain of versions: data written by any older version of the type is
/// read with that version's own type and converted, step by step, to the newest.
///
/// Each version is its own Rust type; the chain names them in order, with one conversion per
/// step. The encoding is [`SerdeSerializer`]'s (a varint length, then postcard). The snapshot
/// records the tag and the version, so a restore knows which type wrote the data:
///
/// - data of the newest version is read as is;
/// - data of an older version is [`Compatibility::AfterMigration`]: read with its type and
///   converted along the chain (lazily, as the backend meets it);
/// - data of a [`SerdeSerializer`] with the same tag counts as version 1, so a state can start
///   with a plain `SerdeSerializer` and move to a chain later;
/// - a newer version or another tag is [`Compatibility::Incompatible`].
///
/// Snapshot: identity `"eddy.serde.versioned"`, version the number of types in the chain
/// (1 for [`new`](Self::new)), configuration the tag's UTF-8 bytes.
///
/// Adding a field with a default, removing one, renaming one or changing its type are all a
/// new version with a conversion:
///
/// ```
/// use eddy::codec::{Compatibility, SerdeSerializer, Serializer, VersionedSerde};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct V1 { user: u64, clicks: u32 }
/// #[derive(Serialize, Deserialize)]
/// struct V2 { user: u64, clicks: u64, country: String }
/// #[derive(Serialize, Deserialize, Debug, PartialEq)]
/// struct V3 { user_id: u64, clicks: u64, country: Option<String> }
///
/// let v1 = VersionedSerde::<V1>::new("app.Clicks");
/// let v3 = VersionedSerde::<V1>::new("app.Clicks")
///     .then(|v: V1| V2 { user: v.user, clicks: u64::from(v.clicks), country: String::new() })
///     .then(|v: V2| V3 { user_id: v.user, clicks: v.clicks, country: Some(v.country).filter(|c| !c.is_empty()) });
///
/// let mut old = Vec::new();
/// v1.write(&V1 { user: 7, clicks: 3 }, &mut old);
/// assert_eq!(v3.compatibility(&v1.snapshot()), Compatibility::AfterMigration);
/// let reader = v3.old_reader(&v1.snapshot()).unwrap();
/// assert_eq!(reader.read_all(&v3, &old), Ok(V3 { user_id: 7, clicks: 3, country: None }));
/// ```
pub struct VersionedSerde<T> {
    tag: Cow<'static, str>,
    /// Per version but the newest, oldest first: its reader.
    older: Vec<ReadVersion<T>>,
    current: SerdeSerializer<T>,
}

impl<T> Clone for VersionedSerde<T> {
    fn clone(&self) -> Self {
        VersionedSerde { tag: self.tag.clone(), older: self.older.clone(), current: self.current.clone() }
    }
}

impl<T> fmt::Debug for VersionedSerde<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VersionedSerde")
            .field("type", &std::any::type_name::<T>())
            .field("tag", &self.tag)
            .field("version", &self.version())
            .finish()
    }
}

impl<T> VersionedSerde<T>
where
    T: Serialize + DeserializeOwned + 'static,
{
    /// The first version of the type named `tag` (a stable name of what the values mean).
    pub fn new(tag: impl Into<Cow<'static, str>>) -> Self {
        let tag = tag.into();
        VersionedSerde { current: SerdeSerializer::with_tag(tag.clone()), tag, older: Vec::new() }
    }

    /// The next version, `U`, with `step` converting a value of the current newest version.
    pub fn then<U>(self, step: impl Fn(T) -> U + Send + Sync + 'static) -> VersionedSerde<U>
    where
        U: Serialize + DeserializeOwned + 'static,
    {
        self.try_then(move |t| Ok(step(t)))
    }

    /// The next version, `U`, with a conversion that may fail: its error becomes a
    /// [`CodecError::Migration`] of the read that met the old value (nothing stored is
    /// changed by it).
    pub fn try_then<U>(self, step: impl Fn(T) -> Result<U, String> + Send + Sync + 'static) -> VersionedSerde<U>
    where
        U: Serialize + DeserializeOwned + 'static,
    {
        let step = Arc::new(step);
        let mut older: Vec<ReadVersion<U>> = Vec::with_capacity(self.older.len() + 1);
        for read in self.older {
            let step = step.clone();
            older.push(Arc::new(move |input: &mut &[u8]| step(read(input)?).map_err(CodecError::Migration)));
        }
        let current = self.current;
        older.push(Arc::new(move |input: &mut &[u8]| step(current.read(input)?).map_err(CodecError::Migration)));
        VersionedSerde { current: SerdeSerializer::with_tag(self.tag.clone()), tag: self.tag, older }
    }
}

impl<T> VersionedSerde<T> {
    /// The newest version: the number of types in the chain.
    pub fn version(&self) -> u32 {
        u32::try_from(self.older.len() + 1).unwrap_or(u32::MAX)
    }

    /// The tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The version of the chain that wrote the data `old` describes, if this chain has it.
    fn version_of(&self, old: &SerializerSnapshot) -> Option<u32> {
        if old.config != self.tag.as_bytes() {
            return None;
        }
        match old.identity.as_str() {
            "eddy.serde.versioned" if (1..=self.version()).contains(&old.version) => Some(old.version),
            "eddy.serde.postcard" if old.version == 1 => Some(1),
            _ => None,
        }
    }
}

impl<T> Serializer for VersionedSerde<T>
where
    T: Serialize + DeserializeOwned + 'static,
{
    type Value = T;

    #[inline]
    fn write(&self, value: &T, out: &mut Vec<u8>) {
        self.current.write(value, out)
    }

    #[inline]
    fn read(&self, input: &mut &[u8]) -> Result<T, CodecError> {
        self.current.read(input)
    }

    fn snapshot(&self) -> SerializerSnapshot {
        SerializerSnapshot {
            identity: "eddy.serde.versioned".to_owned(),
            version: self.version(),
            config: self.tag.as_bytes().to_vec(),
        }
    }

    fn compatibility(&self, old: &SerializerSnapshot) -> Compatibility {
        match self.version_of(old) {
            Some(v) if v == self.version() => Compatibility::AsIs,
            Some(_) => Compatibility::AfterMigration,
            None => Compatibility::Incompatible,
        }
    }

    fn old_reader(&self, old: &SerializerSnapshot) -> Option<OldReader<Self>> {
        let v = self.version_of(old)?;
        if v == self.version() {
            return Some(OldReader::as_is());
        }
        let read = self.older.get(v as usize - 1)?.clone();
        Some(OldReader::new(move |_: &Self, input: &mut &[u8]| read(input)))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct A {
        x: u32,
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct B {
        x: u64,
        note: String,
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct C {
        renamed: u64,
    }

    fn chain() -> VersionedSerde<C> {
        VersionedSerde::<A>::new("t").then(|a: A| B { x: u64::from(a.x), note: "from A".into() }).try_then(|b: B| {
            if b.x == 13 {
                Err("13 is refused".into())
            } else {
                Ok(C { renamed: b.x * 10 })
            }
        })
    }

    #[test]
    fn every_older_version_is_read_along_the_chain() {
        let c = chain();
        assert_eq!(c.version(), 3);
        let a = VersionedSerde::<A>::new("t");
        let plain = SerdeSerializer::<A>::with_tag("t");
        let mut bytes = Vec::new();
        a.write(&A { x: 4 }, &mut bytes);
        for old in [a.snapshot(), plain.snapshot()] {
            assert_eq!(c.compatibility(&old), Compatibility::AfterMigration);
            assert_eq!(c.old_reader(&old).unwrap().read_all(&c, &bytes), Ok(C { renamed: 40 }));
        }
        let b = VersionedSerde::<A>::new("t").then(|a: A| B { x: u64::from(a.x), note: String::new() });
        bytes.clear();
        b.write(&B { x: 5, note: "n".into() }, &mut bytes);
        assert_eq!(c.old_reader(&b.snapshot()).unwrap().read_all(&c, &bytes), Ok(C { renamed: 50 }));
        bytes.clear();
        b.write(&B { x: 13, note: "n".into() }, &mut bytes);
        assert_eq!(
            c.old_reader(&b.snapshot()).unwrap().read_all(&c, &bytes),
            Err(CodecError::Migration("13 is refused".into()))
        );
        assert_eq!(c.compatibility(&c.snapshot()), Compatibility::AsIs);
    }

    #[test]
    fn newer_versions_and_other_tags_are_incompatible() {
        let c = chain();
        let b = VersionedSerde::<A>::new("t").then(|a: A| B { x: u64::from(a.x), note: String::new() });
        assert_eq!(b.compatibility(&c.snapshot()), Compatibility::Incompatible);
        assert!(b.old_reader(&c.snapshot()).is_none());
        let other = VersionedSerde::<A>::new("u");
        assert_eq!(c.compatibility(&other.snapshot()), Compatibility::Incompatible);
        let mut zero = c.snapshot();
        zero.version = 0;
        assert_eq!(c.compatibility(&zero), Compatibility::Incompatible);
        // Damaged old bytes are an error, not a panic.
        let reader = c.old_reader(&VersionedSerde::<A>::new("t").snapshot()).unwrap();
        assert!(reader.read_all(&c, &[9, 1]).is_err());
    }
}
