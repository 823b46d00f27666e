//! The level tree over the series registry: namespace → level → … with, per level, the metrics it holds.
//!
//! Built from `Engine::series_since` and brought up to date before every query (new series are appended to
//! the registry only, so the index just reads the tail it has not seen). A series whose pages were all freed
//! stays in the registry (ids are never reused) but counts as absent everywhere a query looks: that is how
//! empty series and levels are pruned.

use std::collections::{BTreeMap, HashMap};

use super::selector::Selector;
use crate::keys::{Namespace, SeriesPath};
use crate::storage::{Engine, SeriesId};

/// One level of the tree.
#[derive(Default, Debug)]
pub struct Level {
    /// Child levels by name.
    pub children: BTreeMap<String, Level>,
    /// Series stored at this level, by metric id.
    pub metrics: BTreeMap<u32, SeriesId>,
}

impl Level {
    /// Series of metric `metric` under this level as cc-metric-store's `findBuffers` finds them: the level's
    /// own series if it holds the metric, else those of each child, recursively.
    pub fn collect(&self, metric: u32, out: &mut Vec<SeriesId>) {
        if let Some(&id) = self.metrics.get(&metric) {
            out.push(id);
            return;
        }
        for c in self.children.values() {
            c.collect(metric, out);
        }
    }

    /// Every series at or below this level, of any metric.
    pub fn all_series(&self, out: &mut Vec<SeriesId>) {
        out.extend(self.metrics.values().copied());
        for c in self.children.values() {
            c.all_series(out);
        }
    }
}

/// The whole tree.
#[derive(Default, Debug)]
pub struct Index {
    seen: usize,
    roots: HashMap<Namespace, Level>,
}

impl Index {
    /// Whether every series of the registry is indexed.
    pub fn is_current(&self, engine: &Engine) -> bool {
        engine.series_count() == self.seen
    }

    /// How many series of the registry (ids `0..n`) it holds.
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// Adds the series registered since the last refresh.
    pub fn refresh(&mut self, engine: &Engine) {
        if engine.series_count() == self.seen {
            return;
        }
        for (id, metric, path) in engine.series_since(self.seen) {
            self.seen = id.0 as usize + 1;
            // Paths in the registry were validated when interned; one that does not decode is skipped.
            let Ok((path, _)) = SeriesPath::decode(&path) else { continue };
            let mut level = self.roots.entry(path.namespace()).or_default();
            for seg in path.segments() {
                level = level.children.entry(seg.clone()).or_default();
            }
            level.metrics.insert(metric, id);
        }
    }

    /// The levels a selector names.
    pub fn select(&self, sel: &Selector) -> Vec<&Level> {
        let Some(root) = self.roots.get(&sel.namespace()) else { return Vec::new() };
        let mut current = vec![root];
        for e in sel.elements() {
            let mut next = Vec::new();
            for l in current {
                next.extend(l.children.iter().filter(|(name, _)| e.matches(name)).map(|(_, c)| c));
            }
            current = next;
        }
        current
    }

    /// The level a path names exactly.
    pub fn level(&self, path: &SeriesPath) -> Option<&Level> {
        let mut l = self.roots.get(&path.namespace())?;
        for s in path.segments() {
            l = l.children.get(s)?;
        }
        Some(l)
    }

    /// The root of a namespace.
    pub fn root(&self, ns: Namespace) -> Option<&Level> {
        self.roots.get(&ns)
    }
}
