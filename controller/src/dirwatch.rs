//! Wakes the reconcile loop when a manifest in the source directory is written, renamed in
//! or out, or deleted (inotify), so an edit is read at once instead of at the next poll.
//!
//! The poll stays: it lists the directory and reads the files whose stamp moved, and it is
//! the safety net for what inotify cannot see (a directory on a network file system, a
//! directory replaced as a whole, an event queue overflow). The watch says "look now, at
//! these files": the loop reads just them, without listing the directory (see
//! `DirSource::poll_names`).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io;
use std::path::Path;

use futures::{FutureExt, StreamExt};
use inotify::{EventStream, Inotify, WatchMask};

/// An inotify watch on one directory.
pub struct DirWatch {
    events: EventStream<Vec<u8>>,
}

impl DirWatch {
    /// Watches `dir` for what changes a manifest's content or presence. Fails when inotify
    /// is not available or `dir` cannot be watched; the caller then relies on the poll.
    pub fn new(dir: &Path) -> io::Result<Self> {
        let inotify = Inotify::init()?;
        inotify.watches().add(
            dir,
            // A write by rename (kubectl-like tools, our tests and benches) is MOVED_TO; an
            // editor saving in place ends with CLOSE_WRITE; a removal is DELETE or
            // MOVED_FROM. MODIFY alone would wake us for every write(2) of a large file.
            WatchMask::CLOSE_WRITE
                | WatchMask::MOVED_TO
                | WatchMask::MOVED_FROM
                | WatchMask::DELETE
                | WatchMask::DELETE_SELF
                | WatchMask::MOVE_SELF,
        )?;
        Ok(DirWatch {
            events: inotify.into_event_stream(vec![0; 4096])?,
        })
    }

    /// Resolves when at least one event about a manifest arrived since the last call (all
    /// queued events are consumed: a burst is one wake-up), with what they name. Events
    /// about other names (a hidden temp file before its rename, a status file) do not wake
    /// the caller. An error ends the watch: the caller falls back to the poll.
    pub async fn changed(&mut self) -> io::Result<Touched> {
        loop {
            let mut names = BTreeSet::new();
            let mut unknown = false;
            let mut next = self.events.next().await;
            loop {
                match next {
                    // No name: the directory itself (moved, deleted) or an overflow of the
                    // event queue; either way the poll must look at everything.
                    Some(Ok(e)) => match e.name {
                        Some(n) if is_manifest_name(&n.to_string_lossy()) => {
                            names.insert(n);
                        }
                        Some(_) => {}
                        None => unknown = true,
                    },
                    Some(Err(e)) => return Err(e),
                    None => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the inotify event stream ended",
                        ));
                    }
                }
                // The rest of a burst that is already queued.
                match self.events.next().now_or_never() {
                    Some(n) => next = n,
                    None => break,
                }
            }
            if unknown {
                return Ok(Touched::Unknown);
            }
            if !names.is_empty() {
                return Ok(Touched::Names(names));
            }
        }
    }
}

/// What one wake-up of the watch says changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    /// These manifests (names in the directory) were written, renamed in or out, or
    /// removed: reading them is enough.
    Names(BTreeSet<OsString>),
    /// Something names do not cover (the directory itself moved, or the event queue
    /// overflowed): the whole directory must be listed.
    Unknown,
}

/// The names the directory source reads: `*.yaml` / `*.yml`, not hidden.
pub fn is_manifest_name(name: &str) -> bool {
    !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn woken(w: &mut DirWatch, within: Duration) -> bool {
        tokio::time::timeout(within, w.changed()).await.is_ok()
    }

    /// The names of the next wake-up within `within` (`None`: no wake-up).
    async fn named(w: &mut DirWatch, within: Duration) -> Option<Touched> {
        tokio::time::timeout(within, w.changed())
            .await
            .ok()
            .map(|r| r.expect("watch"))
    }

    #[tokio::test]
    async fn a_wake_up_names_the_manifests_of_a_burst_and_only_those() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = DirWatch::new(dir.path()).expect("inotify");
        let short = Duration::from_millis(300);
        for f in ["a", "b"] {
            let tmp = dir.path().join(format!(".{f}.tmp"));
            std::fs::write(&tmp, "kind: Vpc\n").expect("write");
            std::fs::rename(&tmp, dir.path().join(format!("{f}.yaml"))).expect("rename");
        }
        std::fs::write(dir.path().join("notes.txt"), "x").expect("write");
        assert_eq!(
            named(&mut w, short).await,
            Some(Touched::Names(BTreeSet::from([
                OsString::from("a.yaml"),
                OsString::from("b.yaml")
            ]))),
            "one wake-up naming both manifests, not the temp files or notes.txt"
        );
        std::fs::remove_file(dir.path().join("a.yaml")).expect("rm");
        assert_eq!(
            named(&mut w, short).await,
            Some(Touched::Names(BTreeSet::from([OsString::from("a.yaml")])))
        );
        // The directory itself moved away: names can't say what to read any more.
        let moved = dir.path().with_extension("moved");
        std::fs::rename(dir.path(), &moved).expect("move the directory");
        let seen = named(&mut w, short).await;
        std::fs::rename(&moved, dir.path()).expect("move it back");
        assert_eq!(seen, Some(Touched::Unknown));
    }

    #[tokio::test]
    async fn a_renamed_in_edited_or_removed_manifest_wakes_the_watch_and_other_names_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = DirWatch::new(dir.path()).expect("inotify");
        let short = Duration::from_millis(300);

        // A hidden temp file being written is not a manifest yet; its rename is.
        let tmp = dir.path().join(".svc.yaml.tmp");
        std::fs::write(&tmp, "kind: Vpc\n").expect("write");
        assert!(
            !woken(&mut w, short).await,
            "a hidden temp file woke the loop"
        );
        std::fs::rename(&tmp, dir.path().join("svc.yaml")).expect("rename");
        assert!(
            woken(&mut w, short).await,
            "a rename into place did not wake it"
        );

        // An edit in place (an editor's save).
        std::fs::write(dir.path().join("svc.yaml"), "kind: Vpc\n# edited\n").expect("edit");
        assert!(
            woken(&mut w, short).await,
            "an edit in place did not wake it"
        );

        std::fs::write(dir.path().join("notes.txt"), "x").expect("write");
        assert!(!woken(&mut w, short).await, "a non-manifest woke the loop");

        std::fs::remove_file(dir.path().join("svc.yaml")).expect("rm");
        assert!(woken(&mut w, short).await, "a removal did not wake it");
    }

    #[test]
    fn a_missing_directory_is_an_error_not_a_silent_watch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = DirWatch::new(&dir.path().join("nope"))
            .err()
            .expect("no such directory");
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    }

    #[test]
    fn manifest_names_are_the_ones_the_source_reads() {
        for (n, want) in [
            ("a.yaml", true),
            ("a.yml", true),
            (".a.yaml", false),
            ("a.yaml.tmp", false),
            ("a.json", false),
        ] {
            assert_eq!(is_manifest_name(n), want, "{n}");
        }
    }
}
