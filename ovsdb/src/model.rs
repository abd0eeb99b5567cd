//! Typed rows: the [`Model`] trait the generated structs in [`crate::models`] implement,
//! the [`Patch`] update form, the value conversions the generated code calls, and
//! [`check_compat`], which compares the schema the models were generated from with the
//! schema a server actually serves.
//!
//! The structs are generated (`src/bin/ovsdb-modelgen.rs`, logic in [`codegen`]) rather than
//! written by hand so that a schema upgrade is one command and a diff, and a test fails when
//! the committed files and the generator disagree.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use uuid::Uuid;

use crate::schema::{BaseType, ColumnType, DatabaseSchema};
use crate::value::{Atom, FromAtom, Row, ToAtom, Value, ValueError};

pub mod codegen;

/// Errors turning a row into a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("table {table}: the row has no column {column} (is it monitored?)")]
    MissingColumn {
        table: &'static str,
        column: &'static str,
    },
    #[error("table {table}, column {column}: {source}")]
    BadValue {
        table: &'static str,
        column: &'static str,
        #[source]
        source: ValueError,
    },
}

/// A generated table struct.
pub trait Model: Sized {
    /// The OVSDB table name.
    const TABLE: &'static str;
    /// Every column the struct holds (not `_uuid`).
    const COLUMNS: &'static [&'static str];

    /// `_uuid`; nil for a value not read from the database.
    fn uuid(&self) -> Uuid;

    /// Every column (not `_uuid`), as for an insert.
    fn to_row(&self) -> Row;

    /// Reads a row that has every column in [`Model::COLUMNS`] (and `_uuid`, else nil).
    /// A missing column is an error rather than a default, so a model built from a
    /// partially monitored table can never write defaults over columns it never saw.
    fn from_row(row: &Row) -> Result<Self, ModelError>;
}

/// An update form per generated struct (`FooUpdate`): only the columns that are not
/// [`Patch::Keep`] are written.
pub trait ModelUpdate {
    const TABLE: &'static str;
    fn to_row(&self) -> Row;
}

/// One column of an update: leave it alone, set it, or clear it (empty set or map, no value
/// for an optional column; the type's default for a required one). Keeping "leave alone"
/// apart from "clear" is the point: an `Option` alone cannot say both.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Patch<T> {
    #[default]
    Keep,
    Set(T),
    Clear,
}

impl<T> Patch<T> {
    /// Writes this column into `row` unless it is `Keep`.
    pub fn put(&self, row: &mut Row, column: &str, to: impl Fn(&T) -> Value, cleared: Value) {
        match self {
            Patch::Keep => {}
            Patch::Set(v) => {
                row.insert(column.to_string(), to(v));
            }
            Patch::Clear => {
                row.insert(column.to_string(), cleared);
            }
        }
    }
}

// ---- conversions the generated code uses ----

fn get<'r>(
    table: &'static str,
    row: &'r Row,
    column: &'static str,
) -> Result<&'r Value, ModelError> {
    row.get(column)
        .ok_or(ModelError::MissingColumn { table, column })
}

fn bad(table: &'static str, column: &'static str) -> impl Fn(ValueError) -> ModelError {
    move |source| ModelError::BadValue {
        table,
        column,
        source,
    }
}

/// `_uuid`, nil when absent.
pub fn row_uuid(table: &'static str, row: &Row) -> Result<Uuid, ModelError> {
    match row.get("_uuid") {
        None => Ok(Uuid::nil()),
        Some(v) => v
            .as_atom()
            .ok_or(ValueError::TooMany { got: v.len() })
            .and_then(Uuid::from_atom)
            .map_err(bad(table, "_uuid")),
    }
}

pub fn scalar<T: FromAtom>(
    table: &'static str,
    row: &Row,
    column: &'static str,
) -> Result<T, ModelError> {
    let v = get(table, row, column)?;
    v.as_atom()
        .ok_or(ValueError::WrongType {
            expected: "exactly one atom",
            got: v.to_string(),
        })
        .and_then(T::from_atom)
        .map_err(bad(table, column))
}

