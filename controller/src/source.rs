//! The manifest-directory source: every `*.yaml` / `*.yml` file directly in a directory,
//! each with any number of documents, read into a [`Store`].
//!
//! Changes are found by polling: each file's modification time, size and inode are
//! compared with the last poll, and only a file whose stamp moved is read again (and only
//! re-parsed when its text really changed). Between polls, the files the directory's watch
//! names are read without listing the directory ([`DirSource::poll_names`]). Within a changed file only the documents whose
//! text changed are parsed (each document's text is hashed and compared with the last
//! read), and their objects are compared one by one with the store's, so the loop learns
//! exactly which objects changed: an edit of one service in a file of 100 among 10,000
//! parses one document, not 100 or 10,000, and resolves one service (docs/controller.md,
//! "the change path").
//!
//! A file that stops being YAML (an editor's half-written save), or is caught empty
//! mid-save, is read from its last good text until it is fixed, so a typo or a save never
//! deletes the rows of the objects in it. To delete objects, delete (or edit) their
//! documents, not the whole text. When two files define the same object, the later file
//! (by name) wins, as a full read in name order would have it.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::store::{LoadError, ObjectRef, Store};

/// What one poll found changed.
#[derive(Debug, Default)]
pub struct Changes {
    /// The objects added, removed or changed; `None`: any may have (the first read, or a
    /// file that shares an object with another one, which is rebuilt from every file).
    pub objects: Option<BTreeSet<ObjectRef>>,
    /// The current errors of every file (not only the changed ones).
    pub errors: Vec<LoadError>,
    /// Objects named by documents that could not be read: they exist, but their current
    /// version is unknown (their rows stay).
    pub broken: BTreeSet<ObjectRef>,
}

/// What identifies a file's version without reading it: modification time, size, inode
/// (a save by rename changes the inode even within the clock's resolution).
type Stamp = (Option<SystemTime>, u64, u64);

/// One manifest file as last read.
#[derive(Debug)]
struct FileState {
    stamp: Stamp,
    /// The stamp was taken within [`RACY`] of the file's modification: a rewrite in the
    /// same clock tick (file times are coarse, a few ms) with the same size would not
    /// move it, so the file is read again until its stamp is older than that.
    racy: bool,
    /// Hash of the text last read (good or not).
    hash: u64,
    /// The text whose objects are in the store: the last one that parsed as YAML.
    used: String,
    /// The objects of `used`.
    objects: BTreeSet<ObjectRef>,
    /// The documents of `used`, in order, when it was read document by document; `None`
    /// when it was read whole (see [`split_documents`] and [`parse_changed_documents`]):
    /// the next edit then parses every document.
    docs: Option<Vec<Doc>>,
    /// Errors of the text last read.
    errors: Vec<LoadError>,
}

/// One document of a file as last parsed: the hash of its text and the object it defines
/// (none for an empty document).
#[derive(Debug, Clone)]
struct Doc {
    hash: u64,
    objects: Vec<ObjectRef>,
}

/// A directory of manifests.
#[derive(Debug)]
pub struct DirSource {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    /// Nothing read yet: the first poll reads everything.
    first: bool,
    /// Documents parsed so far (the cost the per-document comparison saves, counted for
    /// tests).
    parsed_docs: u64,
}

fn manifest_files(dir: &Path) -> io::Result<Vec<(PathBuf, Stamp)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if !is_yaml || hidden {
            continue;
        }
        // A file removed between the listing and the stat is simply gone.
        if let Some(stamp) = file_stamp(&path) {
            files.push((path, stamp));
        }
    }
    files.sort();
    Ok(files)
}

/// The stamp of a regular file; `None` when there is none (gone, or not a file).
fn file_stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    meta.is_file()
        .then(|| (meta.modified().ok(), meta.len(), meta.ino()))
}

/// How close to its modification time a stamp is not trusted (file times come from a
/// coarse clock: one tick is 1–10 ms).
const RACY: std::time::Duration = std::time::Duration::from_millis(50);

fn is_racy(stamp: &Stamp) -> bool {
    stamp.0.is_none_or(|m| m + RACY > SystemTime::now())
}

