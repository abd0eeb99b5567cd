//! The in-memory copy of the monitored tables, fed by the client's reader task with the
//! monitor reply and every `update` / `update2` / `update3` notification, read by callers
//! through snapshots and change events.
//!
//! Why it looks like this:
//! - The live state is an `Arc<DbState>` holding one `Arc<TableState>` per table, and rows
//!   are `Arc<Row>`. A [`Snapshot`] is a clone of the outer `Arc`: O(number of tables), and
//!   it can never see later changes because the writer uses `Arc::make_mut`, which copies a
//!   table (its map of row pointers, not the rows) the first time it is written while a
//!   snapshot still holds it. Readers never block the writer for longer than that clone.
//! - An update is parsed and normalized against the schema before the lock is taken, and
//!   every row it names is checked (exists for modify/delete, absent for insert) before
//!   anything is changed, so a bad update leaves the cache as it was and the error tells the
//!   client to resync instead of letting the cache drift silently.
//! - Subscribers get an unbounded channel each: a slow subscriber costs memory, never a lost
//!   event (a lost event would leave a controller with a stale view and no requeue).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use serde::Deserialize;
use serde_json::Value as Json;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::schema::{ColumnType, DatabaseSchema, SchemaError, TableSchema};
use crate::value::{Atom, AtomMap, Row, RowUpdate, RowUpdate2, Value};

/// Errors applying an update to the cache. Any of them means the cache no longer follows
/// the server: the client should [`Cache::clear`] and monitor again.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot parse {kind:?} table-updates")]
    Parse {
        kind: UpdateKind,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("table {table} is not monitored by this cache")]
    NotMonitored { table: String },
    #[error("table {table}: {kind} of row {uuid}, which the cache does not have")]
    MissingRow {
        table: String,
        uuid: Uuid,
        kind: &'static str,
    },
    #[error("table {table}: insert of row {uuid}, which the cache already has")]
    DuplicateRow { table: String, uuid: Uuid },
    #[error("table {table}, row {uuid}: an update with neither old nor new")]
    EmptyRowUpdate { table: String, uuid: Uuid },
    #[error("table {table}, row {uuid}, column {column}: diff {diff} {reason}")]
    BadDiff {
        table: String,
        uuid: Uuid,
        column: String,
        diff: String,
        reason: &'static str,
    },
}

/// Which notification format a table-updates object is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// `monitor` / `update`: `{"old": …, "new": …}` rows.
    Update,
    /// `monitor_cond` / `update2`: `initial` / `insert` / `modify` (diff) / `delete`.
    Update2,
    /// `monitor_cond_since` / `update3`: same table-updates as `update2`.
    Update3,
}

/// An index the client keeps on its own (the server knows nothing of it). Non-unique:
/// lookups return every row with the value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ClientIndex {
    /// Rows by the whole value of a column (e.g. `name` of `Logical_Switch`, which the
    /// schema does not make unique).
    Column(String),
    /// Rows by the value under `key` in a map column, e.g. `external_ids:k8s.ovn.org/owner`.
    MapKey { column: String, key: String },
}

impl ClientIndex {
    pub fn external_id(key: impl Into<String>) -> ClientIndex {
        ClientIndex::MapKey {
            column: "external_ids".into(),
            key: key.into(),
        }
    }

    fn column(&self) -> &str {
        match self {
            ClientIndex::Column(c) | ClientIndex::MapKey { column: c, .. } => c,
        }
    }

    /// The index key of a row, if the row has one.
    fn key_of(&self, row: &Row) -> Option<Value> {
        match self {
            ClientIndex::Column(c) => row.get(c).cloned(),
            ClientIndex::MapKey { column, key } => row
                .get(column)?
                .map_get(key)
                .map(|a| Value::Atom(a.clone())),
        }
    }
}

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Insert,
    Modify,
    Delete,
}

/// One row change, sent to every subscriber after the whole update it belongs to has been
/// applied (so a subscriber that takes a snapshot sees at least this change).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub table: String,
    pub uuid: Uuid,
    pub kind: ChangeKind,
    pub old: Option<Arc<Row>>,
    pub new: Option<Arc<Row>>,
}

