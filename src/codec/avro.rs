//! [`AvroSerializer`]: any `serde` type as an Avro datum under a schema that evolves by Avro's
//! schema resolution rules.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::{
    DecimalSchema, InnerDecimalSchema, NamesRef, NamespaceRef, RecordSchema, ResolvedSchema, UuidSchema,
};
use apache_avro::schema_compatibility::{Compatibility as AvroCompatibility, SchemaCompatibility};
use apache_avro::{from_value, write_avro_datum_ref, Schema};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value as Json;

use super::{
    read_len, read_varint, take, write_varint, CodecError, Compatibility, OldReader, Serializer, SerializerSnapshot,
};

/// The identity of the serializer's snapshots.
const IDENTITY: &str = "eddy.avro";
/// The version of the encoding.
const VERSION: u32 = 1;
/// How deep records, arrays, maps and unions may nest in one value: the Avro crate decodes,
/// resolves and deserializes recursively, so deeper data (only a recursive schema can hold
/// it) would overflow the stack.
const MAX_DEPTH: usize = 128;
/// How many items all the arrays and maps of one value may hold beyond one per byte of its
/// slot. Only items that encode to no bytes at all (`null`, an empty record, a `fixed` of size
/// 0) can go beyond one per byte; they are still decoded one by one into the crate's values.
const FREE_ITEMS: usize = 1024;

/// Any `serde` type, as a varint length and then the Avro binary encoding of the value under
/// an Avro schema (a *datum*: no header, no schema, no framing of its own). Not
/// order-preserving, not fixed-length.
///
/// The schema is the contract of the stored bytes, and it can change between versions of a
/// job as Avro allows: when a restore finds data written under another schema, the new schema
/// (the *reader's*) is checked against the old one (the *writer's*) by Avro's schema
/// resolution rules, before any data is read:
///
/// - a schema whose [Parsing Canonical Form] is the old one's (docs, defaults and aliases may
///   differ) reads the old bytes [as they are](Compatibility::AsIs);
/// - a schema that Avro's rules let read every value of the old one is
///   [`Compatibility::AfterMigration`]: added fields with defaults, removed fields, fields
///   renamed with an alias naming the old field, `int` to `long`, `float` or `double`, `long`
///   to `float` or `double`, `float` to `double`, added enum symbols or union branches, types
///   wrapped in a union. Old values are read under the old schema, resolved to the new one
///   and converted to `T` (lazily, as the backend meets them);
/// - anything else is [`Compatibility::Incompatible`]: a field added without a default, a
///   changed type (`string` to `int`), and also a change that could read only some of the old
///   values (an enum symbol or a union branch removed): a restore reads everything or refuses
///   before reading anything. The Avro crate's check is stricter than Avro's rules in two
///   ways, both refused here too: a record, enum or fixed renamed (even with an alias), and a
///   named type defined at a place where the other schema only refers to it by name.
///
/// ```
/// use eddy::codec::{AvroSerializer, Compatibility, Serializer};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct V1 { user: i64, clicks: i32 }
/// #[derive(Serialize, Deserialize, Debug, PartialEq)]
/// struct V2 { user_id: i64, clicks: i64, country: String }
///
/// let v1 = AvroSerializer::<V1>::from_json(r#"{"type": "record", "name": "Clicks", "fields": [
///     {"name": "user", "type": "long"},
///     {"name": "clicks", "type": "int"}
/// ]}"#)?;
/// // `user` is renamed (the alias names the old field), `clicks` widened, `country` added.
/// let v2 = AvroSerializer::<V2>::from_json(r#"{"type": "record", "name": "Clicks", "fields": [
///     {"name": "user_id", "type": "long", "aliases": ["user"]},
///     {"name": "clicks", "type": "long"},
///     {"name": "country", "type": "string", "default": "unknown"}
/// ]}"#)?;
///
/// let mut old = Vec::new();
/// v1.write(&V1 { user: 7, clicks: 3 }, &mut old);
/// // The length (2), then the Avro datum: user 7 and clicks 3, as zigzag varints.
/// assert_eq!(old, [2, 14, 6]);
///
/// assert_eq!(v2.compatibility(&v1.snapshot()), Compatibility::AfterMigration);
/// let reader = v2.old_reader(&v1.snapshot()).unwrap();
/// assert_eq!(
///     reader.read_all(&v2, &old),
///     Ok(V2 { user_id: 7, clicks: 3, country: "unknown".into() })
/// );
/// // Going back is refused: v1 has no default for a `user` field that v2 lacks.
/// assert_eq!(v1.compatibility(&v2.snapshot()), Compatibility::Incompatible);
/// # Ok::<(), apache_avro::Error>(())
/// ```
///
/// Snapshot: identity `"eddy.avro"`, version 1, configuration the writer schema as JSON, as
/// the Avro crate writes a parsed schema (with its docs, defaults, aliases and logical types,
/// in a fixed order, so equal schemas give equal bytes). The full schema rather than its
/// Parsing Canonical Form is kept because the canonical form drops logical types, and so
/// would let a `decimal` whose scale changed read the old digits at the new scale.
///
/// # Encoding
///
/// A LEB128 varint byte length, then the Avro binary encoding of the value under the schema
/// (<https://avro.apache.org/docs/++version++/specification/#binary-encoding>), written by the
/// Avro crate's schema-aware `serde` serializer, with each array and map in one block. The
/// encoding of a value is a function of its `Serialize` output, so, as with
/// [`SerdeSerializer`](super::SerdeSerializer), types whose iteration order varies (`HashMap`)
/// are best kept out of keys; use `BTreeMap` for Avro maps.
///
/// Reading checks the datum against the schema first, without allocating: that it fills its
/// slot exactly, that every length fits in what is left of it, that all its arrays and maps
/// hold at most one item per byte of the slot (plus 1024: only items that encode to no bytes,
/// such as `null`, reach that far), and that it nests at most 128 levels of records, arrays,
/// maps and unions (only a recursive schema can go deeper). Only then does the Avro crate
/// decode it, so what it allocates is bounded by the slot's length, and damaged bytes are
/// [`CodecError::Truncated`] or [`CodecError::Invalid`], never a panic. [`write`] checks the
/// same limits, so whatever is written can be read.
///
/// [Parsing Canonical Form]: https://avro.apache.org/docs/++version++/specification/#parsing-canonical-form-for-schemas
/// [`write`]: Serializer::write
pub struct AvroSerializer<T> {
    inner: Arc<Inner>,
    _type: PhantomData<fn() -> T>,
}