pub fn optional<T: FromAtom>(
    table: &'static str,
    row: &Row,
    column: &'static str,
) -> Result<Option<T>, ModelError> {
    let v = get(table, row, column)?;
    let atoms = v.atoms().ok_or_else(|| {
        bad(table, column)(ValueError::WrongType {
            expected: "zero or one atom",
            got: v.to_string(),
        })
    })?;
    match atoms.as_slice() {
        [] => Ok(None),
        [a] => T::from_atom(a).map(Some).map_err(bad(table, column)),
        more => Err(bad(table, column)(ValueError::TooMany { got: more.len() })),
    }
}

pub fn set<T: FromAtom + Ord>(
    table: &'static str,
    row: &Row,
    column: &'static str,
) -> Result<BTreeSet<T>, ModelError> {
    let v = get(table, row, column)?;
    let atoms = v.atoms().ok_or_else(|| {
        bad(table, column)(ValueError::WrongType {
            expected: "a set",
            got: v.to_string(),
        })
    })?;
    atoms
        .into_iter()
        .map(|a| T::from_atom(a).map_err(bad(table, column)))
        .collect()
}

pub fn map<K: FromAtom + Ord, V: FromAtom>(
    table: &'static str,
    row: &Row,
    column: &'static str,
) -> Result<BTreeMap<K, V>, ModelError> {
    match get(table, row, column)? {
        Value::Map(m) => m
            .iter()
            .map(|(k, v)| {
                Ok((
                    K::from_atom(k).map_err(bad(table, column))?,
                    V::from_atom(v).map_err(bad(table, column))?,
                ))
            })
            .collect(),
        // An empty map may arrive as `["set",[]]` from code that did not normalize.
        Value::Set(s) if s.is_empty() => Ok(BTreeMap::new()),
        v => Err(bad(table, column)(ValueError::WrongType {
            expected: "a map",
            got: v.to_string(),
        })),
    }
}

pub fn scalar_value<T: ToAtom>(v: &T) -> Value {
    Value::Atom(v.to_atom())
}

pub fn optional_value<T: ToAtom>(v: &Option<T>) -> Value {
    Value::Set(v.iter().map(ToAtom::to_atom).collect())
}

pub fn set_value<T: ToAtom>(v: &BTreeSet<T>) -> Value {
    Value::Set(v.iter().map(ToAtom::to_atom).collect())
}

pub fn map_value<K: ToAtom, V: ToAtom>(v: &BTreeMap<K, V>) -> Value {
    Value::Map(v.iter().map(|(k, v)| (k.to_atom(), v.to_atom())).collect())
}

/// Error for a string that is not one of an enum's values (generated `FromStr`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not {allowed}")]
pub struct UnknownVariant {
    pub value: String,
    pub allowed: &'static str,
}

/// Reads a generated enum from a string atom.
pub fn enum_from_atom<T: std::str::FromStr<Err = UnknownVariant>>(
    atom: &Atom,
    allowed: &'static str,
) -> Result<T, ValueError> {
    let s = atom.as_str().ok_or_else(|| ValueError::WrongType {
        expected: allowed,
        got: atom.to_string(),
    })?;
    s.parse().map_err(|_| ValueError::WrongType {
        expected: allowed,
        got: atom.to_string(),
    })
}

// ---- compatibility with the server's schema ----

/// One way the server's schema differs from the one the models were generated from.
#[derive(Debug, Clone, PartialEq)]
pub enum Mismatch {
    DatabaseName {
        ours: String,
        server: String,
    },
    /// Different major version: the schema changed incompatibly.
    MajorVersion {
        ours: String,
        server: String,
    },
    MissingTable {
        table: String,
    },
    MissingColumn {
        table: String,
        column: String,
    },
    TypeChanged {
        table: String,
        column: String,
        ours: String,
        server: String,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::DatabaseName { ours, server } => {
                write!(
                    f,
                    "the server serves database {server}, the models are for {ours}"
                )
            }
            Mismatch::MajorVersion { ours, server } => write!(
                f,
                "schema version {server} on the server, the models were generated from {ours} (major versions differ)"
            ),
            Mismatch::MissingTable { table } => write!(f, "table {table} is missing on the server"),
            Mismatch::MissingColumn { table, column } => {
                write!(f, "column {table}.{column} is missing on the server")
            }
            Mismatch::TypeChanged {
                table,
                column,
                ours,
                server,
            } => write!(
                f,
                "column {table}.{column} is {server} on the server, the models expect {ours}"
            ),
        }
    }
}