#[derive(Debug, Clone, Default)]
struct TableState {
    rows: BTreeMap<Uuid, Arc<Row>>,
    /// One per schema index whose columns are all monitored: key values (in the index's
    /// column order) → the row. The server keeps them unique.
    unique: Vec<(Vec<String>, UniqueIndex)>,
    client: BTreeMap<ClientIndex, MultiIndex>,
}

/// Index key (values of the index columns, in schema order) → row.
type UniqueIndex = BTreeMap<Vec<Value>, Uuid>;
/// Index key → rows, sorted. A vector rather than a `BTreeSet`: most keys (an owner's
/// external id) name one row, and a B-tree node for one UUID costs ~200 bytes.
type MultiIndex = BTreeMap<Value, Vec<Uuid>>;

fn add_sorted(set: &mut Vec<Uuid>, u: Uuid) {
    if let Err(i) = set.binary_search(&u) {
        set.insert(i, u);
    }
}
/// Parsed table-updates: table → (row, change) in server order.
type Parsed = Vec<(String, Vec<(Uuid, Op)>)>;

impl TableState {
    fn index_row(&mut self, uuid: Uuid, row: &Row) {
        for (cols, idx) in &mut self.unique {
            if let Some(key) = cols
                .iter()
                .map(|c| row.get(c).cloned())
                .collect::<Option<Vec<_>>>()
            {
                idx.insert(key, uuid);
            }
        }
        for (ci, idx) in &mut self.client {
            if let Some(k) = ci.key_of(row) {
                add_sorted(idx.entry(k).or_default(), uuid);
            }
        }
    }