/// The schema of an [`AvroSerializer`], with what is derived from it once.
struct Inner {
    /// The schema. Its named types are resolved anew by each read and write: the Avro crate
    /// keeps the resolution only as a borrow of the schema.
    schema: Schema,
    /// Its Parsing Canonical Form.
    canonical: String,
    /// Its JSON: the configuration of the snapshot.
    json: String,
}

impl<T> Clone for AvroSerializer<T> {
    fn clone(&self) -> Self {
        AvroSerializer { inner: self.inner.clone(), _type: PhantomData }
    }
}

impl<T> fmt::Debug for AvroSerializer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AvroSerializer")
            .field("type", &std::any::type_name::<T>())
            .field("schema", &self.inner.canonical)
            .finish()
    }
}

impl<T> PartialEq for AvroSerializer<T> {
    fn eq(&self, other: &Self) -> bool {
        self.inner.json == other.inner.json
    }
}

impl<T> Eq for AvroSerializer<T> {}

impl<T> AvroSerializer<T>
where
    T: Serialize + DeserializeOwned + 'static,
{
    /// A serializer of values under `schema`.
    ///
    /// # Panics
    ///
    /// If `schema` refers to a named type it does not define (a parsed schema never does; a
    /// schema built by hand can).
    pub fn new(schema: Schema) -> Self {
        match Self::try_new(schema) {
            Ok(s) => s,
            Err(e) => panic!("AvroSerializer::new: the schema does not resolve: {e}"),
        }
    }

    /// A serializer of values under the schema written as JSON in `schema`.
    pub fn from_json(schema: &str) -> Result<Self, apache_avro::Error> {
        Self::try_new(Schema::parse_str(schema)?)
    }

    fn try_new(schema: Schema) -> Result<Self, apache_avro::Error> {
        let canonical = schema.canonical_form();
        let json = schema_json(&schema);
        ResolvedSchema::try_from(&schema)?;
        Ok(AvroSerializer { inner: Arc::new(Inner { schema, canonical, json }), _type: PhantomData })
    }
}

impl<T> AvroSerializer<T> {
    /// The schema.
    pub fn schema(&self) -> &Schema {
        &self.inner.schema
    }

    /// How the data the serializer described by `old` wrote is read by this one: as is, under
    /// the old schema (with the fields it renamed) resolved to this one, or not at all.
    fn plan(&self, old: &SerializerSnapshot) -> Plan {
        if old.identity != IDENTITY || old.version != VERSION {
            return Plan::Incompatible;
        }
        if old.config == self.inner.json.as_bytes() {
            return Plan::AsIs;
        }
        let Some(writer) = std::str::from_utf8(&old.config).ok().and_then(|json| Schema::parse_str(json).ok()) else {
            return Plan::Incompatible;
        };
        if writer.canonical_form() == self.inner.canonical {
            return Plan::AsIs;
        }
        if !matches!(SchemaCompatibility::can_read(&writer, self.schema()), Ok(AvroCompatibility::Full)) {
            return Plan::Incompatible;
        }
        match renamed_writer(&writer, self.schema()).filter(|w| ResolvedSchema::try_from(w).is_ok()) {
            Some(writer) => Plan::Migrate(Arc::new(writer)),
            None => Plan::Incompatible,
        }
    }
}

/// The outcome of [`AvroSerializer::plan`].
enum Plan {
    AsIs,
    /// Read under this writer schema, resolved to the serializer's.
    Migrate(Arc<Schema>),
    Incompatible,
}

impl<T> Serializer for AvroSerializer<T>
where
    T: Serialize + DeserializeOwned + 'static,
{
    type Value = T;

    /// Appends the varint length and the Avro datum of `value`.
    ///
    /// # Panics
    ///
    /// If the value does not fit the schema (a field the schema lacks or a missing one, a
    /// type the schema does not allow, an `i64` beyond an `int`, ...), or exceeds the limits
    /// that reading checks (more than 128 levels of nesting; more items than bytes in its
    /// arrays and maps, plus 1024). Writing it would store what cannot be read. `out` is left
    /// as it was before the panic.
    fn write(&self, value: &T, out: &mut Vec<u8>) {
        let prefix_at = out.len();
        out.push(0);
        let schema = self.schema();
        let resolved = match ResolvedSchema::try_from(schema) {
            Ok(resolved) => resolved,
            Err(e) => unreachable!("the schema resolved when the serializer was made: {e}"),
        };
        if let Err(e) = write_avro_datum_ref(schema, resolved.get_names(), value, out) {
            out.truncate(prefix_at);
            panic!("AvroSerializer<{}>: the value does not fit the schema: {e}", std::any::type_name::<T>());
        }
        if let Err(e) = check_datum(schema, resolved.get_names(), &out[prefix_at + 1..]) {
            out.truncate(prefix_at);
            panic!("AvroSerializer<{}>: the value could not be read back: {e}", std::any::type_name::<T>());
        }
        let len = out.len() - prefix_at - 1;
        if len < 0x80 {
            out[prefix_at] = len as u8;
        } else {
            let mut prefix = Vec::with_capacity(10);
            write_varint(len as u64, &mut prefix);
            out.splice(prefix_at..=prefix_at, prefix);
        }
    }

    fn read(&self, input: &mut &[u8]) -> Result<T, CodecError> {
        let n = read_len(input, 1)?;
        decode(&self.inner.schema, None, take(input, n)?)
    }

    fn snapshot(&self) -> SerializerSnapshot {
        SerializerSnapshot {
            identity: IDENTITY.to_owned(),
            version: VERSION,
            config: self.inner.json.as_bytes().to_vec(),
        }
    }

    fn compatibility(&self, old: &SerializerSnapshot) -> Compatibility {
        match self.plan(old) {
            Plan::AsIs => Compatibility::AsIs,
            Plan::Migrate(_) => Compatibility::AfterMigration,
            Plan::Incompatible => Compatibility::Incompatible,
        }
    }

    fn old_reader(&self, old: &SerializerSnapshot) -> Option<OldReader<Self>> {
        match self.plan(old) {
            Plan::AsIs => Some(OldReader::as_is()),
            Plan::Migrate(writer) => Some(OldReader::new(move |new: &Self, input: &mut &[u8]| {
                let n = read_len(input, 1)?;
                decode(&writer, Some(new.schema()), take(input, n)?)
            })),
            Plan::Incompatible => None,
        }
    }
}

