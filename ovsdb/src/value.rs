//! OVSDB data on the wire (RFC 7047 §5.1): atoms, sets, maps, rows, and the table-updates
//! bodies of `update` / `update2` / `update3` notifications.
//!
//! Sets and maps are kept sorted and without duplicates ([`AtomSet`], [`AtomMap`]: sorted
//! vectors, see `value/sorted.rs` for why not B-trees) so two values that mean the same
//! thing compare equal whatever order the server wrote them in; the cache compares rows
//! with the server's dump and the op builders diff rows, both need that. A bare atom stays
//! [`Value::Atom`] when parsed because without the schema nobody knows whether it is a
//! scalar or a one-element set; [`crate::schema::ColumnType::normalize`] resolves that
//! against a column type.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod sorted;
pub use sorted::{AtomMap, AtomSet, MapIter, MapKey};

/// A row: column name → value. `_uuid` and `_version` appear in rows read from the server.
pub type Row = BTreeMap<String, Value>;

/// Errors converting between OVSDB values and Rust types.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    #[error("expected {expected}, got {got}")]
    WrongType { expected: &'static str, got: String },
    #[error("expected at most one element, got {got}")]
    TooMany { got: usize },
}

/// One OVSDB atom.
#[derive(Debug, Clone)]
pub enum Atom {
    Integer(i64),
    Real(f64),
    Boolean(bool),
    String(String),
    Uuid(Uuid),
    /// A `uuid-name` of an insert in the same transaction.
    NamedUuid(String),
}

impl Atom {
    fn rank(&self) -> u8 {
        match self {
            Atom::Integer(_) => 0,
            Atom::Real(_) => 1,
            Atom::Boolean(_) => 2,
            Atom::String(_) => 3,
            Atom::Uuid(_) => 4,
            Atom::NamedUuid(_) => 5,
        }
    }