    fn unindex_row(&mut self, uuid: Uuid, row: &Row) {
        for (cols, idx) in &mut self.unique {
            if let Some(key) = cols
                .iter()
                .map(|c| row.get(c).cloned())
                .collect::<Option<Vec<_>>>()
                && idx.get(&key) == Some(&uuid)
            {
                idx.remove(&key);
            }
        }
        for (ci, idx) in &mut self.client {
            if let Some(k) = ci.key_of(row)
                && let Some(set) = idx.get_mut(&k)
            {
                if let Ok(i) = set.binary_search(&uuid) {
                    set.remove(i);
                }
                if set.is_empty() {
                    idx.remove(&k);
                }
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
struct DbState {
    tables: BTreeMap<String, Arc<TableState>>,
}

/// An immutable view of the cache at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    state: Arc<DbState>,
    schema: Arc<DatabaseSchema>,
}

impl Snapshot {
    fn table(&self, table: &str) -> Option<&TableState> {
        self.state.tables.get(table).map(|t| &**t)
    }

    /// Monitored table names.
    pub fn tables(&self) -> impl Iterator<Item = &str> {
        self.state.tables.keys().map(String::as_str)
    }

    /// One row by UUID. Rows carry `_uuid` (and `_version` when the server sent it).
    pub fn get(&self, table: &str, uuid: &Uuid) -> Option<&Arc<Row>> {
        self.table(table)?.rows.get(uuid)
    }

    /// All rows of a table, in UUID order.
    pub fn rows(&self, table: &str) -> impl Iterator<Item = (&Uuid, &Arc<Row>)> {
        self.table(table).into_iter().flat_map(|t| t.rows.iter())
    }

    pub fn len(&self, table: &str) -> usize {
        self.table(table).map_or(0, |t| t.rows.len())
    }

    pub fn is_empty(&self) -> bool {
        self.state.tables.values().all(|t| t.rows.is_empty())
    }

    /// The row whose values for a schema index's columns are `key` (e.g.
    /// `[("name", "lsp1".into())]` for `Logical_Switch_Port`). `None` when no row matches or
    /// the table has no such schema index (with every column monitored).
    pub fn find_unique(&self, table: &str, key: &[(&str, Value)]) -> Option<&Arc<Row>> {
        let t = self.table(table)?;
        let ts = self.schema.tables.get(table)?;
        let (cols, idx) = t.unique.iter().find(|(cols, _)| {
            cols.len() == key.len() && key.iter().all(|(c, _)| cols.iter().any(|ic| ic == c))
        })?;
        let k = cols
            .iter()
            .map(|c| {
                let v = key.iter().find(|(kc, _)| kc == c).map(|(_, v)| v.clone())?;
                Some(ts.column_type(c)?.normalize(v))
            })
            .collect::<Option<Vec<_>>>()?;
        t.rows.get(idx.get(&k)?)
    }

    /// Rows whose client index key equals `value` (registered with [`Cache::add_index`]).
    /// A [`ClientIndex::MapKey`] takes the map value as an atom (`"owner-x".into()`).
    pub fn find(&self, table: &str, index: &ClientIndex, value: &Value) -> Vec<&Arc<Row>> {
        let Some(t) = self.table(table) else {
            return Vec::new();
        };
        let value = match (
            index,
            self.schema
                .tables
                .get(table)
                .and_then(|ts| ts.column_type(index.column())),
        ) {
            (ClientIndex::Column(_), Some(ty)) => ty.normalize(value.clone()),
            _ => value.clone(),
        };
        t.client
            .get(index)
            .and_then(|idx| idx.get(&value))
            .into_iter()
            .flatten()
            .filter_map(|u| t.rows.get(u))
            .collect()
    }

    /// Every row of `M`'s table as the typed model (the table must be monitored with every
    /// column the model has).
    pub fn models<M: crate::model::Model>(&self) -> Result<Vec<M>, crate::model::ModelError> {
        self.rows(M::TABLE).map(|(_, r)| M::from_row(r)).collect()
    }

    /// One row as the typed model.
    pub fn model<M: crate::model::Model>(
        &self,
        uuid: &Uuid,
    ) -> Option<Result<M, crate::model::ModelError>> {
        self.get(M::TABLE, uuid).map(|r| M::from_row(r))
    }

    /// Shorthand for [`Snapshot::find`] on `external_ids:key == value`.
    pub fn find_by_external_id(&self, table: &str, key: &str, value: &str) -> Vec<&Arc<Row>> {
        self.find(table, &ClientIndex::external_id(key), &Value::from(value))
    }
}

struct Inner {
    schema: Arc<DatabaseSchema>,
    /// table → monitored columns (every schema column when the caller gave none).
    columns: BTreeMap<String, BTreeSet<String>>,
    requested: BTreeMap<String, Option<Vec<String>>>,
    state: RwLock<Arc<DbState>>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Change>>>,
    last_txn_id: Mutex<Option<String>>,
}

/// The cache handle; clones share the same cache.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("db", &self.inner.schema.name)
            .field("tables", &self.inner.columns.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// One row change after parsing and normalization, before it is applied.
enum Op {
    Insert(Row),
    /// v1: replace the given columns.
    Replace(Row),
    /// v2/v3 modify: per column, the new value or the diff to apply.
    Diff(Vec<(String, Value, bool)>),
    Delete,
}

impl Cache {
    /// A cache of `monitored` tables (table → columns, `None` for every column), with an
    /// index for every schema index whose columns are all monitored.
    pub fn new(
        schema: Arc<DatabaseSchema>,
        monitored: BTreeMap<String, Option<Vec<String>>>,
    ) -> Result<Cache, CacheError> {
        let mut columns = BTreeMap::new();
        let mut tables = BTreeMap::new();
        for (t, cols) in &monitored {
            let ts = schema.table(t)?;
            let set: BTreeSet<String> = match cols {
                Some(cols) => {
                    for c in cols {
                        schema.column(t, c)?;
                    }
                    cols.iter().cloned().collect()
                }
                None => ts.columns.keys().cloned().collect(),
            };
            let unique = ts
                .indexes
                .iter()
                .filter(|i| i.iter().all(|c| set.contains(c)))
                .map(|i| (i.clone(), BTreeMap::new()))
                .collect();
            tables.insert(
                t.clone(),
                Arc::new(TableState {
                    unique,
                    ..TableState::default()
                }),
            );
            columns.insert(t.clone(), set);
        }
        Ok(Cache {
            inner: Arc::new(Inner {
                schema,
                columns,
                requested: monitored,
                state: RwLock::new(Arc::new(DbState { tables })),
                subscribers: Mutex::new(Vec::new()),
                last_txn_id: Mutex::new(None),
            }),
        })
    }

    /// A cache of every table and column of the schema.
    pub fn all_tables(schema: Arc<DatabaseSchema>) -> Cache {
        let monitored = schema.tables.keys().map(|t| (t.clone(), None)).collect();
        Cache::new(schema, monitored).expect("the schema's own tables are valid")
    }

    pub fn schema(&self) -> &Arc<DatabaseSchema> {
        &self.inner.schema
    }

    /// What the caller asked to monitor (for building the monitor request).
    pub fn monitored(&self) -> &BTreeMap<String, Option<Vec<String>>> {
        &self.inner.requested
    }

    /// Registers a client index and builds it from the rows already cached.
    pub fn add_index(&self, table: &str, index: ClientIndex) -> Result<(), CacheError> {
        let cols = self
            .inner
            .columns
            .get(table)
            .ok_or_else(|| CacheError::NotMonitored {
                table: table.to_string(),
            })?;
        if !cols.contains(index.column()) {
            return Err(SchemaError::UnknownColumn {
                table: table.to_string(),
                column: index.column().to_string(),
            }
            .into());
        }
        let mut guard = self.inner.state.write().expect("cache lock poisoned");
        let db = Arc::make_mut(&mut *guard);
        let t = Arc::make_mut(db.tables.get_mut(table).expect("monitored"));
        let mut idx = MultiIndex::new();
        for (u, row) in &t.rows {
            if let Some(k) = index.key_of(row) {
                add_sorted(idx.entry(k).or_default(), *u);
            }
        }
        t.client.insert(index, idx);
        Ok(())
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            state: self
                .inner
                .state
                .read()
                .expect("cache lock poisoned")
                .clone(),
            schema: self.inner.schema.clone(),
        }
    }

    /// A stream of every row change from now on.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Change> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner
            .subscribers
            .lock()
            .expect("subscribers lock poisoned")
            .push(tx);
        rx
    }

    pub fn set_last_txn_id(&self, id: Option<String>) {
        *self.inner.last_txn_id.lock().expect("txn id lock poisoned") = id;
    }

    pub fn last_txn_id(&self) -> Option<String> {
        self.inner
            .last_txn_id
            .lock()
            .expect("txn id lock poisoned")
            .clone()
    }

    /// Drops every row (before a full reload); subscribers see a delete for each. Client
    /// indexes stay registered. The last transaction id is forgotten too.
    pub fn clear(&self) {
        let mut changes = Vec::new();
        {
            let mut guard = self.inner.state.write().expect("cache lock poisoned");
            let db = Arc::make_mut(&mut *guard);
            for (name, t) in db.tables.iter_mut() {
                if t.rows.is_empty() {
                    continue;
                }
                let t = Arc::make_mut(t);
                for (u, row) in std::mem::take(&mut t.rows) {
                    changes.push(Change {
                        table: name.clone(),
                        uuid: u,
                        kind: ChangeKind::Delete,
                        old: Some(row),
                        new: None,
                    });
                }
                for (_, idx) in &mut t.unique {
                    idx.clear();
                }
                for idx in t.client.values_mut() {
                    idx.clear();
                }
            }
            self.publish(changes);
        }
        self.set_last_txn_id(None);
    }

    fn has_subscribers(&self) -> bool {
        let mut subs = self
            .inner
            .subscribers
            .lock()
            .expect("subscribers lock poisoned");
        subs.retain(|s| !s.is_closed());
        !subs.is_empty()
    }

    fn publish(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let mut subs = self
            .inner
            .subscribers
            .lock()
            .expect("subscribers lock poisoned");
        subs.retain(|s| !s.is_closed());
        for c in changes {
            for s in subs.iter() {
                // A receiver dropped between retain and here: nothing to deliver to.
                let _ = s.send(c.clone());
            }
        }
    }

    /// Schema and default values of a monitored table, looked up once per update.
    fn table_ctx<'a>(&'a self, table: &str) -> Result<TableCtx<'a>, CacheError> {
        let columns = self
            .inner
            .columns
            .get(table)
            .ok_or_else(|| CacheError::NotMonitored {
                table: table.to_string(),
            })?;
        let schema = &self.inner.schema.tables[table];
        let defaults = columns
            .iter()
            .map(|c| (c, schema.columns[c].type_.default_value()))
            .collect();
        Ok(TableCtx { schema, defaults })
    }

