//! Database schemas (RFC 7047 §3.2): parsed from a `.ovsschema` file or a `get_schema`
//! reply, and used to check values before they are sent (so a bad value fails here with the
//! table, column and value named, not as an opaque `syntax error` from the server), to fill
//! the defaults `update2` leaves out, and to tell scalars from one-element sets.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde_json::Value as Json;

use crate::value::{Atom, AtomMap, AtomSet, Value};

/// Errors reading a schema, or a value that does not fit it.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("reading schema file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("schema file {path} is not JSON")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// The schema JSON is well-formed but not a valid schema; `at` is a path like
    /// `tables.Load_Balancer.columns.protocol.type.key`.
    #[error("invalid schema at {at}: {message}")]
    Invalid { at: String, message: String },
    #[error("unknown table {table:?}")]
    UnknownTable { table: String },
    #[error("table {table}: unknown column {column:?}")]
    UnknownColumn { table: String, column: String },
    #[error("table {table}, column {column}: value {value} {problem}")]
    BadValue {
        table: String,
        column: String,
        value: String,
        problem: Problem,
    },
}

/// Why a value does not fit a column type.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    WrongAtomType {
        expected: AtomicType,
        got: &'static str,
    },
    NotInEnum {
        allowed: Vec<String>,
    },
    IntegerOutOfRange {
        min: Option<i64>,
        max: Option<i64>,
    },
    RealOutOfRange {
        min: Option<f64>,
        max: Option<f64>,
    },
    StringLength {
        len: usize,
        min: Option<u64>,
        max: Option<u64>,
    },
    TooFew {
        got: usize,
        min: u64,
    },
    TooMany {
        got: usize,
        max: u64,
    },
    MapForNonMap,
    SetForMap,
    NamedUuidNotAllowed,
    NotMutable,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn bound<T: fmt::Display>(b: &Option<T>) -> String {
            b.as_ref().map_or("…".to_string(), |v| v.to_string())
        }
        match self {
            Problem::WrongAtomType { expected, got } => {
                write!(f, "has an atom of type {got}, the column wants {expected}")
            }
            Problem::NotInEnum { allowed } => write!(f, "is not one of {}", allowed.join(", ")),
            Problem::IntegerOutOfRange { min, max } => {
                write!(f, "is outside the range {}..={}", bound(min), bound(max))
            }
            Problem::RealOutOfRange { min, max } => {
                write!(f, "is outside the range {}..={}", bound(min), bound(max))
            }
            Problem::StringLength { len, min, max } => write!(
                f,
                "has length {len}, the column allows {}..={}",
                bound(min),
                bound(max)
            ),
            Problem::TooFew { got, min } => {
                write!(f, "has {got} elements, the column needs at least {min}")
            }
            Problem::TooMany { got, max } => {
                write!(f, "has {got} elements, the column allows at most {max}")
            }
            Problem::MapForNonMap => f.write_str("is a map, the column is not"),
            Problem::SetForMap => f.write_str("is not a map, the column is a map"),
            Problem::NamedUuidNotAllowed => {
                f.write_str("is a named-uuid, which only an operation in a transaction may use")
            }
            Problem::NotMutable => f.write_str("cannot be changed: the column is not mutable"),
        }
    }
}

/// RFC 7047 `<atomic-type>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AtomicType {
    Integer,
    Real,
    Boolean,
    String,
    Uuid,
}

impl AtomicType {
    pub fn as_str(self) -> &'static str {
        match self {
            AtomicType::Integer => "integer",
            AtomicType::Real => "real",
            AtomicType::Boolean => "boolean",
            AtomicType::String => "string",
            AtomicType::Uuid => "uuid",
        }
    }

    fn parse(s: &str) -> Option<AtomicType> {
        Some(match s {
            "integer" => AtomicType::Integer,
            "real" => AtomicType::Real,
            "boolean" => AtomicType::Boolean,
            "string" => AtomicType::String,
            "uuid" => AtomicType::Uuid,
            _ => return None,
        })
    }

    /// The atom a column of this type holds when nobody set it (ovsdb's `ovsdb_atom_default`).
    pub fn default_atom(self) -> Atom {
        match self {
            AtomicType::Integer => Atom::Integer(0),
            AtomicType::Real => Atom::Real(0.0),
            AtomicType::Boolean => Atom::Boolean(false),
            AtomicType::String => Atom::String(String::new()),
            AtomicType::Uuid => Atom::Uuid(uuid::Uuid::nil()),
        }
    }
}

