//! The manifest-directory source: every `*.yaml` / `*.yml` file directly in a directory,
//! each with any number of documents, read into a [`Store`].
//!
//! Changes are found by polling a fingerprint of the files' names and contents: simple,
//! portable, and cheap for the few hundred objects a demo or test holds. A file that stops
//! being YAML (an editor's half-written save), or is caught empty mid-save, is read from its
//! last good text until it is fixed, so a typo or a save never deletes the rows of the
//! objects in it. To delete objects, delete (or edit) their documents, not the whole text.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};

use crate::store::{LoadError, ObjectRef, Store};

/// One read of the directory.
#[derive(Debug, Default)]
pub struct Loaded {
    pub store: Store,
    pub errors: Vec<LoadError>,
    /// Objects named by documents that could not be read: they exist, but their current
    /// version is unknown (their rows stay).
    pub broken: BTreeSet<ObjectRef>,
}

/// A directory of manifests.
#[derive(Debug)]
pub struct DirSource {
    dir: PathBuf,
    /// Per file, the last text that parsed as YAML.
    last_good: BTreeMap<PathBuf, String>,
    fingerprint: Option<u64>,
}

fn manifest_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if is_yaml && !hidden && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

impl DirSource {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirSource {
            dir: dir.into(),
            last_good: BTreeMap::new(),
            fingerprint: None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the directory if it changed since the last call (always the first time).
    /// `Ok(None)`: nothing changed.
    pub fn poll(&mut self) -> io::Result<Option<Loaded>> {
        let files = manifest_files(&self.dir)?;
        let mut texts = Vec::with_capacity(files.len());
        let mut h = DefaultHasher::new();
        for f in &files {
            // A file removed between the listing and the read is simply gone.
            let Ok(text) = std::fs::read_to_string(f) else {
                continue;
            };
            f.hash(&mut h);
            text.hash(&mut h);
            texts.push((f.clone(), text));
        }
        let fp = h.finish();
        if self.fingerprint == Some(fp) {
            return Ok(None);
        }
        self.fingerprint = Some(fp);
        let mut loaded = Loaded::default();
        let present: BTreeSet<PathBuf> = texts.iter().map(|(f, _)| f.clone()).collect();
        self.last_good.retain(|f, _| present.contains(f));
        for (f, text) in texts {
            let mut probe = Store::default();
            let errors = probe.load_yaml(&f, &text);
            // An empty file is a save caught between truncate and write far more often than
            // a wish to delete its objects (delete the file for that): keep its last text.
            let fatal =
                errors.iter().any(|e| e.what.starts_with("not YAML")) || text.trim().is_empty();
            let text = if fatal {
                match self.last_good.get(&f) {
                    Some(good) => good.clone(),
                    None => text,
                }
            } else {
                self.last_good.insert(f.clone(), text.clone());
                text
            };
            // Errors of the current text are reported; the objects come from the text used.
            let _ = loaded.store.load_yaml(&f, &text);
            for e in errors {
                if let Some(o) = &e.object {
                    loaded.broken.insert(o.clone());
                }
                loaded.errors.push(e);
            }
        }
        Ok(Some(loaded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VPC: &str = "apiVersion: ycloud.io/v1alpha1\nkind: Vpc\nmetadata: {name: a}\nspec: {serviceCIDRs: [10.96.0.0/16]}\n";

    #[test]
    fn a_directory_is_read_once_per_change_and_hidden_or_other_files_are_ignored() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("a.yaml"), VPC).expect("write");
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").expect("write");
        std::fs::create_dir(dir.path().join(".status")).expect("mkdir");
        std::fs::write(dir.path().join(".status/x.yaml"), "garbage: [").expect("write");
        let mut src = DirSource::new(dir.path());
        let first = src.poll().expect("poll").expect("first read");
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        assert_eq!(first.store.vpcs.len(), 1);
        assert!(src.poll().expect("poll").is_none(), "nothing changed");
        std::fs::write(dir.path().join("a.yaml"), VPC.replace("name: a", "name: b"))
            .expect("write");
        let second = src.poll().expect("poll").expect("changed");
        assert!(second.store.vpcs.contains_key("b"));
        std::fs::remove_file(dir.path().join("a.yaml")).expect("rm");
        let third = src.poll().expect("poll").expect("changed");
        assert!(third.store.vpcs.is_empty());
    }

    #[test]
    fn a_file_that_stops_being_yaml_keeps_its_last_good_objects_and_reports_the_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("a.yaml");
        std::fs::write(&f, VPC).expect("write");
        let mut src = DirSource::new(dir.path());
        src.poll().expect("poll");
        std::fs::write(&f, "apiVersion: [\n").expect("write");
        let loaded = src.poll().expect("poll").expect("changed");
        assert!(loaded.store.vpcs.contains_key("a"), "last good text used");
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
        src.poll().expect("poll");
        std::fs::write(&f, "").expect("truncate");
        let loaded = src.poll().expect("poll").expect("changed");
        assert!(loaded.store.vpcs.contains_key("a"), "last good text used");
        std::fs::remove_file(&f).expect("rm");
        let loaded = src.poll().expect("poll").expect("changed");
        assert!(
            loaded.store.vpcs.is_empty(),
            "a deleted file deletes its objects"
        );
    }
}