    /// Applies the `<table-updates>` of a monitor reply or notification (for `update3`,
    /// the third parameter; the caller stores the transaction id with
    /// [`Cache::set_last_txn_id`]). All or nothing: on error the cache is unchanged.
    pub fn apply(&self, kind: UpdateKind, table_updates: &Json) -> Result<(), CacheError> {
        let parsed = self.parse(kind, table_updates)?;
        self.apply_parsed(parsed)
    }

    /// [`Cache::apply`] straight from the JSON text of a `<table-updates>`, without a
    /// `serde_json::Value` tree in between: for a big initial monitor reply that tree is
    /// several times the size of the text (≈270 MiB for 31 MB), and this skips it.
    pub fn apply_str(&self, kind: UpdateKind, table_updates: &str) -> Result<(), CacheError> {
        let mut de = serde_json::Deserializer::from_str(table_updates);
        let parsed = self.parse(kind, &mut de)?;
        de.end()
            .map_err(|source| CacheError::Parse { kind, source })?;
        self.apply_parsed(parsed)
    }

    /// [`Cache::apply`] taking the table-updates by value: strings move into the cache
    /// instead of being copied, and the JSON tree is freed as it is read.
    pub fn apply_owned(&self, kind: UpdateKind, table_updates: Json) -> Result<(), CacheError> {
        let parsed = self.parse(kind, table_updates)?;
        self.apply_parsed(parsed)
    }