fn hash_of(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// The documents of a YAML stream as texts, each from its `---` line (if any) to the next
/// one, or `None` when the text must be read whole. YAML forbids a line that starts with
/// `---` followed by a space or the line's end inside any content (the spec's
/// "c-forbidden"): it always starts a document, so cutting there yields the same documents
/// as the parser. A document end (`...`) or a directive (`%`) line could change how the
/// next document reads: such rare texts are read whole.
fn split_documents(text: &str) -> Option<Vec<&str>> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with("...") || line.starts_with('%') {
            return None;
        }
        let marker = line
            .strip_prefix("---")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace));
        if marker && at > start {
            docs.push(&text[start..at]);
            start = at;
        }
        at += line.len();
    }
    if at > start {
        docs.push(&text[start..at]);
    }
    Some(docs)
}

/// The documents of `text` parsed, except those whose text is one of `old`'s (their
/// objects are already in the store as that text defines them): the store of the new
/// documents' objects, every document's hash and objects, and the number parsed. `None`
/// when the text must be read whole: it can't be split (see [`split_documents`]), a
/// document has an error (whole-text parsing numbers it and keeps a broken file's last
/// good text), or two documents define the same object (the later wins: an unchanged later
/// document must not be overridden by a changed earlier one).
fn parse_changed_documents(
    path: &Path,
    text: &str,
    old: Option<&[Doc]>,
) -> Option<(Store, Vec<Doc>, usize)> {
    let known: std::collections::HashMap<u64, &Doc> = old
        .unwrap_or_default()
        .iter()
        .map(|d| (d.hash, d))
        .collect();
    let texts = split_documents(text)?;
    if known.is_empty()
        && let Some(whole) = parse_unknown_documents(path, text, &texts)
    {
        return Some(whole);
    }
    let mut parsed = Store::default();
    let mut docs = Vec::new();
    let mut count = 0;
    let mut seen = BTreeSet::new();
    for doc in texts {
        let hash = hash_of(doc);
        let objects = match known.get(&hash) {
            Some(d) => d.objects.clone(),
            None => {
                count += 1;
                let mut one = Store::default();
                if !one.load_yaml(path, doc).is_empty() {
                    return None;
                }
                let objects = one.refs();
                for o in &objects {
                    parsed.take_from(&mut one, o);
                }
                objects
            }
        };
        for o in &objects {
            if !seen.insert(o.clone()) {
                return None;
            }
        }
        docs.push(Doc { hash, objects });
    }
    Some((parsed, docs, count))
}

/// [`parse_changed_documents`] when none of the documents is known (a first read): the
/// whole text through one parser, each object matched to its document by order. `None`
/// when that can't be trusted (the parser's documents are not `texts`, e.g. a comment-only
/// text before the first `---`), a document has an error, or two define one object: the
/// caller then parses document by document.
fn parse_unknown_documents(
    path: &Path,
    text: &str,
    texts: &[&str],
) -> Option<(Store, Vec<Doc>, usize)> {
    let mut parsed = Store::default();
    let (errors, objects) = parsed.load_yaml_documents(path, text);
    if !errors.is_empty() || objects.len() != texts.len() {
        return None;
    }
    let mut seen = BTreeSet::new();
    let mut docs = Vec::with_capacity(texts.len());
    for (doc, object) in texts.iter().zip(objects) {
        let objects: Vec<ObjectRef> = object.into_iter().collect();
        if objects.iter().any(|o| !seen.insert(o.clone())) {
            return None;
        }
        docs.push(Doc {
            hash: hash_of(doc),
            objects,
        });
    }
    Some((parsed, docs, texts.len()))
}

/// One edited file parsed: the store of the objects parsed now, the errors, the documents'
/// hashes and objects (`None`: read whole), the objects parsed now (`None`: every object
/// of the file) and the number of documents parsed.
type ParsedFile = (
    Store,
    Vec<LoadError>,
    Option<Vec<Doc>>,
    Option<BTreeSet<ObjectRef>>,
    usize,
);

/// An edited file to parse: its path, its text and its documents as last read.
type ParseJob<'a> = (&'a Path, &'a str, Option<&'a [Doc]>);

/// Parses the changed documents of one edited file (all of it when it can't be cut or
/// its last documents are unknown); see [`parse_changed_documents`].
fn parse_file(path: &Path, text: &str, old_docs: Option<&[Doc]>) -> ParsedFile {
    match (!text.trim().is_empty())
        .then(|| parse_changed_documents(path, text, old_docs))
        .flatten()
    {
        Some((parsed, docs, count)) => {
            let fresh: BTreeSet<ObjectRef> = parsed.refs().into_iter().collect();
            (parsed, Vec::new(), Some(docs), Some(fresh), count)
        }
        None => {
            let mut parsed = Store::default();
            let errors = parsed.load_yaml(path, text);
            let count = split_documents(text).map_or(1, |d| d.len());
            (parsed, errors, None, None, count)
        }
    }
}

