//! [`AtomSet`] and [`AtomMap`]: the sets and maps inside a [`super::Value`], kept as sorted
//! vectors without duplicates.
//!
//! Why not `BTreeSet` / `BTreeMap`: almost every OVSDB set or map in a cache holds a handful
//! of elements (one VIP, two external ids), and a B-tree's first node reserves room for 11
//! entries (~700 bytes for a one-pair map of atoms); a vector sized to fit holds one pair in
//! 64 bytes. Lookups stay O(log n) by binary search; inserts and removes are O(n), which is
//! cheap at these sizes and rare (diffs, op builders). The order (sorted by `Atom`'s `Ord`)
//! and the uniqueness are invariants every constructor keeps, so two values that mean the
//! same thing compare equal whatever order the server wrote them in, as before. The API
//! mirrors the parts of `BTreeSet` / `BTreeMap` callers use.

use std::fmt;

use super::Atom;

/// A set of atoms: sorted, no duplicates.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AtomSet {
    items: Vec<Atom>,
}

impl AtomSet {
    pub const fn new() -> AtomSet {
        AtomSet { items: Vec::new() }
    }

    /// A set from a vector that is already sorted and without duplicates (checked in debug
    /// builds).
    fn from_sorted(mut items: Vec<Atom>) -> AtomSet {
        debug_assert!(items.windows(2).all(|w| w[0] < w[1]));
        items.shrink_to_fit();
        AtomSet { items }
    }

    /// A set from atoms in any order, or the first duplicate.
    pub fn try_from_vec(mut items: Vec<Atom>) -> Result<AtomSet, Atom> {
        items.sort_unstable();
        if let Some(w) = items.windows(2).find(|w| w[0] == w[1]) {
            return Err(w[0].clone());
        }
        Ok(AtomSet::from_sorted(items))
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Atom> {
        self.items.iter()
    }

    /// The elements in order, as a slice.
    pub fn as_slice(&self) -> &[Atom] {
        &self.items
    }

    pub fn first(&self) -> Option<&Atom> {
        self.items.first()
    }

    pub fn last(&self) -> Option<&Atom> {
        self.items.last()
    }

    pub fn contains(&self, a: &Atom) -> bool {
        self.items.binary_search(a).is_ok()
    }

    /// Adds `a`; `false` if it was already there.
    pub fn insert(&mut self, a: Atom) -> bool {
        match self.items.binary_search(&a) {
            Ok(_) => false,
            Err(i) => {
                self.items.insert(i, a);
                true
            }
        }
    }

    /// Removes `a`; `false` if it was not there.
    pub fn remove(&mut self, a: &Atom) -> bool {
        match self.items.binary_search(a) {
            Ok(i) => {
                self.items.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// Elements in exactly one of the two sets, in order.
    pub fn symmetric_difference<'a>(
        &'a self,
        other: &'a AtomSet,
    ) -> impl Iterator<Item = &'a Atom> {
        merge(&self.items, &other.items, |a, b| a.cmp(b)).filter_map(|m| match m {
            Merged::Left(a) | Merged::Right(a) => Some(a),
            Merged::Both => None,
        })
    }

    /// Elements of `self` not in `other`, in order.
    pub fn difference<'a>(&'a self, other: &'a AtomSet) -> impl Iterator<Item = &'a Atom> {
        self.iter().filter(move |a| !other.contains(a))
    }

    pub fn retain(&mut self, f: impl FnMut(&Atom) -> bool) {
        self.items.retain(f);
    }
}

impl fmt::Debug for AtomSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<Atom> for AtomSet {
    fn from_iter<I: IntoIterator<Item = Atom>>(iter: I) -> Self {
        let mut items: Vec<Atom> = iter.into_iter().collect();
        items.sort_unstable();
        items.dedup();
        AtomSet::from_sorted(items)
    }
}

impl Extend<Atom> for AtomSet {
    fn extend<I: IntoIterator<Item = Atom>>(&mut self, iter: I) {
        let mut items = std::mem::take(&mut self.items);
        items.extend(iter);
        *self = items.into_iter().collect();
    }
}

impl<const N: usize> From<[Atom; N]> for AtomSet {
    fn from(a: [Atom; N]) -> Self {
        a.into_iter().collect()
    }
}

impl From<std::collections::BTreeSet<Atom>> for AtomSet {
    fn from(s: std::collections::BTreeSet<Atom>) -> Self {
        AtomSet::from_sorted(s.into_iter().collect())
    }
}

impl IntoIterator for AtomSet {
    type Item = Atom;
    type IntoIter = std::vec::IntoIter<Atom>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

impl<'a> IntoIterator for &'a AtomSet {
    type Item = &'a Atom;
    type IntoIter = std::slice::Iter<'a, Atom>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

/// A map of atoms to atoms: sorted by key, keys unique.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AtomMap {
    pairs: Vec<(Atom, Atom)>,
}

/// Key lookup by anything an atom key can be compared with: an `Atom` or a `str` (for
/// string keys, without building an `Atom::String`).
pub trait MapKey {
    fn cmp_atom(&self, a: &Atom) -> std::cmp::Ordering;
}

impl MapKey for Atom {
    fn cmp_atom(&self, a: &Atom) -> std::cmp::Ordering {
        self.cmp(a)
    }
}

impl MapKey for str {
    fn cmp_atom(&self, a: &Atom) -> std::cmp::Ordering {
        match a {
            Atom::String(s) => self.cmp(&**s),
            // Strings sort after integers, reals and booleans and before UUIDs.
            other => Atom::String(String::new()).cmp(other),
        }
    }
}

impl AtomMap {
    pub const fn new() -> AtomMap {
        AtomMap { pairs: Vec::new() }
    }

    fn from_sorted(mut pairs: Vec<(Atom, Atom)>) -> AtomMap {
        debug_assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0));
        pairs.shrink_to_fit();
        AtomMap { pairs }
    }

    /// A map from pairs in any order, or the first duplicate key.
    pub fn try_from_vec(mut pairs: Vec<(Atom, Atom)>) -> Result<AtomMap, Atom> {
        pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(w[0].0.clone());
        }
        Ok(AtomMap::from_sorted(pairs))
    }