/// Reads the datum that fills `datum`, written under `writer`, resolved to `reader` if given.
fn decode<T: DeserializeOwned>(writer: &Schema, reader: Option<&Schema>, datum: &[u8]) -> Result<T, CodecError> {
    let resolved = ResolvedSchema::try_from(writer).map_err(|_| CodecError::Invalid("Avro schema does not resolve"))?;
    check_datum(writer, resolved.get_names(), datum)?;
    let decoder = GenericDatumReader::builder(writer)
        .resolved_writer_schemata(resolved)
        .maybe_reader_schema(reader)
        .build()
        .map_err(|_| CodecError::Invalid("Avro schema does not resolve"))?;
    let mut cursor = datum;
    let value = decoder.read_value(&mut cursor).map_err(|_| CodecError::Invalid("Avro datum"))?;
    if !cursor.is_empty() {
        return Err(CodecError::Invalid("Avro datum leaves bytes in its slot"));
    }
    from_value::<T>(&value).map_err(|_| CodecError::Invalid("Avro value does not fit the type"))
}

/// The JSON of a schema, as the Avro crate writes it: keys in a fixed order, so that equal
/// schemas give equal strings.
fn schema_json(schema: &Schema) -> String {
    // A schema holds only strings, numbers and JSON values, so this cannot fail.
    serde_json::to_string(schema).unwrap_or_default()
}

/// Checks, without allocating, that `datum` is exactly one value under `schema`, as far as
/// its framing goes (lengths, counts, union branches, nesting); what the Avro crate checks
/// when decoding (UTF-8, enum indexes, booleans, the range of an `int`) is left to it.
fn check_datum(schema: &Schema, names: &NamesRef<'_>, datum: &[u8]) -> Result<(), CodecError> {
    let mut input = datum;
    let mut check = Check { names, items_left: datum.len().saturating_add(FREE_ITEMS) };
    check.value(schema, None, &mut input, 0)?;
    if input.is_empty() {
        Ok(())
    } else {
        Err(CodecError::Invalid("Avro datum leaves bytes in its slot"))
    }
}

/// The state of [`check_datum`].
struct Check<'n, 's> {
    names: &'n NamesRef<'s>,
    /// The items that arrays and maps may still hold.
    items_left: usize,
}

impl Check<'_, '_> {
    fn value(
        &mut self,
        schema: &Schema,
        ns: NamespaceRef<'_>,
        input: &mut &[u8],
        depth: usize,
    ) -> Result<(), CodecError> {
        let nested = || {
            if depth < MAX_DEPTH {
                Ok(depth + 1)
            } else {
                Err(CodecError::Invalid("Avro value nested deeper than 128 levels"))
            }
        };
        match schema {
            Schema::Null => {}
            Schema::Boolean => {
                take(input, 1)?;
            }
            Schema::Int
            | Schema::Long
            | Schema::Enum(_)
            | Schema::Date
            | Schema::TimeMillis
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => {
                read_varint(input)?;
            }
            Schema::Float => {
                take(input, 4)?;
            }
            Schema::Double => {
                take(input, 8)?;
            }
            Schema::Bytes
            | Schema::String
            | Schema::Uuid(UuidSchema::String | UuidSchema::Bytes)
            | Schema::Decimal(DecimalSchema { inner: InnerDecimalSchema::Bytes, .. }) => {
                bytes(input)?;
            }
            Schema::BigDecimal => {
                // The digits are themselves length-prefixed inside the bytes, then the scale.
                let mut inner = bytes(input)?;
                bytes(&mut inner)?;
            }
            Schema::Fixed(fixed)
            | Schema::Duration(fixed)
            | Schema::Uuid(UuidSchema::Fixed(fixed))
            | Schema::Decimal(DecimalSchema { inner: InnerDecimalSchema::Fixed(fixed), .. }) => {
                take(input, fixed.size)?;
            }
            Schema::Array(array) => {
                let depth = nested()?;
                self.blocks(input, |c, input| c.value(&array.items, ns, input, depth))?;
            }
            Schema::Map(map) => {
                let depth = nested()?;
                self.blocks(input, |c, input| {
                    bytes(input)?;
                    c.value(&map.types, ns, input, depth)
                })?;
            }
            Schema::Union(union) => {
                let depth = nested()?;
                let branch = usize::try_from(zigzag(read_varint(input)?))
                    .ok()
                    .and_then(|i| union.variants().get(i))
                    .ok_or(CodecError::Invalid("Avro union branch out of range"))?;
                self.value(branch, ns, input, depth)?;
            }
            Schema::Record(RecordSchema { name, fields, .. }) => {
                let depth = nested()?;
                let name = name.fully_qualified_name(ns);
                for field in fields {
                    self.value(&field.schema, name.namespace(), input, depth)?;
                }
            }
            Schema::Ref { name } => {
                let name = name.fully_qualified_name(ns);
                let named = self.names.get(name.as_ref()).ok_or(CodecError::Invalid("Avro schema does not resolve"))?;
                self.value(named, name.namespace(), input, depth)?;
            }
        }
        Ok(())
    }

    /// The blocks of an array or a map, `item` checking one item.
    fn blocks(
        &mut self,
        input: &mut &[u8],
        mut item: impl FnMut(&mut Self, &mut &[u8]) -> Result<(), CodecError>,
    ) -> Result<(), CodecError> {
        loop {
            let count = zigzag(read_varint(input)?);
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                // A negative count is followed by the block's size in bytes.
                read_varint(input)?;
            }
            let count = usize::try_from(count.unsigned_abs()).unwrap_or(usize::MAX);
            if count > self.items_left {
                return Err(CodecError::Invalid("Avro arrays and maps hold more items than their slot allows"));
            }
            self.items_left -= count;
            for _ in 0..count {
                item(self, input)?;
            }
        }
    }
}

/// Decodes a zigzag-encoded `long`.
#[inline]
fn zigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Takes the bytes of a `bytes` or `string`: a `long` length, then as many bytes.
fn bytes<'a>(input: &mut &'a [u8]) -> Result<&'a [u8], CodecError> {
    let n = usize::try_from(zigzag(read_varint(input)?)).map_err(|_| CodecError::Invalid("negative Avro length"))?;
    take(input, n)
}