impl fmt::Display for AtomicType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefType {
    Strong,
    Weak,
}

/// RFC 7047 `<base-type>`.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseType {
    pub atomic: AtomicType,
    pub enum_values: Option<BTreeSet<Atom>>,
    pub min_integer: Option<i64>,
    pub max_integer: Option<i64>,
    pub min_real: Option<f64>,
    pub max_real: Option<f64>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub ref_table: Option<String>,
    /// Only meaningful with `ref_table`; RFC 7047 says the default is strong.
    pub ref_type: RefType,
}

impl BaseType {
    pub fn new(atomic: AtomicType) -> BaseType {
        BaseType {
            atomic,
            enum_values: None,
            min_integer: None,
            max_integer: None,
            min_real: None,
            max_real: None,
            min_length: None,
            max_length: None,
            ref_table: None,
            ref_type: RefType::Strong,
        }
    }

    /// Checks one atom against this base type. Integers are accepted for reals because
    /// ovsdb-server writes `1.0` as `1`.
    pub fn check(&self, atom: &Atom, allow_named_uuid: bool) -> Result<(), Problem> {
        let wrong = || Problem::WrongAtomType {
            expected: self.atomic,
            got: atom.type_name(),
        };
        match (self.atomic, atom) {
            (AtomicType::Integer, Atom::Integer(i)) => {
                if self.min_integer.is_some_and(|m| *i < m)
                    || self.max_integer.is_some_and(|m| *i > m)
                {
                    return Err(Problem::IntegerOutOfRange {
                        min: self.min_integer,
                        max: self.max_integer,
                    });
                }
            }
            (AtomicType::Real, Atom::Real(_) | Atom::Integer(_)) => {
                let r = atom.as_real().expect("real or integer");
                if self.min_real.is_some_and(|m| r < m) || self.max_real.is_some_and(|m| r > m) {
                    return Err(Problem::RealOutOfRange {
                        min: self.min_real,
                        max: self.max_real,
                    });
                }
            }
            (AtomicType::Boolean, Atom::Boolean(_)) => {}
            (AtomicType::String, Atom::String(s)) => {
                // RFC 7047: lengths count UTF-8 characters, not bytes.
                let len = s.chars().count();
                if self.min_length.is_some_and(|m| (len as u64) < m)
                    || self.max_length.is_some_and(|m| (len as u64) > m)
                {
                    return Err(Problem::StringLength {
                        len,
                        min: self.min_length,
                        max: self.max_length,
                    });
                }
            }
            (AtomicType::Uuid, Atom::Uuid(_)) => {}
            (AtomicType::Uuid, Atom::NamedUuid(_)) => {
                if !allow_named_uuid {
                    return Err(Problem::NamedUuidNotAllowed);
                }
            }
            _ => return Err(wrong()),
        }
        if let Some(allowed) = &self.enum_values
            && !allowed.contains(&normalize_atom(atom.clone(), self.atomic))
        {
            return Err(Problem::NotInEnum {
                allowed: allowed.iter().map(|a| a.to_string()).collect(),
            });
        }
        Ok(())
    }
}

fn normalize_atom(a: Atom, atomic: AtomicType) -> Atom {
    match (a, atomic) {
        (Atom::Integer(i), AtomicType::Real) => Atom::Real(i as f64),
        (a, _) => a,
    }
}

/// RFC 7047 `<type>`: key (and value, for maps) with element counts.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnType {
    pub key: BaseType,
    pub value: Option<BaseType>,
    pub min: u64,
    /// `None` is "unlimited".
    pub max: Option<u64>,
}