    fn find<Q: MapKey + ?Sized>(&self, key: &Q) -> Result<usize, usize> {
        self.pairs
            .binary_search_by(|(k, _)| key.cmp_atom(k).reverse())
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The value under `key` (an `Atom`, or a `str` for string keys).
    pub fn get<Q: MapKey + ?Sized>(&self, key: &Q) -> Option<&Atom> {
        self.find(key).ok().map(|i| &self.pairs[i].1)
    }

    pub fn contains_key<Q: MapKey + ?Sized>(&self, key: &Q) -> bool {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`; the old value if there was one.
    pub fn insert(&mut self, key: Atom, value: Atom) -> Option<Atom> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.pairs[i].1, value)),
            Err(i) => {
                self.pairs.insert(i, (key, value));
                None
            }
        }
    }

    pub fn remove<Q: MapKey + ?Sized>(&mut self, key: &Q) -> Option<Atom> {
        self.find(key).ok().map(|i| self.pairs.remove(i).1)
    }

    /// Pairs in key order.
    pub fn iter(&self) -> MapIter<'_> {
        MapIter(self.pairs.iter())
    }

    /// The pairs in key order, as a slice.
    pub fn as_slice(&self) -> &[(Atom, Atom)] {
        &self.pairs
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &Atom> + ExactSizeIterator + Clone {
        self.pairs.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Atom> + ExactSizeIterator + Clone {
        self.pairs.iter().map(|(_, v)| v)
    }

    pub fn retain(&mut self, mut f: impl FnMut(&Atom, &Atom) -> bool) {
        self.pairs.retain(|(k, v)| f(k, v));
    }
}

impl fmt::Debug for AtomMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Iterator over `(&key, &value)` of an [`AtomMap`], like `btree_map::Iter`.
#[derive(Clone, Debug)]
pub struct MapIter<'a>(std::slice::Iter<'a, (Atom, Atom)>);

impl<'a> Iterator for MapIter<'a> {
    type Item = (&'a Atom, &'a Atom);
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(k, v)| (k, v))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for MapIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(|(k, v)| (k, v))
    }
}

impl ExactSizeIterator for MapIter<'_> {}

/// Like collecting into a `BTreeMap`: for a repeated key the last value wins.
impl FromIterator<(Atom, Atom)> for AtomMap {
    fn from_iter<I: IntoIterator<Item = (Atom, Atom)>>(iter: I) -> Self {
        let mut pairs: Vec<(Atom, Atom)> = iter.into_iter().collect();
        // Stable sort keeps equal keys in input order; keep the last of each run.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Atom, Atom)> = Vec::with_capacity(pairs.len());
        for p in pairs {
            match out.last_mut() {
                Some(last) if last.0 == p.0 => *last = p,
                _ => out.push(p),
            }
        }
        AtomMap::from_sorted(out)
    }
}

impl Extend<(Atom, Atom)> for AtomMap {
    fn extend<I: IntoIterator<Item = (Atom, Atom)>>(&mut self, iter: I) {
        let mut pairs = std::mem::take(&mut self.pairs);
        pairs.extend(iter);
        *self = pairs.into_iter().collect();
    }
}

impl<const N: usize> From<[(Atom, Atom); N]> for AtomMap {
    fn from(a: [(Atom, Atom); N]) -> Self {
        a.into_iter().collect()
    }
}

impl From<std::collections::BTreeMap<Atom, Atom>> for AtomMap {
    fn from(m: std::collections::BTreeMap<Atom, Atom>) -> Self {
        AtomMap::from_sorted(m.into_iter().collect())
    }
}

impl IntoIterator for AtomMap {
    type Item = (Atom, Atom);
    type IntoIter = std::vec::IntoIter<(Atom, Atom)>;
    fn into_iter(self) -> Self::IntoIter {
        self.pairs.into_iter()
    }
}

impl<'a> IntoIterator for &'a AtomMap {
    type Item = (&'a Atom, &'a Atom);
    type IntoIter = MapIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

enum Merged<'a, T> {
    Left(&'a T),
    Right(&'a T),
    Both,
}

/// Walks two sorted slices together.
fn merge<'a, T>(
    a: &'a [T],
    b: &'a [T],
    cmp: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> impl Iterator<Item = Merged<'a, T>> {
    let (mut i, mut j) = (0, 0);
    std::iter::from_fn(move || {
        use std::cmp::Ordering::*;
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => Some(match cmp(x, y) {
                Less => {
                    i += 1;
                    Merged::Left(x)
                }
                Greater => {
                    j += 1;
                    Merged::Right(y)
                }
                Equal => {
                    i += 1;
                    j += 1;
                    Merged::Both
                }
            }),
            (Some(x), None) => {
                i += 1;
                Some(Merged::Left(x))
            }
            (None, Some(y)) => {
                j += 1;
                Some(Merged::Right(y))
            }
            (None, None) => None,
        }
    })
}