/// The old schema `writer` with each field that a field of `reader` names by an alias
/// renamed to the reader's name, so that resolving its values to `reader` finds them: Avro's
/// rules let a reader rename a field that way, and the Avro crate's compatibility check
/// accepts it, but its resolution of values matches fields by name only.
fn renamed_writer(writer: &Schema, reader: &Schema) -> Option<Schema> {
    let writer_names = ResolvedSchema::try_from(writer).ok()?;
    let reader_names = ResolvedSchema::try_from(reader).ok()?;
    let mut renames = Renames {
        writer_names: writer_names.get_names(),
        reader_names: reader_names.get_names(),
        seen: HashSet::new(),
        fields: HashMap::new(),
    };
    renames.pair(writer, reader);
    if renames.fields.is_empty() {
        return Some(writer.clone());
    }
    let mut json = serde_json::to_value(writer).ok()?;
    rename_fields(&mut json, &renames.fields);
    Schema::parse(&json).ok()
}

/// The renames that [`renamed_writer`] finds by walking the writer and reader schemas side by
/// side, as Avro's resolution pairs them.
struct Renames<'n, 's> {
    writer_names: &'n NamesRef<'s>,
    reader_names: &'n NamesRef<'s>,
    /// The pairs of writer and reader records already walked (recursive schemas).
    seen: HashSet<(String, String)>,
    /// Per full name of a writer record: its fields to rename, from and to.
    fields: HashMap<String, Vec<(String, String)>>,
}

impl Renames<'_, '_> {
    fn pair(&mut self, writer: &Schema, reader: &Schema) {
        let (writer_names, reader_names) = (self.writer_names, self.reader_names);
        let writer = named(writer, writer_names);
        let reader = named(reader, reader_names);
        match (writer, reader) {
            (Schema::Record(w), Schema::Record(r)) => {
                if !self.seen.insert((w.name.fullname(None), r.name.fullname(None))) {
                    return;
                }
                for field in &r.fields {
                    let by_name = w.fields.iter().find(|f| f.name == field.name);
                    let by_alias = || field.aliases.iter().find_map(|a| w.fields.iter().find(|f| &f.name == a));
                    if let Some(old) = by_name {
                        self.pair(&old.schema, &field.schema);
                    } else if let Some(old) = by_alias() {
                        self.fields
                            .entry(w.name.fullname(None))
                            .or_default()
                            .push((old.name.clone(), field.name.clone()));
                        self.pair(&old.schema, &field.schema);
                    }
                }
            }
            (Schema::Array(w), Schema::Array(r)) => self.pair(&w.items, &r.items),
            (Schema::Map(w), Schema::Map(r)) => self.pair(&w.types, &r.types),
            (Schema::Union(w), Schema::Union(r)) => {
                for branch in w.variants() {
                    if let Some(to) = r.variants().iter().find(|to| self.same_kind(branch, to)) {
                        self.pair(branch, to);
                    }
                }
            }
            (Schema::Union(w), _) => {
                for branch in w.variants() {
                    self.pair(branch, reader);
                }
            }
            (_, Schema::Union(r)) => {
                if let Some(to) = r.variants().iter().find(|to| self.same_kind(writer, to)) {
                    self.pair(writer, to);
                }
            }
            _ => {}
        }
    }

    /// Whether a writer's union branch and a reader's are the same record (by name), array or
    /// map, the ones whose fields may need renaming.
    fn same_kind(&self, writer: &Schema, reader: &Schema) -> bool {
        match (named(writer, self.writer_names), named(reader, self.reader_names)) {
            (Schema::Record(w), Schema::Record(r)) => w.name.name() == r.name.name(),
            (Schema::Array(_), Schema::Array(_)) | (Schema::Map(_), Schema::Map(_)) => true,
            _ => false,
        }
    }
}

/// The named type a reference refers to (or `schema` itself).
fn named<'a>(schema: &'a Schema, names: &'a NamesRef<'_>) -> &'a Schema {
    match schema {
        Schema::Ref { name } => names.get(name).copied().unwrap_or(schema),
        _ => schema,
    }
}