/// Parses each edited file ([`parse_file`]): the files at once on several threads when
/// there are many (a cold start with 10,000 services reads 100 files; YAML parsing is most
/// of reading them). Results in `files`' order.
fn parse_files(files: &[ParseJob<'_>]) -> Vec<ParsedFile> {
    crate::par::map_chunks(
        files,
        |(_, text, _)| text.len(),
        PARALLEL_PARSE_BYTES,
        |chunk| {
            chunk
                .iter()
                .map(|(path, text, old)| parse_file(path, text, *old))
                .collect::<Vec<_>>()
        },
    )
    .into_iter()
    .flatten()
    .collect()
}

/// Below this much text in the files to parse, one thread parses them (a thread costs
/// more than it saves).
const PARALLEL_PARSE_BYTES: usize = 256 * 1024;

impl DirSource {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirSource {
            dir: dir.into(),
            files: BTreeMap::new(),
            first: true,
            parsed_docs: 0,
        }
    }

    /// Documents parsed since this source was made (tests: a change parses only the
    /// documents it touched).
    pub fn documents_parsed(&self) -> u64 {
        self.parsed_docs
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes the next poll read every file again (their texts are still compared before
    /// anything is parsed): the periodic resync's guard against a rewrite the stamps
    /// missed.
    pub fn forget_stamps(&mut self) {
        for f in self.files.values_mut() {
            f.stamp = (None, u64::MAX, u64::MAX);
        }
    }

    /// Brings `store` up to date with the directory if it changed since the last call
    /// (always the first time). `Ok(None)`: nothing changed. `store` must be the one the
    /// previous calls filled.
    pub fn poll_into(&mut self, store: &mut Store) -> io::Result<Option<Changes>> {
        let listed = manifest_files(&self.dir)?;
        let present: BTreeSet<&PathBuf> = listed.iter().map(|(p, _)| p).collect();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !present.contains(p))
            .cloned()
            .collect();
        self.read_files(store, &listed, gone, false)
    }

    /// Like [`DirSource::poll_into`], for the files of `names` only (names in the directory,
    /// as the directory watch reports them: written, renamed in or out, removed), without
    /// listing the directory: a listing waits for the directory's lock, which a writer
    /// creating or renaming a file there holds while the disk is slow (100 ms and more on a
    /// busy disk), and the change path has no use for the other 100 files' stamps. Each named
    /// file is read whatever its stamp (the watch saw it written). The first read lists
    /// everything.
    pub fn poll_names(
        &mut self,
        store: &mut Store,
        names: &BTreeSet<OsString>,
    ) -> io::Result<Option<Changes>> {
        if self.first {
            return self.poll_into(store);
        }
        let mut listed = Vec::new();
        let mut gone = Vec::new();
        for name in names {
            if !crate::dirwatch::is_manifest_name(&name.to_string_lossy()) {
                continue;
            }
            let path = self.dir.join(name);
            match file_stamp(&path) {
                Some(stamp) => listed.push((path, stamp)),
                None if self.files.contains_key(&path) => gone.push(path),
                None => {}
            }
        }
        listed.sort();
        self.read_files(store, &listed, gone, true)
    }

    /// Reads the files of `listed` whose stamp moved (all of them when `force`) and drops
    /// the files of `gone`, into `store`.
    fn read_files(
        &mut self,
        store: &mut Store,
        listed: &[(PathBuf, Stamp)],
        gone: Vec<PathBuf>,
        force: bool,
    ) -> io::Result<Option<Changes>> {
        let mut edited: Vec<(PathBuf, Stamp, String)> = Vec::new();
        for (path, stamp) in listed {
            if let Some(st) = self.files.get_mut(path)
                && st.stamp == *stamp
                && !st.racy
                && !force
            {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(path) else {
                continue;
            };
            match self.files.get_mut(path) {
                Some(st) if st.hash == hash_of(&text) => {
                    st.stamp = *stamp;
                    st.racy = is_racy(stamp);
                }
                _ => edited.push((path.clone(), *stamp, text)),
            }
        }
        if gone.is_empty() && edited.is_empty() && !self.first {
            return Ok(None);
        }
        // The first read loads every file in name order (a later file's object replaces an
        // earlier one's): no comparison, everything is new.
        let first = std::mem::take(&mut self.first);
        let mut rebuild = false;
        let mut changed = BTreeSet::new();
        for path in gone {
            let st = self.files.remove(&path).expect("listed above");
            for o in &st.objects {
                if self.claimed_elsewhere(&path, o) {
                    rebuild = true;
                } else if store.remove(o) {
                    changed.insert(o.clone());
                }
            }
        }
        let jobs: Vec<ParseJob<'_>> = edited
            .iter()
            .map(|(path, _, text)| {
                let old_docs = self.files.get(path).and_then(|st| st.docs.as_deref());
                (path.as_path(), text.as_str(), old_docs)
            })
            .collect();
        let parsed_files = parse_files(&jobs);
        drop(jobs);
        for ((path, stamp, text), (mut parsed, errors, docs, fresh, count)) in
            edited.into_iter().zip(parsed_files)
        {
            // `fresh`: the objects of the documents parsed now (`None`: every object of
            // the file); the others are in the store as their unchanged text defines them.
            self.parsed_docs += count as u64;
            // An empty file is a save caught between truncate and write far more often than
            // a wish to delete its objects (delete the file for that): keep its last text.
            let fatal =
                errors.iter().any(|e| e.what.starts_with("not YAML")) || text.trim().is_empty();
            let hash = hash_of(&text);
            if fatal && let Some(st) = self.files.get_mut(&path) {
                // Errors of the current text are reported; the objects stay those of the
                // last good one.
                st.stamp = stamp;
                st.racy = is_racy(&stamp);
                st.hash = hash;
                st.errors = errors;
                continue;
            }
            let objects: BTreeSet<ObjectRef> = match &docs {
                Some(docs) => docs
                    .iter()
                    .flat_map(|d| d.objects.iter().cloned())
                    .collect(),
                None => parsed.refs().into_iter().collect(),
            };
            let old = self
                .files
                .get(&path)
                .map(|st| st.objects.clone())
                .unwrap_or_default();
            if first {
                for o in &objects {
                    store.take_from(&mut parsed, o);
                }
            }
            for o in old.difference(&objects).filter(|_| !first) {
                if self.claimed_elsewhere(&path, o) {
                    rebuild = true;
                } else if store.remove(o) {
                    changed.insert(o.clone());
                }
            }
            // An object of an unchanged document is as it was: whether this file or
            // another one defines it in the store, nothing here moved that.
            let reparsed = |o: &ObjectRef| fresh.as_ref().is_none_or(|f| f.contains(o));
            for o in objects.iter().filter(|o| !first && reparsed(o)) {
                if self.claimed_elsewhere(&path, o) {
                    rebuild = true;
                }
                if !store.same(&parsed, o) {
                    changed.insert(o.clone());
                    store.take_from(&mut parsed, o);
                }
            }
            self.files.insert(
                path,
                FileState {
                    stamp,
                    racy: is_racy(&stamp),
                    hash,
                    used: text,
                    objects,
                    docs,
                    errors,
                },
            );
        }
        if rebuild {
            // Every file again, in name order: the later of two files defining an object
            // wins, and an object one file dropped comes back from the other.
            // (Probe verdicts injected into the store are put back before every pass.)
            let mut fresh = Store::default();
            for (path, st) in &self.files {
                let _ = fresh.load_yaml(path, &st.used);
            }
            *store = fresh;
        }
        let errors: Vec<LoadError> = self
            .files
            .values()
            .flat_map(|st| st.errors.iter().cloned())
            .collect();
        let broken = errors.iter().filter_map(|e| e.object.clone()).collect();
        Ok(Some(Changes {
            objects: (!rebuild && !first).then_some(changed),
            errors,
            broken,
        }))
    }

    fn claimed_elsewhere(&self, path: &Path, o: &ObjectRef) -> bool {
        self.files
            .iter()
            .any(|(p, st)| p != path && st.objects.contains(o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VPC: &str = "apiVersion: ycloud.io/v1alpha1\nkind: Vpc\nmetadata: {name: a}\nspec: {serviceCIDRs: [10.96.0.0/16]}\n";

    fn svc(name: &str, backend: &str) -> String {
        format!(
            "apiVersion: ycloud.io/v1alpha1\nkind: YusurService\nmetadata: {{name: {name}, namespace: t}}\n\
             spec: {{scenarios: [ClusterIP], ports: [{{name: p, port: 80}}], staticBackends: [{{address: {backend}}}]}}\n"
        )
    }

    #[test]
    fn a_directory_is_read_once_per_change_and_hidden_or_other_files_are_ignored() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("a.yaml"), VPC).expect("write");
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").expect("write");
        std::fs::create_dir(dir.path().join(".status")).expect("mkdir");
        std::fs::write(dir.path().join(".status/x.yaml"), "garbage: [").expect("write");
        let mut src = DirSource::new(dir.path());
        let mut store = Store::default();
        let first = src
            .poll_into(&mut store)
            .expect("poll")
            .expect("first read");
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        assert!(first.objects.is_none(), "the first read is everything");
        assert_eq!(store.vpcs.len(), 1);
        assert!(
            src.poll_into(&mut store).expect("poll").is_none(),
            "nothing changed"
        );
        std::fs::write(dir.path().join("a.yaml"), VPC.replace("name: a", "name: b"))
            .expect("write");
        let second = src.poll_into(&mut store).expect("poll").expect("changed");
        assert!(store.vpcs.contains_key("b") && !store.vpcs.contains_key("a"));
        assert_eq!(
            second.objects,
            Some(BTreeSet::from([
                ObjectRef::new("Vpc", None, "a"),
                ObjectRef::new("Vpc", None, "b")
            ]))
        );
        std::fs::remove_file(dir.path().join("a.yaml")).expect("rm");
        let third = src.poll_into(&mut store).expect("poll").expect("changed");
        assert!(store.vpcs.is_empty());
        assert_eq!(
            third.objects,
            Some(BTreeSet::from([ObjectRef::new("Vpc", None, "b")]))
        );
    }

    #[test]
    fn an_edit_reports_exactly_the_objects_that_changed_and_a_touch_reports_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("svcs.yaml");
        let text = |b1: &str| {
            format!(
                "{}---\n{}---\n{}",
                svc("s1", b1),
                svc("s2", "10.0.0.2"),
                svc("s3", "10.0.0.3")
            )
        };
        std::fs::write(&f, text("10.0.0.1")).expect("write");
        std::fs::write(dir.path().join("other.yaml"), VPC).expect("write");
        let mut src = DirSource::new(dir.path());
        let mut store = Store::default();
        src.poll_into(&mut store).expect("poll");
        assert_eq!(store.services.len(), 3);

        std::fs::write(&f, text("10.0.0.9")).expect("write");
        let c = src.poll_into(&mut store).expect("poll").expect("changed");
        assert_eq!(
            c.objects,
            Some(BTreeSet::from([ObjectRef::new(
                "YusurService",
                Some("t"),
                "s1"
            )])),
            "one service of three changed"
        );
        assert_eq!(
            store.services["t/s1"].spec.static_backends[0]
                .address
                .to_string(),
            "10.0.0.9"
        );
        // The same text again (a new stamp, no new content): nothing to do.
        std::fs::write(&f, text("10.0.0.9")).expect("write");
        src.forget_stamps();
        assert!(src.poll_into(&mut store).expect("poll").is_none());
    }

    #[test]
    fn the_named_files_are_read_without_a_listing_and_an_unnamed_edit_waits_for_the_poll() {
        let dir = tempfile::tempdir().expect("tmp");
        let names = |n: &[&str]| n.iter().map(OsString::from).collect::<BTreeSet<_>>();
        std::fs::write(dir.path().join("a.yaml"), svc("s1", "10.0.0.1")).expect("write");
        std::fs::write(dir.path().join("b.yaml"), svc("s2", "10.0.0.2")).expect("write");
        let mut src = DirSource::new(dir.path());
        let mut store = Store::default();
        // The first read is everything, whatever the names say.
        let first = src
            .poll_names(&mut store, &names(&["a.yaml"]))
            .expect("poll")
            .expect("first read");
        assert!(first.objects.is_none(), "the first read is everything");
        assert_eq!(store.services.len(), 2);

        // An edit of a, a new file c, b edited but not named (its event still to come).
        std::fs::write(dir.path().join("a.yaml"), svc("s1", "10.0.0.9")).expect("write");
        std::fs::write(dir.path().join("c.yaml"), svc("s3", "10.0.0.3")).expect("write");
        std::fs::write(dir.path().join("b.yaml"), svc("s2", "10.0.0.8")).expect("write");
        let c = src
            .poll_names(&mut store, &names(&["a.yaml", "c.yaml", ".c.tmp", "x.txt"]))
            .expect("poll")
            .expect("changed");
        let svc_ref = |n: &str| ObjectRef::new("YusurService", Some("t"), n);
        assert_eq!(
            c.objects,
            Some(BTreeSet::from([svc_ref("s1"), svc_ref("s3")])),
            "the named manifests only"
        );
        let backend = |store: &Store, k: &str| {
            store.services[k].spec.static_backends[0]
                .address
                .to_string()
        };
        assert_eq!(
            backend(&store, "t/s2"),
            "10.0.0.2",
            "b was not named: not read"
        );

        // A named file read again with the same text: nothing changed. A removed one: gone.
        std::fs::remove_file(dir.path().join("c.yaml")).expect("rm");
        let c = src
            .poll_names(&mut store, &names(&["a.yaml", "c.yaml", "never.yaml"]))
            .expect("poll")
            .expect("changed");
        assert_eq!(c.objects, Some(BTreeSet::from([svc_ref("s3")])));
        assert!(!store.services.contains_key("t/s3"));

        // The poll (a listing) finds the unnamed edit.
        let c = src.poll_into(&mut store).expect("poll").expect("changed");
        assert_eq!(c.objects, Some(BTreeSet::from([svc_ref("s2")])));
        assert_eq!(backend(&store, "t/s2"), "10.0.0.8");
    }

    #[test]
    fn an_object_in_two_files_is_the_later_files_and_comes_back_when_that_one_drops_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = dir.path().join("a.yaml");
        let b = dir.path().join("b.yaml");
        std::fs::write(&a, svc("s", "10.0.0.1")).expect("write");
        std::fs::write(&b, svc("s", "10.0.0.2")).expect("write");
        let mut src = DirSource::new(dir.path());
        let mut store = Store::default();
        src.poll_into(&mut store).expect("poll");
        let addr = |store: &Store| {
            store.services["t/s"].spec.static_backends[0]
                .address
                .to_string()
        };
        assert_eq!(addr(&store), "10.0.0.2", "the later file wins");
        std::fs::write(&b, VPC).expect("write");
        let c = src.poll_into(&mut store).expect("poll").expect("changed");
        assert!(c.objects.is_none(), "rebuilt from every file");
        assert_eq!(addr(&store), "10.0.0.1", "a.yaml's version is back");
        assert!(store.vpcs.contains_key("a"));
    }

    #[test]
    fn a_file_that_stops_being_yaml_keeps_its_last_good_objects_and_reports_the_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("a.yaml");
        std::fs::write(&f, VPC).expect("write");
        let mut src = DirSource::new(dir.path());
        let mut store = Store::default();
        src.poll_into(&mut store).expect("poll");
        std::fs::write(&f, "apiVersion: [\n").expect("write");
        let loaded = src.poll_into(&mut store).expect("poll").expect("changed");
        assert!(store.vpcs.contains_key("a"), "last good text used");
        assert_eq!(loaded.objects, Some(BTreeSet::new()));
        assert_eq!(loaded.errors.len(), 1);
        assert!(
            loaded.errors[0]
                .to_string()
                .contains("a.yaml document 1: not YAML")
        );
    }

    #[test]
    fn a_file_caught_empty_mid_save_keeps_its_objects() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("a.yaml");
        std::fs::write(&f, VPC).expect("write");
        let mut src = DirSource::new(dir.path());
        let mut store = Store::default();
        src.poll_into(&mut store).expect("poll");
        std::fs::write(&f, "").expect("truncate");
        src.poll_into(&mut store).expect("poll").expect("changed");
        assert!(store.vpcs.contains_key("a"), "last good text used");
        std::fs::remove_file(&f).expect("rm");
        src.poll_into(&mut store).expect("poll").expect("changed");
        assert!(store.vpcs.is_empty(), "a deleted file deletes its objects");
    }

    /// `svc` as a document that starts with its own `---` line.
    fn doc(name: &str, backend: &str) -> String {
        format!("---\n{}", svc(name, backend))
    }

    #[test]
    fn an_edit_of_one_document_parses_that_document_only() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("svcs.yaml");
        let write = |docs: &[(&str, &str)]| {
            let text: String = docs.iter().map(|(n, b)| doc(n, b)).collect();
            std::fs::write(&f, text).expect("write");
        };
        write(&[("s1", "10.0.0.1"), ("s2", "10.0.0.2"), ("s3", "10.0.0.3")]);
        let mut src = DirSource::new(dir.path());
        let mut store = Store::default();
        src.poll_into(&mut store).expect("poll");
        assert_eq!(src.documents_parsed(), 3);

        write(&[("s1", "10.0.0.1"), ("s2", "10.0.0.9"), ("s3", "10.0.0.3")]);
        let c = src.poll_into(&mut store).expect("poll").expect("changed");
        assert_eq!(
            c.objects,
            Some(BTreeSet::from([ObjectRef::new(
                "YusurService",
                Some("t"),
                "s2"
            )]))
        );
        assert_eq!(
            src.documents_parsed(),
            4,
            "one document parsed for one edit"
        );
        let addr = |store: &Store, s: &str| {
            store.services[&format!("t/{s}")].spec.static_backends[0]
                .address
                .to_string()
        };
        assert_eq!(addr(&store, "s2"), "10.0.0.9");

        // Documents moved around and one dropped: nothing parsed, one object gone.
        write(&[("s3", "10.0.0.3"), ("s1", "10.0.0.1")]);
        let c = src.poll_into(&mut store).expect("poll").expect("changed");
        assert_eq!(
            c.objects,
            Some(BTreeSet::from([ObjectRef::new(
                "YusurService",
                Some("t"),
                "s2"
            )]))
        );
        assert_eq!(src.documents_parsed(), 4);
        assert!(!store.services.contains_key("t/s2"));

        // A document that does not load is numbered as in the whole text, and the others
        // stay loaded.
        let text = format!(
            "{}---\napiVersion: ycloud.io/v1alpha1\nkind: Vpc\nmetadata: {{name: b}}\nspec: {{serviceCIDRs: [nope]}}\n{}",
            doc("s3", "10.0.0.3"),
            doc("s1", "10.0.0.7")
        );
        std::fs::write(&f, text).expect("write");
        let c = src.poll_into(&mut store).expect("poll").expect("changed");
        assert_eq!(c.errors.len(), 1, "{:?}", c.errors);
        assert_eq!(c.errors[0].doc, 2);
        assert_eq!(addr(&store, "s1"), "10.0.0.7");
        assert_eq!(addr(&store, "s3"), "10.0.0.3");

        // Whatever the path, the store is what a fresh read of the directory gives.
        let mut fresh = Store::default();
        DirSource::new(dir.path())
            .poll_into(&mut fresh)
            .expect("poll");
        assert!(store.diff(&fresh).is_empty(), "{:?}", store.diff(&fresh));
    }

    #[test]
    fn an_object_in_two_documents_of_one_file_is_the_later_ones_whichever_changes() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("a.yaml");
        std::fs::write(&f, doc("s", "10.0.0.1") + &doc("s", "10.0.0.2")).expect("write");
        let mut src = DirSource::new(dir.path());
        let mut store = Store::default();
        src.poll_into(&mut store).expect("poll");
        let addr = |store: &Store| {
            store.services["t/s"].spec.static_backends[0]
                .address
                .to_string()
        };
        assert_eq!(addr(&store), "10.0.0.2");
        std::fs::write(&f, doc("s", "10.0.0.5") + &doc("s", "10.0.0.2")).expect("write");
        let c = src.poll_into(&mut store).expect("poll").expect("changed");
        assert_eq!(addr(&store), "10.0.0.2", "the later document still wins");
        assert_eq!(c.objects, Some(BTreeSet::new()));
    }

    #[test]
    fn a_first_read_parses_a_file_in_one_go_with_the_same_documents_as_one_by_one() {
        let path = Path::new("svc.yaml");
        let one_by_one = |text: &str| {
            // Known documents (none matching) force the per-document parse.
            let unknown = [Doc {
                hash: 0,
                objects: Vec::new(),
            }];
            parse_changed_documents(path, text, Some(&unknown)).expect("per document")
        };
        let same = |text: &str| {
            let (whole, docs, n) = parse_changed_documents(path, text, None).expect("first read");
            let (single, single_docs, single_n) = one_by_one(text);
            assert!(whole.diff(&single).is_empty(), "{text}");
            assert_eq!(n, single_n, "{text}");
            let view = |d: &[Doc]| {
                d.iter()
                    .map(|d| (d.hash, d.objects.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(view(&docs), view(&single_docs), "{text}");
        };
        let two = format!("---\n{}---\n{}", svc("a", "10.0.0.1"), svc("b", "10.0.0.2"));
        // In one go: the parser's documents are the cut ones (empty ones included).
        assert!(parse_unknown_documents(path, &two, &split_documents(&two).unwrap()).is_some());
        same(&two);
        let with_empty = format!(
            "{two}---
"
        );
        assert!(
            parse_unknown_documents(path, &with_empty, &split_documents(&with_empty).unwrap())
                .is_some()
        );
        same(&with_empty);
        // A comment before the first `---` is a cut document but not the parser's: one by
        // one, with the same result.
        let lead = format!("# services\n{two}");
        assert!(parse_unknown_documents(path, &lead, &split_documents(&lead).unwrap()).is_none());
        same(&lead);
        // An object defined twice: the later wins, read whole by the caller.
        let twice = format!("---\n{}---\n{}", svc("a", "10.0.0.1"), svc("a", "10.0.0.2"));
        assert!(parse_changed_documents(path, &twice, None).is_none());
    }

    #[test]
    fn documents_are_cut_where_the_yaml_parser_cuts_them() {
        let text = "# lead comment\na: 1\n---\nb: |\n  ---\n  text\n--- {c: 3}\n----x: 4\n---\t\n";
        assert_eq!(
            split_documents(text).expect("splits"),
            [
                "# lead comment\na: 1\n",
                "---\nb: |\n  ---\n  text\n",
                "--- {c: 3}\n----x: 4\n",
                "---\t\n"
            ]
        );
        assert_eq!(split_documents("a: 1\n...\n---\nb: 2\n"), None);
        assert_eq!(split_documents("%YAML 1.2\n---\na: 1\n"), None);
        // Every example manifest: document by document is the whole text's store.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut read = 0;
        for e in std::fs::read_dir(&dir).expect("examples") {
            let path = e.expect("entry").path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            let mut whole = Store::default();
            assert!(whole.load_yaml(&path, &text).is_empty());
            let (docs, _, n) =
                parse_changed_documents(&path, &text, None).expect("read document by document");
            assert!(n > 0);
            assert!(docs.diff(&whole).is_empty(), "{}", path.display());
            read += 1;
        }
        assert!(read > 3, "the examples are there");
    }

    #[test]
    fn a_large_directory_parsed_on_several_threads_loads_every_object_and_names_each_error_s_file()
    {
        let dir = tempfile::tempdir().expect("tmp");
        // Well above the parallel threshold: 12 files of 150 services (~40 KB each).
        let names: Vec<String> = (0..12).map(|f| format!("{f:02}-svcs.yaml")).collect();
        for (f, name) in names.iter().enumerate() {
            let mut text = String::new();
            for i in 0..150 {
                text.push_str("---\n");
                text.push_str(&svc(&format!("s{f}-{i}"), "10.0.0.1"));
            }
            if f == 7 {
                // Document 151 of file 7 names no kind.
                text.push_str("---\napiVersion: v1\nmetadata: {name: nokind}\n");
            }
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        let total: u64 = names
            .iter()
            .map(|n| std::fs::metadata(dir.path().join(n)).expect("stat").len())
            .sum();
        assert!(
            total as usize > PARALLEL_PARSE_BYTES,
            "the test must take the threaded path"
        );
        let mut src = DirSource::new(dir.path());
        let mut store = Store::default();
        let first = src
            .poll_into(&mut store)
            .expect("poll")
            .expect("first read");
        assert_eq!(store.services.len(), 12 * 150);
        assert!(store.services.contains_key("t/s0-0") && store.services.contains_key("t/s11-149"));
        assert_eq!(first.errors.len(), 1, "{:?}", first.errors);
        assert_eq!(first.errors[0].path, dir.path().join(&names[7]));
        assert_eq!(first.errors[0].doc, 151);
        // Each file knows its own objects: an edit of file 3 reports only its change.
        let edited = std::fs::read_to_string(dir.path().join(&names[3]))
            .expect("read")
            .replacen("10.0.0.1", "10.0.0.9", 1);
        std::fs::write(dir.path().join(&names[3]), edited).expect("write");
        let c = src.poll_into(&mut store).expect("poll").expect("changed");
        assert_eq!(
            c.objects,
            Some(BTreeSet::from([ObjectRef::new(
                "YusurService",
                Some("t"),
                "s3-0"
            )]))
        );
    }
}