    fn apply_parsed(&self, parsed: Parsed) -> Result<(), CacheError> {
        let mut guard = self.inner.state.write().expect("cache lock poisoned");
        // Check every row before changing anything.
        for (table, rows) in &parsed {
            let t = &guard.tables[table];
            for (uuid, op) in rows {
                let exists = t.rows.contains_key(uuid);
                let missing = |kind: &'static str| CacheError::MissingRow {
                    table: table.clone(),
                    uuid: *uuid,
                    kind,
                };
                match op {
                    Op::Insert(_) if exists => {
                        return Err(CacheError::DuplicateRow {
                            table: table.clone(),
                            uuid: *uuid,
                        });
                    }
                    Op::Replace(_) | Op::Diff(_) if !exists => return Err(missing("modify")),
                    Op::Delete if !exists => return Err(missing("delete")),
                    _ => {}
                }
                if let (Op::Diff(cols), Some(old)) = (op, t.rows.get(uuid)) {
                    for (c, diff, composite) in cols {
                        if *composite {
                            check_diff(table, *uuid, c, old.get(c), diff)?;
                        }
                    }
                }
            }
        }
        // Nobody listening (the usual case for a bulk initial load): skip building a
        // `Change` per row. A subscriber that arrives later reads a snapshot taken after this
        // update, so it misses nothing.
        let wanted = self.has_subscribers();
        let mut changes = Vec::new();
        let db = Arc::make_mut(&mut *guard);
        for (table, rows) in parsed {
            let t = Arc::make_mut(db.tables.get_mut(&table).expect("checked"));
            for (uuid, op) in rows {
                let old = t.rows.get(&uuid).cloned();
                let new = match op {
                    Op::Insert(row) => Some(row),
                    Op::Delete => None,
                    Op::Replace(cols) => {
                        let mut row = Row::clone(old.as_deref().expect("checked"));
                        row.extend(cols);
                        Some(row)
                    }
                    Op::Diff(cols) => {
                        let mut row = Row::clone(old.as_deref().expect("checked"));
                        for (c, v, composite) in cols {
                            if composite {
                                let cur = row.remove(&c).unwrap_or_else(Value::empty_set);
                                row.insert(c, apply_diff(cur, v));
                            } else {
                                row.insert(c, v);
                            }
                        }
                        Some(row)
                    }
                };
                if let Some(o) = &old {
                    t.unindex_row(uuid, o);
                }
                let new = new.map(Arc::new);
                match &new {
                    Some(n) => {
                        t.index_row(uuid, n);
                        t.rows.insert(uuid, n.clone());
                    }
                    None => {
                        t.rows.remove(&uuid);
                    }
                }
                if !wanted {
                    continue;
                }
                let kind = match (&old, &new) {
                    (None, _) => ChangeKind::Insert,
                    (Some(_), Some(_)) => ChangeKind::Modify,
                    (Some(_), None) => ChangeKind::Delete,
                };
                changes.push(Change {
                    table: table.clone(),
                    uuid,
                    kind,
                    old,
                    new,
                });
            }
        }
        // Publish under the lock so two applies can never interleave their events.
        self.publish(changes);
        Ok(())
    }

    fn parse<'de, D>(&self, kind: UpdateKind, j: D) -> Result<Parsed, CacheError>
    where
        D: serde::Deserializer<'de, Error = serde_json::Error>,
    {
        let err = |source| CacheError::Parse { kind, source };
        let mut out = Vec::new();
        match kind {
            UpdateKind::Update => {
                let ups =
                    BTreeMap::<String, RowsInOrder<RowUpdate>>::deserialize(j).map_err(err)?;
                for (table, RowsInOrder(rows)) in ups {
                    let ctx = self.table_ctx(&table)?;
                    let mut ops = Vec::with_capacity(rows.len());
                    for (uuid, ru) in rows {
                        let op = match (ru.old, ru.new) {
                            (None, Some(new)) => Op::Insert(ctx.full_row(uuid, new)?),
                            (Some(_), Some(new)) => Op::Replace(ctx.normalize_row(new)?),
                            (Some(_), None) => Op::Delete,
                            (None, None) => {
                                return Err(CacheError::EmptyRowUpdate { table, uuid });
                            }
                        };
                        ops.push((uuid, op));
                    }
                    out.push((table, ops));
                }
            }
            UpdateKind::Update2 | UpdateKind::Update3 => {
                let ups =
                    BTreeMap::<String, RowsInOrder<RowUpdate2>>::deserialize(j).map_err(err)?;
                for (table, RowsInOrder(rows)) in ups {
                    let ctx = self.table_ctx(&table)?;
                    let mut ops = Vec::with_capacity(rows.len());
                    for (uuid, ru) in rows {
                        let op = match ru {
                            RowUpdate2::Initial(r) | RowUpdate2::Insert(r) => {
                                Op::Insert(ctx.full_row(uuid, r)?)
                            }
                            RowUpdate2::Modify(r) => {
                                let mut cols = Vec::with_capacity(r.len());
                                for (c, v) in r {
                                    let ty = ctx.column_type(&c)?;
                                    let composite = ty.is_composite();
                                    cols.push((c, ty.normalize(v), composite));
                                }
                                Op::Diff(cols)
                            }
                            RowUpdate2::Delete(_) => Op::Delete,
                        };
                        ops.push((uuid, op));
                    }
                    out.push((table, ops));
                }
            }
        }
        Ok(out)
    }
}