/// Everything that does not match, in one error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct CompatReport {
    pub ours_version: String,
    pub server_version: String,
    pub mismatches: Vec<Mismatch>,
}

impl fmt::Display for CompatReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server's schema (version {}) does not fit the models (generated from {}):",
            self.server_version, self.ours_version
        )?;
        for m in &self.mismatches {
            write!(f, "\n  - {m}")?;
        }
        Ok(())
    }
}

/// Human-readable column type, for mismatch reports.
pub fn describe_type(t: &ColumnType) -> String {
    fn base(b: &BaseType) -> String {
        let mut s = b.atomic.to_string();
        if let Some(e) = &b.enum_values {
            let vals: Vec<String> = e.iter().map(|a| a.to_string()).collect();
            s = format!("{s} in {{{}}}", vals.join(", "));
        }
        if b.min_integer.is_some() || b.max_integer.is_some() {
            s = format!(
                "{s} {}..={}",
                b.min_integer.map_or(String::new(), |v| v.to_string()),
                b.max_integer.map_or(String::new(), |v| v.to_string())
            );
        }
        if let Some(r) = &b.ref_table {
            s = format!("{s} -> {r}");
        }
        s
    }
    let max = t.max.map_or("unlimited".to_string(), |m| m.to_string());
    match &t.value {
        Some(v) => format!("map {} => {} [{}..{max}]", base(&t.key), base(v), t.min),
        None => format!("{} [{}..{max}]", base(&t.key), t.min),
    }
}

/// Whether values the models write and read under `ours` are valid under `server`. Extra
/// enum values on the server are a mismatch (we could not read them); narrower ranges or
/// fewer enum values on the server are too (we could write what it rejects). Refs, lengths
/// and ephemeral flags do not affect reading or writing and are ignored.
fn same_shape(ours: &ColumnType, server: &ColumnType) -> bool {
    fn base(o: &BaseType, s: &BaseType) -> bool {
        o.atomic == s.atomic
            && o.enum_values == s.enum_values
            && o.min_integer == s.min_integer
            && o.max_integer == s.max_integer
    }
    ours.min == server.min
        && ours.max == server.max
        && base(&ours.key, &server.key)
        && match (&ours.value, &server.value) {
            (Some(o), Some(s)) => base(o, s),
            (None, None) => true,
            _ => false,
        }
}

/// Compares the schema the models were generated from (`ours`) with the server's, for the
/// tables in `tables` (every table of `ours` when `None`). Newer servers may add tables,
/// columns and minor versions freely; what the models use must be there with the same type.
pub fn check_compat(
    ours: &DatabaseSchema,
    server: &DatabaseSchema,
    tables: Option<&[&str]>,
) -> Result<(), CompatReport> {
    let mut mismatches = Vec::new();
    if ours.name != server.name {
        mismatches.push(Mismatch::DatabaseName {
            ours: ours.name.clone(),
            server: server.name.clone(),
        });
    }
    let major = |v: &str| v.split('.').next().unwrap_or("").to_string();
    if major(&ours.version) != major(&server.version) {
        mismatches.push(Mismatch::MajorVersion {
            ours: ours.version.clone(),
            server: server.version.clone(),
        });
    }
    let names: Vec<&str> = match tables {
        Some(t) => t.to_vec(),
        None => ours.tables.keys().map(String::as_str).collect(),
    };
    for t in names {
        let Some(ot) = ours.tables.get(t) else {
            continue;
        };
        let Some(st) = server.tables.get(t) else {
            mismatches.push(Mismatch::MissingTable {
                table: t.to_string(),
            });
            continue;
        };
        for (c, oc) in &ot.columns {
            match st.columns.get(c) {
                None => mismatches.push(Mismatch::MissingColumn {
                    table: t.to_string(),
                    column: c.clone(),
                }),
                Some(sc) if !same_shape(&oc.type_, &sc.type_) => {
                    mismatches.push(Mismatch::TypeChanged {
                        table: t.to_string(),
                        column: c.clone(),
                        ours: describe_type(&oc.type_),
                        server: describe_type(&sc.type_),
                    })
                }
                Some(_) => {}
            }
        }
    }
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(CompatReport {
            ours_version: ours.version.clone(),
            server_version: server.version.clone(),
            mismatches,
        })
    }
}

#[cfg(test)]
#[path = "model/tests.rs"]
mod tests;
