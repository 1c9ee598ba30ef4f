//! [`AvroSerializer`]: any `serde` type as an Avro datum under a schema that evolves by Avro's
//! schema resolution rules.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::{
    DecimalSchema, InnerDecimalSchema, NamesRef, NamespaceRef, RecordSchema, ResolvedOwnedSchema, ResolvedSchema,
    UuidSchema,
};
use apache_avro::schema_compatibility::{Compatibility as AvroCompatibility, SchemaCompatibility};
use apache_avro::{from_value, write_avro_datum_ref, Schema};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value as Json;

use super::{read_len, read_varint, take, write_varint, CodecError, Compatibility, OldReader, Serializer};
use super::{SerializerSnapshot, ShowSchema as _};

/// The identity of the serializer's snapshots.
const IDENTITY: &str = "eddy.avro";
/// The version of the encoding.
const VERSION: u32 = 1;
/// How deep records, arrays, maps and unions may nest in one value: the Avro crate decodes,
/// resolves and deserializes recursively, so deeper data (only a recursive schema can hold
/// it) would overflow the stack.
pub(crate) const MAX_DEPTH: usize = 128;
/// How many items all the arrays and maps of one value may hold beyond one per byte of its
/// slot. Only items that encode to no bytes at all (`null`, an empty record, a `fixed` of size
/// 0) can go beyond one per byte; they are still decoded one by one into the crate's values.
pub(crate) const FREE_ITEMS: usize = 1024;

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
///   to `float` or `double`, `float` to `double`, `string` and `bytes` either way, added enum
///   symbols or union branches, types wrapped in a union. Old values are read under the old
///   schema, resolved to the new one and converted to `T` (lazily, as the backend meets them);
/// - anything else is [`Compatibility::Incompatible`]: a field added without a default, a
///   changed type (`string` to `int`), a renamed record, and also a change that could read
///   only some of the old values (an enum symbol or a union branch removed): a restore reads
///   everything or refuses before reading anything.
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
/// assert_eq!(old, [4, 14, 6]); // the length, then the Avro datum: user 7, clicks 3 (zigzag)
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
    /// The schema, with its named types resolved.
    schema: ResolvedOwnedSchema,
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
        let schema = ResolvedOwnedSchema::new(schema)?;
        Ok(AvroSerializer { inner: Arc::new(Inner { schema, canonical, json }), _type: PhantomData })
    }
}

impl<T> AvroSerializer<T> {
    /// The schema.
    pub fn schema(&self) -> &Schema {
        self.inner.schema.get_root_schema()
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
        match renamed_writer(&writer, self.schema()).and_then(|w| ResolvedOwnedSchema::new(w).ok()) {
            Some(writer) => Plan::Migrate(Arc::new(writer)),
            None => Plan::Incompatible,
        }
    }
}

/// The outcome of [`AvroSerializer::plan`].
enum Plan {
    AsIs,
    /// Read under this writer schema, resolved to the serializer's.
    Migrate(Arc<ResolvedOwnedSchema>),
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
        let schema = &self.inner.schema;
        if let Err(e) = write_avro_datum_ref(schema.get_root_schema(), schema.get_names(), value, out) {
            out.truncate(prefix_at);
            panic!("AvroSerializer<{}>: the value does not fit the schema: {e}", std::any::type_name::<T>());
        }
        if let Err(e) = check_datum(schema.get_root_schema(), schema.get_names(), &out[prefix_at + 1..]) {
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
        SerializerSnapshot { identity: IDENTITY.to_owned(), version: VERSION, config: self.inner.json.as_bytes().to_vec() }
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
fn decode<T: DeserializeOwned>(
    writer: &ResolvedOwnedSchema,
    reader: Option<&Schema>,
    datum: &[u8],
) -> Result<T, CodecError> {
    check_datum(writer.get_root_schema(), writer.get_names(), datum)?;
    let decoder = GenericDatumReader::builder(writer.get_root_schema())
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
    fn value(&mut self, schema: &Schema, ns: NamespaceRef<'_>, input: &mut &[u8], depth: usize) -> Result<(), CodecError> {
        let nested = || if depth < MAX_DEPTH { Ok(depth + 1) } else { Err(CodecError::Invalid("Avro value nested deeper than 128 levels")) };
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
        let writer = named(writer, self.writer_names);
        let reader = named(reader, self.reader_names);
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
                        self.fields.entry(w.name.fullname(None)).or_default().push((old.name.clone(), field.name.clone()));
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
                        if let Some((_, to)) = renames.get(&full).and_then(|r| r.iter().find(|(from, _)| from == name)) {
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