struct TableCtx<'a> {
    schema: &'a TableSchema,
    defaults: Vec<(&'a String, Value)>,
}

impl TableCtx<'_> {
    fn column_type(&self, column: &str) -> Result<&ColumnType, CacheError> {
        self.schema.column_type(column).ok_or_else(|| {
            SchemaError::UnknownColumn {
                table: self.schema.name.clone(),
                column: column.to_string(),
            }
            .into()
        })
    }

    /// Normalizes in place: rebuilding the map would cost an allocation per column.
    fn normalize_row(&self, mut row: Row) -> Result<Row, CacheError> {
        for (c, v) in row.iter_mut() {
            let ty = self.column_type(c)?;
            let taken = std::mem::replace(v, Value::Atom(Atom::Boolean(false)));
            *v = ty.normalize(taken);
        }
        Ok(row)
    }

    /// A full row for an insert: normalized values, `_uuid`, and the defaults `update2`
    /// leaves out for every monitored column it did not send.
    fn full_row(&self, uuid: Uuid, row: Row) -> Result<Row, CacheError> {
        let mut row = self.normalize_row(row)?;
        for (c, d) in &self.defaults {
            if !row.contains_key(*c) {
                row.insert((*c).clone(), d.clone());
            }
        }
        row.insert("_uuid".into(), Value::uuid(uuid));
        Ok(row)
    }
}