    /// The RFC 7047 name of this atom's type (`named-uuid` counts as `uuid`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Atom::Integer(_) => "integer",
            Atom::Real(_) => "real",
            Atom::Boolean(_) => "boolean",
            Atom::String(_) => "string",
            Atom::Uuid(_) | Atom::NamedUuid(_) => "uuid",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Atom::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_uuid(&self) -> Option<Uuid> {
        match self {
            Atom::Uuid(u) => Some(*u),
            _ => None,
        }
    }

    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Atom::Integer(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_real(&self) -> Option<f64> {
        match self {
            Atom::Real(r) => Some(*r),
            // ovsdb-server prints a real with no fraction as a JSON integer.
            Atom::Integer(i) => Some(*i as f64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Atom::Boolean(b) => Some(*b),
            _ => None,
        }
    }
}

// Reals compare by `total_cmp` so atoms can live in ordered sets; NaN never comes from a
// valid database, and -0.0 != 0.0 here keeps bit-exact round trips observable.
impl PartialEq for Atom {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Atom {}
impl PartialOrd for Atom {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Atom {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Atom::Integer(a), Atom::Integer(b)) => a.cmp(b),
            (Atom::Real(a), Atom::Real(b)) => a.total_cmp(b),
            (Atom::Boolean(a), Atom::Boolean(b)) => a.cmp(b),
            (Atom::String(a), Atom::String(b)) => a.cmp(b),
            (Atom::Uuid(a), Atom::Uuid(b)) => a.cmp(b),
            (Atom::NamedUuid(a), Atom::NamedUuid(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}
impl Hash for Atom {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
        match self {
            Atom::Integer(i) => i.hash(state),
            Atom::Real(r) => r.to_bits().hash(state),
            Atom::Boolean(b) => b.hash(state),
            Atom::String(s) | Atom::NamedUuid(s) => s.hash(state),
            Atom::Uuid(u) => u.hash(state),
        }
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_string(self) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

/// An OVSDB value: an atom, a set or a map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    Atom(Atom),
    Set(AtomSet),
    Map(AtomMap),
}

impl Value {
    pub fn empty_set() -> Value {
        Value::Set(AtomSet::new())
    }

    pub fn empty_map() -> Value {
        Value::Map(AtomMap::new())
    }

    pub fn set<I: IntoIterator<Item = A>, A: Into<Atom>>(items: I) -> Value {
        Value::Set(items.into_iter().map(Into::into).collect())
    }

    pub fn map<I: IntoIterator<Item = (K, V)>, K: Into<Atom>, V: Into<Atom>>(items: I) -> Value {
        Value::Map(
            items
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    pub fn uuid(u: Uuid) -> Value {
        Value::Atom(Atom::Uuid(u))
    }

    pub fn named_uuid(name: impl Into<String>) -> Value {
        Value::Atom(Atom::NamedUuid(name.into()))
    }

    /// Number of atoms (a map counts its pairs).
    pub fn len(&self) -> usize {
        match self {
            Value::Atom(_) => 1,
            Value::Set(s) => s.len(),
            Value::Map(m) => m.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The atoms of an atom or a set (a bare atom is a one-element set); `None` for a map.
    pub fn atoms(&self) -> Option<Vec<&Atom>> {
        match self {
            Value::Atom(a) => Some(vec![a]),
            Value::Set(s) => Some(s.iter().collect()),
            Value::Map(_) => None,
        }
    }

    /// The single atom of a scalar or a one-element set.
    pub fn as_atom(&self) -> Option<&Atom> {
        match self {
            Value::Atom(a) => Some(a),
            Value::Set(s) if s.len() == 1 => s.iter().next(),
            _ => None,
        }
    }

    /// The pairs of a map; an empty set counts as an empty map (without a schema the two
    /// cannot be told apart, and `["set",[]]` is a common way to write an empty map).
    pub fn as_map(&self) -> Option<&AtomMap> {
        static EMPTY: AtomMap = AtomMap::new();
        match self {
            Value::Map(m) => Some(m),
            Value::Set(s) if s.is_empty() => Some(&EMPTY),
            _ => None,
        }
    }

    /// Value of `key` in a map value with string keys.
    pub fn map_get(&self, key: &str) -> Option<&Atom> {
        match self {
            Value::Map(m) => m.get(key),
            _ => None,
        }
    }

    /// Rewrites this value into the canonical shape for a column (see
    /// [`crate::schema::ColumnType::normalize`], the public way in): scalars stay atoms, sets
    /// become [`Value::Set`] even when written as a bare atom, `["set",[]]` for a map column
    /// becomes an empty map, and integers in a real column become reals.
    pub(crate) fn normalize_shape(
        self,
        is_map: bool,
        scalar: bool,
        key_real: bool,
        value_real: bool,
    ) -> Value {
        let fix = |a: Atom, real: bool| match (a, real) {
            (Atom::Integer(i), true) => Atom::Real(i as f64),
            (a, _) => a,
        };
        match self {
            Value::Atom(a) if scalar => Value::Atom(fix(a, key_real)),
            Value::Set(s) if scalar && s.len() == 1 => {
                Value::Atom(fix(s.into_iter().next().expect("len 1"), key_real))
            }
            Value::Atom(a) if !is_map => Value::Set(AtomSet::from([fix(a, key_real)])),
            Value::Set(s) if is_map && s.is_empty() => Value::empty_map(),
            Value::Set(s) if key_real => Value::Set(s.into_iter().map(|a| fix(a, true)).collect()),
            Value::Map(m) if key_real || value_real => Value::Map(
                m.into_iter()
                    .map(|(k, v)| (fix(k, key_real), fix(v, value_real)))
                    .collect(),
            ),
            other => other,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_string(self) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

// ---- conversions from Rust types ----

impl From<i64> for Atom {
    fn from(v: i64) -> Self {
        Atom::Integer(v)
    }
}
impl From<f64> for Atom {
    fn from(v: f64) -> Self {
        Atom::Real(v)
    }
}
impl From<bool> for Atom {
    fn from(v: bool) -> Self {
        Atom::Boolean(v)
    }
}
impl From<&str> for Atom {
    fn from(v: &str) -> Self {
        Atom::String(v.to_string())
    }
}
impl From<String> for Atom {
    fn from(v: String) -> Self {
        Atom::String(v)
    }
}
impl From<&String> for Atom {
    fn from(v: &String) -> Self {
        Atom::String(v.clone())
    }
}
impl From<Uuid> for Atom {
    fn from(v: Uuid) -> Self {
        Atom::Uuid(v)
    }
}
impl<T: Into<Atom>> From<T> for Value {
    fn from(v: T) -> Self {
        Value::Atom(v.into())
    }
}

/// Conversion of one atom into a Rust type (used by the typed models).
pub trait FromAtom: Sized {
    fn from_atom(atom: &Atom) -> Result<Self, ValueError>;
}

/// Conversion of a Rust type into one atom (used by the typed models).
pub trait ToAtom {
    fn to_atom(&self) -> Atom;
}

fn wrong(expected: &'static str, atom: &Atom) -> ValueError {
    ValueError::WrongType {
        expected,
        got: atom.to_string(),
    }
}

impl FromAtom for i64 {
    fn from_atom(atom: &Atom) -> Result<Self, ValueError> {
        atom.as_integer().ok_or_else(|| wrong("integer", atom))
    }
}
impl FromAtom for f64 {
    fn from_atom(atom: &Atom) -> Result<Self, ValueError> {
        atom.as_real().ok_or_else(|| wrong("real", atom))
    }
}
impl FromAtom for bool {
    fn from_atom(atom: &Atom) -> Result<Self, ValueError> {
        atom.as_bool().ok_or_else(|| wrong("boolean", atom))
    }
}
impl FromAtom for String {
    fn from_atom(atom: &Atom) -> Result<Self, ValueError> {
        atom.as_str()
            .map(str::to_string)
            .ok_or_else(|| wrong("string", atom))
    }
}
impl FromAtom for Uuid {
    fn from_atom(atom: &Atom) -> Result<Self, ValueError> {
        atom.as_uuid().ok_or_else(|| wrong("uuid", atom))
    }
}
impl ToAtom for i64 {
    fn to_atom(&self) -> Atom {
        Atom::Integer(*self)
    }
}
impl ToAtom for f64 {
    fn to_atom(&self) -> Atom {
        Atom::Real(*self)
    }
}
impl ToAtom for bool {
    fn to_atom(&self) -> Atom {
        Atom::Boolean(*self)
    }
}
impl ToAtom for String {
    fn to_atom(&self) -> Atom {
        Atom::String(self.clone())
    }
}
impl ToAtom for Uuid {
    fn to_atom(&self) -> Atom {
        Atom::Uuid(*self)
    }
}

// ---- serde: wire forms ----

impl Serialize for Atom {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Atom::Integer(i) => s.serialize_i64(*i),
            Atom::Real(r) => {
                if !r.is_finite() {
                    return Err(serde::ser::Error::custom(format!(
                        "OVSDB reals must be finite, got {r}"
                    )));
                }
                s.serialize_f64(*r)
            }
            Atom::Boolean(b) => s.serialize_bool(*b),
            Atom::String(v) => s.serialize_str(v),
            Atom::Uuid(u) => {
                let mut seq = s.serialize_seq(Some(2))?;
                seq.serialize_element("uuid")?;
                seq.serialize_element(&u.hyphenated().to_string())?;
                seq.end()
            }
            Atom::NamedUuid(n) => {
                let mut seq = s.serialize_seq(Some(2))?;
                seq.serialize_element("named-uuid")?;
                seq.serialize_element(n)?;
                seq.end()
            }
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Pairs<'a>(&'a AtomMap);
        impl Serialize for Pairs<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for (k, v) in self.0 {
                    seq.serialize_element(&(k, v))?;
                }
                seq.end()
            }
        }
        match self {
            Value::Atom(a) => a.serialize(s),
            Value::Set(set) => {
                let mut seq = s.serialize_seq(Some(2))?;
                seq.serialize_element("set")?;
                seq.serialize_element(set.as_slice())?;
                seq.end()
            }
            Value::Map(m) => {
                let mut seq = s.serialize_seq(Some(2))?;
                seq.serialize_element("map")?;
                seq.serialize_element(&Pairs(m))?;
                seq.end()
            }
        }
    }
}

/// What a JSON array that is an OVSDB value starts with.
enum Tag {
    Uuid,
    NamedUuid,
    Set,
    Map,
}

impl<'de> Deserialize<'de> for Tag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Tag;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#""uuid", "named-uuid", "set" or "map""#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Tag, E> {
                match v {
                    "uuid" => Ok(Tag::Uuid),
                    "named-uuid" => Ok(Tag::NamedUuid),
                    "set" => Ok(Tag::Set),
                    "map" => Ok(Tag::Map),
                    other => Err(E::custom(format!(
                        "unknown OVSDB value tag {other:?} (expected \"uuid\", \"named-uuid\", \"set\" or \"map\")"
                    ))),
                }
            }
        }
        d.deserialize_str(V)
    }
}

fn parse_uuid<E: de::Error>(s: &str) -> Result<Uuid, E> {
    Uuid::parse_str(s).map_err(|e| E::custom(format!("invalid uuid {s:?}: {e}")))
}

fn named_uuid_ok(s: &str) -> bool {
    // RFC 7047 <id>: [a-zA-Z_][a-zA-Z0-9_]*
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Reads the second element of a tagged array and checks that nothing follows it.
fn tagged_body<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(
    mut seq: A,
    tag: &str,
) -> Result<T, A::Error> {
    let body: T = seq.next_element()?.ok_or_else(|| {
        de::Error::custom(format!("[\"{tag}\", …] is missing its second element"))
    })?;
    if seq.next_element::<de::IgnoredAny>()?.is_some() {
        return Err(de::Error::custom(format!(
            "[\"{tag}\", …] has more than two elements"
        )));
    }
    Ok(body)
}

struct AtomVisitor;

impl<'de> Visitor<'de> for AtomVisitor {
    type Value = Atom;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an OVSDB atom (number, boolean, string, [\"uuid\",…] or [\"named-uuid\",…])")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Atom, E> {
        Ok(Atom::Integer(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Atom, E> {
        i64::try_from(v)
            .map(Atom::Integer)
            .map_err(|_| E::custom(format!("integer {v} does not fit in 64 signed bits")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Atom, E> {
        Ok(Atom::Real(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Atom, E> {
        Ok(Atom::Boolean(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Atom, E> {
        Ok(Atom::String(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Atom, E> {
        Ok(Atom::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Atom, A::Error> {
        let tag: Tag = seq
            .next_element()?
            .ok_or_else(|| de::Error::custom("empty array is not an OVSDB atom"))?;
        match tag {
            Tag::Uuid => {
                let s: std::borrow::Cow<'de, str> = tagged_body(seq, "uuid")?;
                Ok(Atom::Uuid(parse_uuid(&s)?))
            }
            Tag::NamedUuid => {
                let s: String = tagged_body(seq, "named-uuid")?;
                if !named_uuid_ok(&s) {
                    return Err(de::Error::custom(format!(
                        "invalid named-uuid {s:?} (must match [a-zA-Z_][a-zA-Z0-9_]*)"
                    )));
                }
                Ok(Atom::NamedUuid(s))
            }
            Tag::Set | Tag::Map => Err(de::Error::custom(
                "a set or map appears where an atom was expected (sets and maps do not nest)",
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Atom {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AtomVisitor)
    }
}

/// `[[k, v], …]` with unique keys.
struct PairsSeed;
impl<'de> DeserializeSeed<'de> for PairsSeed {
    type Value = AtomMap;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AtomMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of [key, value] pairs")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(pair) = seq.next_element::<(Atom, Atom)>()? {
                    pairs.push(pair);
                }
                AtomMap::try_from_vec(pairs)
                    .map_err(|k| de::Error::custom(format!("duplicate map key {k}")))
            }
        }
        d.deserialize_seq(V)
    }
}

/// `[a, …]` with unique elements.
struct ElementsSeed;
impl<'de> DeserializeSeed<'de> for ElementsSeed {
    type Value = AtomSet;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AtomSet;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of atoms")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(a) = seq.next_element::<Atom>()? {
                    items.push(a);
                }
                AtomSet::try_from_vec(items)
                    .map_err(|a| de::Error::custom(format!("duplicate set element {a}")))
            }
        }
        d.deserialize_seq(V)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an OVSDB value (atom, [\"set\",…] or [\"map\",…])")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        AtomVisitor.visit_i64(v).map(Value::Atom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        AtomVisitor.visit_u64(v).map(Value::Atom)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        AtomVisitor.visit_f64(v).map(Value::Atom)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        AtomVisitor.visit_bool(v).map(Value::Atom)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        AtomVisitor.visit_str(v).map(Value::Atom)
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        AtomVisitor.visit_string(v).map(Value::Atom)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let tag: Tag = seq
            .next_element()?
            .ok_or_else(|| de::Error::custom("empty array is not an OVSDB value"))?;
        let body_missing =
            |t: &str| de::Error::custom(format!("[\"{t}\", …] is missing its second element"));
        let value = match tag {
            Tag::Uuid => {
                let s: std::borrow::Cow<'de, str> =
                    seq.next_element()?.ok_or_else(|| body_missing("uuid"))?;
                Value::Atom(Atom::Uuid(parse_uuid(&s)?))
            }
            Tag::NamedUuid => {
                let s: String = seq
                    .next_element()?
                    .ok_or_else(|| body_missing("named-uuid"))?;
                if !named_uuid_ok(&s) {
                    return Err(de::Error::custom(format!(
                        "invalid named-uuid {s:?} (must match [a-zA-Z_][a-zA-Z0-9_]*)"
                    )));
                }
                Value::Atom(Atom::NamedUuid(s))
            }
            Tag::Set => Value::Set(
                seq.next_element_seed(ElementsSeed)?
                    .ok_or_else(|| body_missing("set"))?,
            ),
            Tag::Map => Value::Map(
                seq.next_element_seed(PairsSeed)?
                    .ok_or_else(|| body_missing("map"))?,
            ),
        };
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(
                "a tagged OVSDB value has more than two elements",
            ));
        }
        Ok(value)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

// ---- monitor notifications ----

/// One row's change in an `update` (monitor v1) notification: `old` and/or `new`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<Row>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<Row>,
}

/// One row's change in an `update2` / `update3` notification (and the monitor_cond reply).
/// `Modify` carries a diff, not the new row: see [`crate::cache`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowUpdate2 {
    Initial(Row),
    Insert(Row),
    Modify(Row),
    Delete(Option<()>),
}

/// `<table-updates>`: table → row uuid → change. Generic over v1 ([`RowUpdate`]) and
/// v2/v3 ([`RowUpdate2`]).
pub type TableUpdates<R> = BTreeMap<String, BTreeMap<Uuid, R>>;

#[cfg(test)]
#[path = "value/tests.rs"]
mod tests;