impl ColumnType {
    pub fn is_map(&self) -> bool {
        self.value.is_some()
    }

    /// Exactly one atom: the column is written as a bare atom, never a set.
    pub fn is_scalar(&self) -> bool {
        !self.is_map() && self.min == 1 && self.max == Some(1)
    }

    /// 0 or 1 atoms (`Option<T>` in the models).
    pub fn is_optional(&self) -> bool {
        !self.is_map() && self.min == 0 && self.max == Some(1)
    }

    /// More than one element allowed. ovsdb-server sends a *diff* in `update2` modify only
    /// for these columns; for the others it sends the new value.
    pub fn is_composite(&self) -> bool {
        self.max != Some(1)
    }

    /// The value of a column nobody set.
    pub fn default_value(&self) -> Value {
        match (&self.value, self.min) {
            (Some(_), 0) => Value::empty_map(),
            (Some(v), _) => Value::Map(AtomMap::from([(
                self.key.atomic.default_atom(),
                v.atomic.default_atom(),
            )])),
            (None, 0) => Value::empty_set(),
            (None, _) if self.is_scalar() => Value::Atom(self.key.atomic.default_atom()),
            (None, _) => Value::Set(AtomSet::from([self.key.atomic.default_atom()])),
        }
    }

    /// Canonical shape for this column: scalars as atoms, everything else as sets or maps
    /// (a bare atom for a set column is its one-element set), integers in real columns as
    /// reals. Values that do not fit are returned unchanged; [`ColumnType::check`] says why.
    pub fn normalize(&self, v: Value) -> Value {
        v.normalize_shape(
            self.is_map(),
            self.is_scalar(),
            self.key.atomic == AtomicType::Real,
            self.value
                .as_ref()
                .is_some_and(|b| b.atomic == AtomicType::Real),
        )
    }

    /// Checks a whole column value: shape, element count and every atom.
    pub fn check(&self, v: &Value, allow_named_uuid: bool) -> Result<(), Problem> {
        let n = match (v, &self.value) {
            (Value::Map(m), Some(vt)) => {
                for (k, val) in m {
                    self.key.check(k, allow_named_uuid)?;
                    vt.check(val, allow_named_uuid)?;
                }
                m.len()
            }
            (Value::Map(_), None) => return Err(Problem::MapForNonMap),
            // `["set",[]]` is how an empty map is often written.
            (Value::Set(s), Some(_)) if s.is_empty() => 0,
            (_, Some(_)) => return Err(Problem::SetForMap),
            (Value::Atom(a), None) => {
                self.key.check(a, allow_named_uuid)?;
                1
            }
            (Value::Set(s), None) => {
                for a in s {
                    self.key.check(a, allow_named_uuid)?;
                }
                s.len()
            }
        };
        if (n as u64) < self.min {
            return Err(Problem::TooFew {
                got: n,
                min: self.min,
            });
        }
        if let Some(max) = self.max
            && n as u64 > max
        {
            return Err(Problem::TooMany { got: n, max });
        }
        Ok(())
    }