/// Renames the fields of the records in a schema's JSON by `renames` (per record full name:
/// from and to).
fn rename_fields(json: &mut Json, renames: &HashMap<String, Vec<(String, String)>>) {
    match json {
        Json::Array(branches) => branches.iter_mut().for_each(|b| rename_fields(b, renames)),
        Json::Object(map) => match map.get("type").and_then(Json::as_str) {
            Some("record") => {
                let name = map.get("name").and_then(Json::as_str).unwrap_or_default();
                let full = match map.get("namespace").and_then(Json::as_str) {
                    Some(ns) if !ns.is_empty() => format!("{ns}.{name}"),
                    _ => name.to_owned(),
                };
                let Some(Json::Array(fields)) = map.get_mut("fields") else { return };
                for field in fields {
                    let Json::Object(field) = field else { continue };
                    if let Some(Json::String(name)) = field.get_mut("name") {
                        if let Some((_, to)) = renames.get(&full).and_then(|r| r.iter().find(|(from, _)| from == name))
                        {
                            *name = to.clone();
                        }
                    }
                    if let Some(ty) = field.get_mut("type") {
                        rename_fields(ty, renames);
                    }
                }
            }
            Some("array") => map.get_mut("items").into_iter().for_each(|t| rename_fields(t, renames)),
            Some("map") => map.get_mut("values").into_iter().for_each(|t| rename_fields(t, renames)),
            _ => {
                if let Some(ty @ (Json::Object(_) | Json::Array(_))) = map.get_mut("type") {
                    rename_fields(ty, renames);
                }
            }
        },
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use apache_avro::writer::datum::GenericDatumWriter;
    use quickcheck::{quickcheck, Arbitrary, Gen};
    use serde::Deserialize;

    use super::super::builtin::tests::{check_eq, enc, fuzz, snapshot_round_trip, Res};
    use super::super::part_reader;
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Kind {
        Click,
        View,
        Purchase,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Event {
        id: i64,
        user: String,
        kind: Kind,
        score: f64,
        ratio: f32,
        ok: bool,
        note: Option<String>,
        tags: Vec<String>,
        counts: BTreeMap<String, i32>,
    }

    const EVENT: &str = r#"{"type": "record", "name": "Event", "namespace": "test", "fields": [
        {"name": "id", "type": "long"},
        {"name": "user", "type": "string"},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["Click", "View", "Purchase"]}},
        {"name": "score", "type": "double"},
        {"name": "ratio", "type": "float"},
        {"name": "ok", "type": "boolean"},
        {"name": "note", "type": ["null", "string"], "default": null},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "counts", "type": {"type": "map", "values": "int"}}
    ]}"#;

    impl Arbitrary for Kind {
        fn arbitrary(g: &mut Gen) -> Self {
            g.choose(&[Kind::Click, Kind::View, Kind::Purchase]).unwrap().clone()
        }
    }

    impl Arbitrary for Event {
        fn arbitrary(g: &mut Gen) -> Self {
            Event {
                id: i64::arbitrary(g),
                user: String::arbitrary(g),
                kind: Kind::arbitrary(g),
                // Finite, so that values compare equal to themselves.
                score: f64::from(i32::arbitrary(g)) / 8.0,
                ratio: f32::from(i16::arbitrary(g)) / 4.0,
                ok: bool::arbitrary(g),
                note: Option::arbitrary(g),
                tags: Vec::arbitrary(g),
                counts: BTreeMap::arbitrary(g),
            }
        }
    }

    fn events() -> AvroSerializer<Event> {
        AvroSerializer::from_json(EVENT).unwrap()
    }

    fn event(n: usize) -> Event {
        Event {
            id: -7,
            user: "é".repeat(n),
            kind: Kind::Purchase,
            score: 2.5,
            ratio: -0.25,
            ok: true,
            note: Some("n".into()),
            tags: vec!["a".into(), String::new()],
            counts: BTreeMap::from([("x".into(), 1), ("y".into(), i32::MIN)]),
        }
    }

    /// Writes `v` with `old` and reads it back through `new`'s reader of `old`'s data.
    fn migrate<O: Serializer, N: Serializer>(old: &O, new: &N, v: &O::Value) -> Result<N::Value, CodecError> {
        let reader = part_reader(new, &old.snapshot()).ok_or(CodecError::Invalid("no reader"))?;
        reader.read_all(new, &enc(old, v))
    }

    fn avro<T: Serialize + DeserializeOwned + 'static>(json: &str) -> AvroSerializer<T> {
        AvroSerializer::from_json(json).unwrap()
    }

    #[test]
    fn round_trips() {
        fn prop(a: Event, b: Event) -> Res {
            check_eq(&events(), a, b)
        }
        quickcheck(prop as fn(Event, Event) -> Res);
        // Around every varint length boundary of the prefix.
        for n in [0, 40, 50, 60, 70, 8_000, 8_200, 1_100_000] {
            check_eq(&events(), event(n), event(n / 2)).unwrap();
        }
        check_eq(&avro::<i64>(r#""long""#), i64::MIN, 0).unwrap();
        check_eq(&avro::<Option<String>>(r#"["null", "string"]"#), None, Some("s".into())).unwrap();
        check_eq(&avro::<()>(r#""null""#), (), ()).unwrap();
    }

    #[test]
    fn the_encoding_is_a_length_and_an_avro_datum() {
        let s = events();
        for n in [0, 1, 63, 64, 8_191, 8_192, 40_000] {
            // One map entry: the crate's `Value` keeps a map in a `HashMap`.
            let value = Event { counts: BTreeMap::from([("k".into(), -1)]), ..event(n) };
            // The crate's other writer: through its `Value`s.
            let datum = GenericDatumWriter::builder(s.schema())
                .build()
                .unwrap()
                .write_value_to_vec(apache_avro::to_value(&value).unwrap().resolve(s.schema()).unwrap())
                .unwrap();
            let mut expected = vec![0xEE];
            write_varint(datum.len() as u64, &mut expected);
            expected.extend_from_slice(&datum);
            let mut out = vec![0xEE];
            s.write(&value, &mut out);
            assert_eq!(out, expected, "n = {n}");
        }
        // A record of a long and an int: both zigzag varints.
        #[derive(Serialize, Deserialize)]
        struct Pair {
            a: i64,
            b: i32,
        }
        let pair = avro::<Pair>(
            r#"{"type": "record", "name": "Pair", "fields": [{"name": "a", "type": "long"}, {"name": "b", "type": "int"}]}"#,
        );
        assert_eq!(enc(&pair, &Pair { a: -1, b: 64 }), [3, 1, 0x80, 0x01]);
    }

    #[test]
    fn bad_slots_are_errors() {
        let s = avro::<String>(r#""string""#);
        // A value that ends before its slot does, and one that ends after.
        assert_eq!(s.read_all(&[3, 2, b'a', 0]), Err(CodecError::Invalid("Avro datum leaves bytes in its slot")));
        assert_eq!(s.read_all(&[2, 4, b'a']), Err(CodecError::Truncated { needed: 1 }));
        // Bad UTF-8, a negative length, a bad boolean, enum symbol and union branch.
        assert_eq!(s.read_all(&[3, 4, 0xff, 0xfe]), Err(CodecError::Invalid("Avro datum")));
        assert_eq!(s.read_all(&[1, 1]), Err(CodecError::Invalid("negative Avro length")));
        assert_eq!(avro::<bool>(r#""boolean""#).read_all(&[1, 2]), Err(CodecError::Invalid("Avro datum")));
        let kind = avro::<Kind>(r#"{"type": "enum", "name": "Kind", "symbols": ["Click", "View", "Purchase"]}"#);
        assert_eq!(kind.read_all(&[1, 6]), Err(CodecError::Invalid("Avro datum")));
        let option = avro::<Option<String>>(r#"["null", "string"]"#);
        assert_eq!(option.read_all(&[1, 4]), Err(CodecError::Invalid("Avro union branch out of range")));
        assert_eq!(option.read_all(&[1, 1]), Err(CodecError::Invalid("Avro union branch out of range")));
        // An empty slot is not a value, even where the crate would read one at the end of its
        // input (a union as its first branch, a string as null).
        assert_eq!(option.read_all(&[0]), Err(CodecError::Truncated { needed: 1 }));
        assert_eq!(s.read_all(&[0]), Err(CodecError::Truncated { needed: 1 }));
        // A datum of the wrong type for `T`.
        assert_eq!(
            avro::<i64>(r#""string""#).read_all(&[2, 2, b'a']),
            Err(CodecError::Invalid("Avro value does not fit the type"))
        );
        // Huge claimed lengths and counts, inside the slot or of the slot, allocate nothing.
        assert_eq!(
            s.read_all(&[5, 0xfe, 0xff, 0xff, 0xff, 0x0f]),
            Err(CodecError::Truncated { needed: 2_147_483_647 })
        );
        let big = avro::<Vec<u8>>(r#"{"type": "fixed", "name": "Big", "size": 1000000000000}"#);
        assert!(matches!(big.read_all(&[1, 0]), Err(CodecError::Truncated { .. })));
        let nulls = avro::<Vec<()>>(r#"{"type": "array", "items": "null"}"#);
        assert_eq!(
            nulls.read_all(&[6, 0xfe, 0xff, 0xff, 0xff, 0x0f, 0]),
            Err(CodecError::Invalid("Avro arrays and maps hold more items than their slot allows"))
        );
        // 4000 items in 3 bytes.
        assert_eq!(
            nulls.read_all(&[3, 0xc0, 0x3e, 0]),
            Err(CodecError::Invalid("Avro arrays and maps hold more items than their slot allows"))
        );
        assert!(matches!(s.read_all(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0]), Err(CodecError::Truncated { .. })));
    }

    #[test]
    fn random_bytes_never_panic() {
        fn prop(bytes: Vec<u8>) -> bool {
            let nulls = avro::<Vec<()>>(r#"{"type": "array", "items": "null"}"#);
            let decimal = avro::<apache_avro::BigDecimal>(r#"{"type": "bytes", "logicalType": "big-decimal"}"#);
            fuzz(&events(), &bytes) && fuzz(&list(), &bytes) && fuzz(&nulls, &bytes) && fuzz(&decimal, &bytes)
        }
        quickcheck(prop as fn(Vec<u8>) -> bool);
        // Every single-byte change of a valid encoding.
        let bytes = enc(&events(), &event(3));
        for i in 0..bytes.len() {
            for x in [0x01, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[i] ^= x;
                assert!(prop(damaged));
            }
        }
    }

    /// A recursive schema: a linked list.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Node {
        v: i32,
        next: Option<Box<Node>>,
    }

    fn list() -> AvroSerializer<Node> {
        avro(
            r#"{"type": "record", "name": "Node", "fields": [{"name": "v", "type": "int"}, {"name": "next", "type": ["null", "Node"]}]}"#,
        )
    }

    fn nodes(n: usize) -> Node {
        (1..n).fold(Node { v: 0, next: None }, |next, v| Node { v: v as i32, next: Some(Box::new(next)) })
    }

    #[test]
    fn deep_values_and_many_empty_items_are_refused_not_overflowed() {
        // Each node is a record and a union: two levels.
        let s = list();
        check_eq(&s, nodes(MAX_DEPTH / 2), nodes(1)).unwrap();
        let mut deep = Vec::new();
        for _ in 0..100_000 {
            deep.extend_from_slice(&[0, 2]);
        }
        deep.extend_from_slice(&[0, 0]);
        let mut slot = Vec::new();
        write_varint(deep.len() as u64, &mut slot);
        slot.extend_from_slice(&deep);
        assert_eq!(s.read_all(&slot), Err(CodecError::Invalid("Avro value nested deeper than 128 levels")));
        let too_deep = std::panic::catch_unwind(|| enc(&list(), &nodes(MAX_DEPTH / 2 + 1)));
        assert!(too_deep.is_err(), "a value too deep to read is refused by write");
        // Items that take no bytes: up to the slot's length plus FREE_ITEMS.
        let nulls = avro::<Vec<()>>(r#"{"type": "array", "items": "null"}"#);
        check_eq(&nulls, vec![(); FREE_ITEMS], vec![]).unwrap();
        let too_many = std::panic::catch_unwind(|| {
            enc(&avro::<Vec<()>>(r#"{"type": "array", "items": "null"}"#), &vec![(); 2 * FREE_ITEMS])
        });
        assert!(too_many.is_err(), "a value with too many empty items is refused by write");
    }

    #[test]
    fn values_that_do_not_fit_the_schema_panic_in_write() {
        let mut out = vec![1, 2];
        let s = avro::<i64>(r#""int""#);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.write(&(1 << 40), &mut out)));
        assert!(result.is_err());
        assert_eq!(out, [1, 2], "a failed write leaves the buffer as it was");
        let mut err = std::panic::catch_unwind(|| enc(&avro::<String>(r#""long""#), &"x".to_owned())).unwrap_err();
        let message = err.downcast_mut::<String>().map(std::mem::take).unwrap_or_default();
        assert!(message.contains("does not fit the schema"), "{message}");
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct V1 {
        user: i64,
        clicks: i32,
        note: String,
    }

    const V1_SCHEMA: &str = r#"{"type": "record", "name": "Clicks", "namespace": "app", "fields": [
        {"name": "user", "type": "long"},
        {"name": "clicks", "type": "int"},
        {"name": "note", "type": "string"}
    ]}"#;

    fn v1() -> V1 {
        V1 { user: 7, clicks: -3, note: "n".into() }
    }

    #[test]
    fn an_added_field_with_a_default_reads_old_data() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct V2 {
            user: i64,
            clicks: i32,
            note: String,
            country: String,
            tags: Option<Vec<String>>,
        }
        let new = avro::<V2>(
            r#"{"type": "record", "name": "Clicks", "namespace": "app", "fields": [
                {"name": "user", "type": "long"},
                {"name": "clicks", "type": "int"},
                {"name": "note", "type": "string"},
                {"name": "country", "type": "string", "default": "zz"},
                {"name": "tags", "type": ["null", {"type": "array", "items": "string"}], "default": null}
            ]}"#,
        );
        let old = avro::<V1>(V1_SCHEMA);
        assert_eq!(new.compatibility(&old.snapshot()), Compatibility::AfterMigration);
        assert_eq!(
            migrate(&old, &new, &v1()),
            Ok(V2 { user: 7, clicks: -3, note: "n".into(), country: "zz".into(), tags: None })
        );
        // Back: the old schema ignores the fields it does not know.
        assert_eq!(old.compatibility(&new.snapshot()), Compatibility::AfterMigration);
    }

    #[test]
    fn a_removed_field_is_skipped() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct V2 {
            clicks: i32,
        }
        let new = avro::<V2>(
            r#"{"type": "record", "name": "Clicks", "namespace": "app", "fields": [{"name": "clicks", "type": "int"}]}"#,
        );
        assert_eq!(migrate(&avro::<V1>(V1_SCHEMA), &new, &v1()), Ok(V2 { clicks: -3 }));
    }

    #[test]
    fn an_alias_renames_a_field() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct V2 {
            user_id: i64,
            clicks: i32,
            comment: String,
        }
        let new = avro::<V2>(
            r#"{"type": "record", "name": "Clicks", "namespace": "app", "fields": [
                {"name": "user_id", "type": "long", "aliases": ["uid", "user"]},
                {"name": "clicks", "type": "int"},
                {"name": "comment", "type": "string", "aliases": ["note"]}
            ]}"#,
        );
        assert_eq!(
            migrate(&avro::<V1>(V1_SCHEMA), &new, &v1()),
            Ok(V2 { user_id: 7, clicks: -3, comment: "n".into() })
        );
        // An alias that names no old field is no rename: the field needs a default.
        let unnamed = avro::<V2>(
            r#"{"type": "record", "name": "Clicks", "namespace": "app", "fields": [
                {"name": "user_id", "type": "long", "aliases": ["uid"]},
                {"name": "clicks", "type": "int"},
                {"name": "comment", "type": "string", "aliases": ["note"]}
            ]}"#,
        );
        assert_eq!(unnamed.compatibility(&avro::<V1>(V1_SCHEMA).snapshot()), Compatibility::Incompatible);
    }

    #[test]
    fn renames_reach_records_inside_unions_arrays_and_references() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct OldInner {
            x: i32,
        }
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct OldOuter {
            maybe: Option<OldInner>,
            all: Vec<OldInner>,
            by_key: BTreeMap<String, OldInner>,
        }
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Inner {
            y: i64,
        }
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Outer {
            maybe: Option<Inner>,
            all: Vec<Inner>,
            by_key: BTreeMap<String, Inner>,
        }
        let old = avro::<OldOuter>(
            r#"{"type": "record", "name": "Outer", "namespace": "n", "fields": [
                {"name": "maybe", "type": ["null", {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "int"}]}]},
                {"name": "all", "type": {"type": "array", "items": "n.Inner"}},
                {"name": "by_key", "type": {"type": "map", "values": "Inner"}}
            ]}"#,
        );
        let new = avro::<Outer>(
            r#"{"type": "record", "name": "Outer", "namespace": "n", "fields": [
                {"name": "maybe", "type": ["null", {"type": "record", "name": "Inner", "fields": [
                    {"name": "y", "type": "long", "aliases": ["x"]}
                ]}]},
                {"name": "all", "type": {"type": "array", "items": "Inner"}},
                {"name": "by_key", "type": {"type": "map", "values": "Inner"}}
            ]}"#,
        );
        let value = OldOuter {
            maybe: Some(OldInner { x: 2 }),
            all: vec![OldInner { x: 3 }, OldInner { x: 4 }],
            by_key: BTreeMap::from([("k".into(), OldInner { x: 5 })]),
        };
        assert_eq!(
            migrate(&old, &new, &value),
            Ok(Outer {
                maybe: Some(Inner { y: 2 }),
                all: vec![Inner { y: 3 }, Inner { y: 4 }],
                by_key: BTreeMap::from([("k".into(), Inner { y: 5 })]),
            })
        );
        // The Avro crate's check compares a reference only with a reference: a named type
        // defined where the other schema refers to it counts as a mismatch, so that change
        // is refused (no data is read wrong, but the state cannot evolve so).
        let moved = avro::<Outer>(
            r#"{"type": "record", "name": "Outer", "namespace": "n", "fields": [
                {"name": "maybe", "type": ["null", "string"]},
                {"name": "all", "type": {"type": "array", "items": {"type": "record", "name": "Inner", "fields": [
                    {"name": "y", "type": "long", "aliases": ["x"]}
                ]}}},
                {"name": "by_key", "type": {"type": "map", "values": "Inner"}}
            ]}"#,
        );
        assert_eq!(moved.compatibility(&old.snapshot()), Compatibility::Incompatible);
    }

    #[test]
    fn numbers_are_promoted() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct V2 {
            user: f64,
            clicks: i64,
            note: String,
        }
        let new = avro::<V2>(
            r#"{"type": "record", "name": "Clicks", "namespace": "app", "fields": [
                {"name": "user", "type": "double"},
                {"name": "clicks", "type": "long"},
                {"name": "note", "type": "string"}
            ]}"#,
        );
        assert_eq!(migrate(&avro::<V1>(V1_SCHEMA), &new, &v1()), Ok(V2 { user: 7.0, clicks: -3, note: "n".into() }));
        assert_eq!(migrate(&avro::<i32>(r#""int""#), &avro::<i64>(r#""long""#), &i32::MIN), Ok(i64::from(i32::MIN)));
        assert_eq!(migrate(&avro::<f32>(r#""float""#), &avro::<f64>(r#""double""#), &-1.5), Ok(-1.5));
        let ints = avro::<Vec<i32>>(r#"{"type": "array", "items": "int"}"#);
        let longs = avro::<Vec<i64>>(r#"{"type": "array", "items": "long"}"#);
        assert_eq!(migrate(&ints, &longs, &vec![1, -2, i32::MAX]), Ok(vec![1, -2, i64::from(i32::MAX)]));
        // A value wrapped in a union.
        assert_eq!(migrate(&avro::<i32>(r#""int""#), &avro::<Option<i64>>(r#"["null", "long"]"#), &5), Ok(Some(5)));
        // Narrowing is refused.
        assert_eq!(avro::<i32>(r#""int""#).compatibility(&longs.snapshot()), Compatibility::Incompatible);
        assert_eq!(
            avro::<i32>(r#""int""#).compatibility(&avro::<i64>(r#""long""#).snapshot()),
            Compatibility::Incompatible
        );
    }

    #[test]
    fn incompatible_changes_are_found_before_reading() {
        let old = avro::<V1>(V1_SCHEMA).snapshot();
        for (schema, why) in [
            (
                r#"{"type": "record", "name": "Clicks", "namespace": "app", "fields": [
                    {"name": "user", "type": "long"}, {"name": "clicks", "type": "int"}, {"name": "note", "type": "string"},
                    {"name": "country", "type": "string"}]}"#,
                "a field added without a default",
            ),
            (
                r#"{"type": "record", "name": "Clicks", "namespace": "app", "fields": [
                    {"name": "user", "type": "long"}, {"name": "clicks", "type": "int"}, {"name": "note", "type": "int"}]}"#,
                "string to int",
            ),
            (
                r#"{"type": "record", "name": "Taps", "namespace": "app", "fields": [
                    {"name": "user", "type": "long"}, {"name": "clicks", "type": "int"}, {"name": "note", "type": "string"}]}"#,
                "a renamed record",
            ),
            (r#""string""#, "another type"),
        ] {
            let new = avro::<V1>(schema);
            assert_eq!(new.compatibility(&old), Compatibility::Incompatible, "{why}");
            assert!(new.old_reader(&old).is_none(), "{why}");
        }
        // A change that reads only some old values: an enum symbol removed without a default.
        let three = avro::<Kind>(r#"{"type": "enum", "name": "Kind", "symbols": ["Click", "View", "Purchase"]}"#);
        let two = avro::<Kind>(r#"{"type": "enum", "name": "Kind", "symbols": ["Click", "View"]}"#);
        assert_eq!(two.compatibility(&three.snapshot()), Compatibility::Incompatible);
        assert_eq!(three.compatibility(&two.snapshot()), Compatibility::AfterMigration);
        // A decimal's scale: the reason the snapshot keeps logical types.
        let cents =
            avro::<apache_avro::Decimal>(r#"{"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}"#);
        let mills =
            avro::<apache_avro::Decimal>(r#"{"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 3}"#);
        assert_eq!(mills.compatibility(&cents.snapshot()), Compatibility::Incompatible);
        // Another serializer's data.
        assert_eq!(
            avro::<String>(r#""string""#).compatibility(&super::super::Str.snapshot()),
            Compatibility::Incompatible
        );
    }

    #[test]
    fn damaged_old_data_is_an_error_not_a_panic() {
        let old = avro::<V1>(V1_SCHEMA);
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct V2 {
            user: i64,
            clicks: i64,
        }
        let new = avro::<V2>(
            r#"{"type": "record", "name": "Clicks", "namespace": "app", "fields": [
                {"name": "user", "type": "long"}, {"name": "clicks", "type": "long"}]}"#,
        );
        let reader = new.old_reader(&old.snapshot()).unwrap();
        let bytes = enc(&old, &v1());
        assert!(reader.read_all(&new, &bytes).is_ok());
        for cut in 0..bytes.len() {
            assert!(reader.read_all(&new, &bytes[..cut]).is_err());
        }
        for i in 0..bytes.len() {
            for x in [0x01, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[i] ^= x;
                let _ = reader.read_all(&new, &damaged);
            }
        }
        fn prop(bytes: Vec<u8>) -> bool {
            let new = avro::<V2>(
                r#"{"type": "record", "name": "Clicks", "namespace": "app", "fields": [
                    {"name": "user", "type": "long"}, {"name": "clicks", "type": "long"}]}"#,
            );
            let reader = new.old_reader(&avro::<V1>(V1_SCHEMA).snapshot()).unwrap();
            let _ = reader.read_all(&new, &bytes);
            true
        }
        quickcheck(prop as fn(Vec<u8>) -> bool);
    }

    #[test]
    fn snapshots() {
        snapshot_round_trip(&events());
        let s = avro::<V1>(V1_SCHEMA);
        let snap = s.snapshot();
        assert_eq!((snap.identity.as_str(), snap.version), ("eddy.avro", 1));
        assert_eq!(
            Schema::parse_str(std::str::from_utf8(&snap.config).unwrap()).unwrap().canonical_form(),
            s.schema().canonical_form()
        );
        // Equal schemas give equal bytes, however their JSON was written.
        let respaced = avro::<V1>(
            r#"{"namespace": "app", "name": "Clicks", "type": "record", "fields": [{"type": "long", "name": "user"},
            {"name": "clicks", "type": {"type": "int"}}, {"name": "note", "type": "string"}]}"#,
        );
        assert_eq!(respaced.snapshot(), snap);
        assert_eq!(respaced, s);
        // Docs, defaults and aliases change the snapshot but not the bytes: as is.
        let documented = avro::<V1>(
            r#"{"type": "record", "name": "Clicks", "namespace": "app", "doc": "Clicks per user.", "fields": [
                {"name": "user", "type": "long", "aliases": ["u"]},
                {"name": "clicks", "type": "int", "default": 0},
                {"name": "note", "type": "string"}
            ]}"#,
        );
        assert_ne!(documented.snapshot(), snap);
        assert_eq!(documented.compatibility(&snap), Compatibility::AsIs);
        assert_eq!(s.compatibility(&documented.snapshot()), Compatibility::AsIs);
        assert!(format!("{s:?}").contains("app.Clicks"));
        // Damaged configurations, identities and versions are incompatible.
        let config = snap.config.clone();
        let mut damaged = vec![
            SerializerSnapshot { config: config[..config.len() - 1].to_vec(), ..snap.clone() },
            SerializerSnapshot { config: b"{}".to_vec(), ..snap.clone() },
            SerializerSnapshot { config: vec![0xff, 0xfe], ..snap.clone() },
            SerializerSnapshot { config: Vec::new(), ..snap.clone() },
            SerializerSnapshot { identity: "eddy.serde.postcard".into(), ..snap.clone() },
            SerializerSnapshot { version: 2, ..snap.clone() },
        ];
        for i in 0..config.len() {
            let mut c = config.clone();
            c[i] ^= 0x20;
            damaged.push(SerializerSnapshot { config: c, ..snap.clone() });
        }
        for old in &damaged[..6] {
            assert_eq!(s.compatibility(old), Compatibility::Incompatible, "{old:?}");
            assert!(s.old_reader(old).is_none());
        }
        // A flipped letter can still be a valid schema; any answer will do, but no panic.
        for old in &damaged[6..] {
            let _ = s.compatibility(old);
            let _ = s.old_reader(old);
        }
    }

    #[test]
    fn send_sync_clone_whatever_the_type() {
        fn assert_send_sync<S: Send + Sync + Clone>() {}
        assert_send_sync::<AvroSerializer<std::rc::Rc<u8>>>();
        assert_send_sync::<AvroSerializer<std::cell::Cell<u8>>>();
    }
}