/// The rows of one table in a table-updates object, in wire order, without building a
/// sorted map first (the initial reply of a big table is 100k+ rows).
struct RowsInOrder<R>(Vec<(Uuid, R)>);

impl<'de, R: Deserialize<'de>> Deserialize<'de> for RowsInOrder<R> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<R>(std::marker::PhantomData<R>);
        impl<'de, R: Deserialize<'de>> serde::de::Visitor<'de> for V<R> {
            type Value = RowsInOrder<R>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of row UUID -> row update")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut rows = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry::<Uuid, R>()? {
                    rows.push(entry);
                }
                Ok(RowsInOrder(rows))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

fn check_diff(
    table: &str,
    uuid: Uuid,
    column: &str,
    old: Option<&Value>,
    diff: &Value,
) -> Result<(), CacheError> {
    let bad = |reason| CacheError::BadDiff {
        table: table.to_string(),
        uuid,
        column: column.to_string(),
        diff: diff.to_string(),
        reason,
    };
    match (old, diff) {
        (Some(Value::Map(_)) | None, Value::Map(_)) => Ok(()),
        (Some(Value::Set(_)) | None, Value::Set(_)) => Ok(()),
        (Some(Value::Map(_)), Value::Set(s)) if s.is_empty() => Ok(()),
        (Some(Value::Map(_)), _) => Err(bad("is not a map diff for a map column")),
        (Some(Value::Set(_)), _) => Err(bad("is not a set diff for a set column")),
        (Some(Value::Atom(_)), _) => Err(bad("is a diff for a scalar column")),
        (None, Value::Atom(_)) => Err(bad("is a bare atom where a diff was expected")),
    }
}

/// RFC 7047bis `update2` modify semantics for a column of more than one element:
/// set: every element in the diff is toggled (present → removed, absent → added);
/// map: a key absent is added, a key present with the same value is removed, a key present
/// with another value gets the diff's value.
pub fn apply_diff(current: Value, diff: Value) -> Value {
    match (current, diff) {
        (Value::Set(mut cur), Value::Set(d)) => {
            for a in d {
                if !cur.remove(&a) {
                    cur.insert(a);
                }
            }
            Value::Set(cur)
        }
        (Value::Map(mut cur), Value::Map(d)) => {
            for (k, v) in d {
                match cur.get(&k) {
                    Some(old) if *old == v => {
                        cur.remove(&k);
                    }
                    _ => {
                        cur.insert(k, v);
                    }
                }
            }
            Value::Map(cur)
        }
        (Value::Map(cur), Value::Set(d)) if d.is_empty() => Value::Map(cur),
        (Value::Set(cur), Value::Map(d)) if cur.is_empty() => Value::Map(d),
        // Shapes were checked before applying; anything else is a replacement.
        (_, d) => d,
    }
}

/// The inverse of [`apply_diff`]: the diff ovsdb-server sends for a change from `old` to
/// `new` (used to build test notifications and to check diffs round-trip).
pub fn diff_of(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Set(o), Value::Set(n)) => Value::Set(o.symmetric_difference(n).cloned().collect()),
        (Value::Map(o), Value::Map(n)) => {
            let mut d = AtomMap::new();
            for (k, v) in o {
                match n.get(k) {
                    None => {
                        d.insert(k.clone(), v.clone());
                    }
                    Some(nv) if nv != v => {
                        d.insert(k.clone(), nv.clone());
                    }
                    Some(_) => {}
                }
            }
            for (k, v) in n {
                if !o.contains_key(k) {
                    d.insert(k.clone(), v.clone());
                }
            }
            Value::Map(d)
        }
        (_, n) => n.clone(),
    }
}

#[cfg(test)]
#[path = "cache/tests.rs"]
mod tests;