    fn uuid_column() -> ColumnType {
        ColumnType {
            key: BaseType::new(AtomicType::Uuid),
            value: None,
            min: 1,
            max: Some(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSchema {
    pub name: String,
    pub type_: ColumnType,
    pub ephemeral: bool,
    /// RFC 7047bis: `"mutable": false` columns can be set by insert only.
    pub mutable: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableSchema {
    pub name: String,
    pub columns: BTreeMap<String, ColumnSchema>,
    pub max_rows: Option<u64>,
    pub is_root: bool,
    /// Each index is a set of columns whose values together are unique in the table.
    pub indexes: Vec<Vec<String>>,
}

impl TableSchema {
    /// A column, including the implicit `_uuid` and `_version`.
    pub fn column_type(&self, column: &str) -> Option<&ColumnType> {
        static UUID: std::sync::OnceLock<ColumnType> = std::sync::OnceLock::new();
        match column {
            "_uuid" | "_version" => Some(UUID.get_or_init(ColumnType::uuid_column)),
            _ => self.columns.get(column).map(|c| &c.type_),
        }
    }

    /// Whether the schema declares a unique index on exactly `columns`.
    pub fn has_index(&self, columns: &[&str]) -> bool {
        self.indexes
            .iter()
            .any(|i| i.len() == columns.len() && columns.iter().all(|c| i.iter().any(|ic| ic == c)))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseSchema {
    pub name: String,
    pub version: String,
    pub cksum: Option<String>,
    pub tables: BTreeMap<String, TableSchema>,
}

fn invalid(at: &str, message: impl Into<String>) -> SchemaError {
    SchemaError::Invalid {
        at: at.to_string(),
        message: message.into(),
    }
}

fn obj<'a>(j: &'a Json, at: &str) -> Result<&'a serde_json::Map<String, Json>, SchemaError> {
    j.as_object()
        .ok_or_else(|| invalid(at, format!("expected an object, got {j}")))
}

fn opt_u64(
    o: &serde_json::Map<String, Json>,
    key: &str,
    at: &str,
) -> Result<Option<u64>, SchemaError> {
    match o.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            invalid(
                &format!("{at}.{key}"),
                format!("expected a non-negative integer, got {v}"),
            )
        }),
    }
}

fn opt_i64(
    o: &serde_json::Map<String, Json>,
    key: &str,
    at: &str,
) -> Result<Option<i64>, SchemaError> {
    match o.get(key) {
        None => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or_else(|| {
            invalid(
                &format!("{at}.{key}"),
                format!("expected an integer, got {v}"),
            )
        }),
    }
}

fn opt_f64(
    o: &serde_json::Map<String, Json>,
    key: &str,
    at: &str,
) -> Result<Option<f64>, SchemaError> {
    match o.get(key) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| {
            invalid(
                &format!("{at}.{key}"),
                format!("expected a number, got {v}"),
            )
        }),
    }
}

fn opt_bool(
    o: &serde_json::Map<String, Json>,
    key: &str,
    at: &str,
) -> Result<Option<bool>, SchemaError> {
    match o.get(key) {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| {
            invalid(
                &format!("{at}.{key}"),
                format!("expected true or false, got {v}"),
            )
        }),
    }
}

fn parse_base(j: &Json, at: &str) -> Result<BaseType, SchemaError> {
    if let Some(s) = j.as_str() {
        return AtomicType::parse(s)
            .map(BaseType::new)
            .ok_or_else(|| invalid(at, format!("unknown atomic type {s:?}")));
    }
    let o = obj(j, at)?;
    let ty = o
        .get("type")
        .and_then(Json::as_str)
        .ok_or_else(|| invalid(at, "base type needs a \"type\" string"))?;
    let atomic = AtomicType::parse(ty)
        .ok_or_else(|| invalid(&format!("{at}.type"), format!("unknown atomic type {ty:?}")))?;
    let mut b = BaseType::new(atomic);
    if let Some(e) = o.get("enum") {
        let v: Value = serde_json::from_value(e.clone())
            .map_err(|err| invalid(&format!("{at}.enum"), err.to_string()))?;
        let atoms: BTreeSet<Atom> = match v {
            Value::Atom(a) => BTreeSet::from([a]),
            Value::Set(s) => s.into_iter().collect(),
            Value::Map(_) => {
                return Err(invalid(
                    &format!("{at}.enum"),
                    "an enum must be a set of atoms, not a map",
                ));
            }
        };
        let atoms: BTreeSet<Atom> = atoms
            .into_iter()
            .map(|a| normalize_atom(a, atomic))
            .collect();
        for a in &atoms {
            BaseType::new(atomic)
                .check(a, false)
                .map_err(|p| invalid(&format!("{at}.enum"), format!("{a} {p}")))?;
        }
        b.enum_values = Some(atoms);
    }
    b.min_integer = opt_i64(o, "minInteger", at)?;
    b.max_integer = opt_i64(o, "maxInteger", at)?;
    b.min_real = opt_f64(o, "minReal", at)?;
    b.max_real = opt_f64(o, "maxReal", at)?;
    b.min_length = opt_u64(o, "minLength", at)?;
    b.max_length = opt_u64(o, "maxLength", at)?;
    if let Some(t) = o.get("refTable") {
        if atomic != AtomicType::Uuid {
            return Err(invalid(
                &format!("{at}.refTable"),
                "refTable is only allowed on uuid types",
            ));
        }
        b.ref_table = Some(
            t.as_str()
                .ok_or_else(|| invalid(&format!("{at}.refTable"), "expected a table name"))?
                .to_string(),
        );
    }
    b.ref_type = match o.get("refType").map(|v| v.as_str()) {
        None | Some(Some("strong")) => RefType::Strong,
        Some(Some("weak")) => RefType::Weak,
        Some(_) => {
            return Err(invalid(
                &format!("{at}.refType"),
                "expected \"strong\" or \"weak\"",
            ));
        }
    };
    Ok(b)
}

fn parse_type(j: &Json, at: &str) -> Result<ColumnType, SchemaError> {
    if j.is_string() {
        return Ok(ColumnType {
            key: parse_base(j, at)?,
            value: None,
            min: 1,
            max: Some(1),
        });
    }
    let o = obj(j, at)?;
    let key = parse_base(
        o.get("key")
            .ok_or_else(|| invalid(at, "type needs a \"key\""))?,
        &format!("{at}.key"),
    )?;
    let value = o
        .get("value")
        .map(|v| parse_base(v, &format!("{at}.value")))
        .transpose()?;
    let min = opt_u64(o, "min", at)?.unwrap_or(1);
    let max = match o.get("max") {
        None => Some(1),
        Some(Json::String(s)) if s == "unlimited" => None,
        Some(v) => Some(v.as_u64().filter(|m| *m >= 1).ok_or_else(|| {
            invalid(
                &format!("{at}.max"),
                format!("expected a positive integer or \"unlimited\", got {v}"),
            )
        })?),
    };
    if min > 1 || max.is_some_and(|m| m < min) {
        return Err(invalid(
            at,
            format!("min {min} must be 0 or 1 and not above max"),
        ));
    }
    Ok(ColumnType {
        key,
        value,
        min,
        max,
    })
}

impl DatabaseSchema {
    pub fn from_file(path: impl AsRef<Path>) -> Result<DatabaseSchema, SchemaError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let json: Json = serde_json::from_str(&text).map_err(|source| SchemaError::Json {
            path: path.display().to_string(),
            source,
        })?;
        DatabaseSchema::from_json(&json)
    }

    /// Parses a schema object (a `.ovsschema` file or the result of `get_schema`).
    pub fn from_json(j: &Json) -> Result<DatabaseSchema, SchemaError> {
        let o = obj(j, "schema")?;
        let name = o
            .get("name")
            .and_then(Json::as_str)
            .ok_or_else(|| invalid("schema.name", "missing or not a string"))?
            .to_string();
        let version = o
            .get("version")
            .and_then(Json::as_str)
            .ok_or_else(|| invalid("schema.version", "missing or not a string"))?
            .to_string();
        let cksum = o.get("cksum").and_then(Json::as_str).map(str::to_string);
        let mut tables = BTreeMap::new();
        for (tname, tj) in obj(o.get("tables").unwrap_or(&Json::Null), "tables")? {
            let at = format!("tables.{tname}");
            let to = obj(tj, &at)?;
            let mut columns = BTreeMap::new();
            for (cname, cj) in obj(
                to.get("columns").unwrap_or(&Json::Null),
                &format!("{at}.columns"),
            )? {
                let cat = format!("{at}.columns.{cname}");
                if cname.starts_with('_') {
                    return Err(invalid(&cat, "column names starting with _ are reserved"));
                }
                let co = obj(cj, &cat)?;
                let type_ = parse_type(
                    co.get("type")
                        .ok_or_else(|| invalid(&cat, "column needs a \"type\""))?,
                    &format!("{cat}.type"),
                )?;
                columns.insert(
                    cname.clone(),
                    ColumnSchema {
                        name: cname.clone(),
                        type_,
                        ephemeral: opt_bool(co, "ephemeral", &cat)?.unwrap_or(false),
                        mutable: opt_bool(co, "mutable", &cat)?.unwrap_or(true),
                    },
                );
            }
            let mut indexes = Vec::new();
            if let Some(ij) = to.get("indexes") {
                let list = ij
                    .as_array()
                    .ok_or_else(|| invalid(&format!("{at}.indexes"), "expected an array"))?;
                for idx in list {
                    let cols = idx
                        .as_array()
                        .ok_or_else(|| {
                            invalid(&format!("{at}.indexes"), "expected arrays of column names")
                        })?
                        .iter()
                        .map(|c| {
                            let c = c.as_str().ok_or_else(|| {
                                invalid(&format!("{at}.indexes"), "column names must be strings")
                            })?;
                            if !columns.contains_key(c) && c != "_uuid" {
                                return Err(invalid(
                                    &format!("{at}.indexes"),
                                    format!("index names unknown column {c:?}"),
                                ));
                            }
                            Ok(c.to_string())
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    indexes.push(cols);
                }
            }
            tables.insert(
                tname.clone(),
                TableSchema {
                    name: tname.clone(),
                    columns,
                    max_rows: opt_u64(to, "maxRows", &at)?,
                    is_root: opt_bool(to, "isRoot", &at)?.unwrap_or(false),
                    indexes,
                },
            );
        }
        // refTable must name a table of this database.
        for t in tables.values() {
            for c in t.columns.values() {
                for b in std::iter::once(&c.type_.key).chain(c.type_.value.as_ref()) {
                    if let Some(r) = &b.ref_table
                        && !tables.contains_key(r)
                    {
                        return Err(invalid(
                            &format!("tables.{}.columns.{}", t.name, c.name),
                            format!("refTable {r:?} is not a table of this schema"),
                        ));
                    }
                }
            }
        }
        Ok(DatabaseSchema {
            name,
            version,
            cksum,
            tables,
        })
    }

    pub fn table(&self, table: &str) -> Result<&TableSchema, SchemaError> {
        self.tables
            .get(table)
            .ok_or_else(|| SchemaError::UnknownTable {
                table: table.to_string(),
            })
    }

    pub fn column(&self, table: &str, column: &str) -> Result<&ColumnType, SchemaError> {
        self.table(table)?
            .column_type(column)
            .ok_or_else(|| SchemaError::UnknownColumn {
                table: table.to_string(),
                column: column.to_string(),
            })
    }

    /// Checks a stored value (no named UUIDs) against `table.column`.
    pub fn validate_value(
        &self,
        table: &str,
        column: &str,
        value: &Value,
    ) -> Result<(), SchemaError> {
        self.check_value(table, column, value, false)
    }

    /// Like [`DatabaseSchema::validate_value`], with `allow_named_uuid` for values inside a
    /// transaction.
    pub fn check_value(
        &self,
        table: &str,
        column: &str,
        value: &Value,
        allow_named_uuid: bool,
    ) -> Result<(), SchemaError> {
        let ty = self.column(table, column)?;
        ty.check(value, allow_named_uuid)
            .map_err(|problem| bad_value(table, column, value, problem))
    }

    /// Checks every column of a row (as for an insert or update).
    pub fn validate_row(&self, table: &str, row: &crate::value::Row) -> Result<(), SchemaError> {
        for (c, v) in row {
            self.validate_value(table, c, v)?;
        }
        Ok(())
    }
}

pub(crate) fn bad_value(table: &str, column: &str, value: &Value, problem: Problem) -> SchemaError {
    SchemaError::BadValue {
        table: table.to_string(),
        column: column.to_string(),
        value: value.to_string(),
        problem,
    }
}

#[cfg(test)]
#[path = "schema/tests.rs"]
mod tests;
