//! Sandboxes started ahead of the creates that will take them.
//!
//! A gVisor sandbox spends ~0.2 s starting (runsc boots the Sentry and the gofer, envd's
//! first exec in a fresh kernel); a create that finds one already started for the same
//! template, build, memory, CPUs and internet access takes it instead, and only the
//! per-create part remains: the egress rules, `POST /init` (environment, access token,
//! user), the template's start command, the record. Its id was drawn at random when it
//! started, like any sandbox's: nobody could know it before the create returned it.
//!
//! While it waits, a warm sandbox runs nothing but envd, holds no secret (its access
//! token comes with `/init`), has no record (the proxy and the API do not know it; a
//! restarted server reaps it as a sandbox without record) and holds its share of the
//! server's capacity — given up to a create that would otherwise be refused.
//!
//! After each create that could have used one, the pool starts one for that create's
//! shape (`ServerConfig::warm_sandboxes` per shape, the [`MAX_SHAPES`] most recently used
//! shapes). Container sandboxes start in ~10 ms and are not kept warm.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::lock::lock;

/// Shapes kept warm at most: a burst of creates of many shapes does not leave a
/// sandbox of each running.
pub(crate) const MAX_SHAPES: usize = 4;

/// What a warm sandbox was started as; a create asking exactly this may take it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Shape {
    pub template: String,
    /// The template's build: a rebuilt template's warm sandboxes run the old layers.
    pub build: String,
    pub memory_mb: u64,
    pub cpu_count: u32,
    /// Whether it has an outbound interface (its rules are set when it is taken).
    pub internet: bool,
}

/// A started sandbox waiting for its create; `T` is what the server keeps of it (its
/// envd, egress handle and capacity reservation).
pub(crate) struct WarmSandbox<T> {
    pub id: String,
    pub shape: Shape,
    pub started: T,
}

impl<T> std::fmt::Debug for WarmSandbox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmSandbox")
            .field("id", &self.id)
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

/// The warm sandboxes, oldest first, and the shapes being started.
#[derive(Debug)]
pub(crate) struct WarmPool<T> {
    per_shape: usize,
    state: Mutex<State<T>>,
}

#[derive(Debug)]
struct State<T> {
    waiting: Vec<WarmSandbox<T>>,
    starting: HashSet<Shape>,
    /// Shapes by last use, most recent last.
    recent: Vec<Shape>,
}

impl<T> WarmPool<T> {
    /// A pool keeping `per_shape` sandboxes of each recently used shape (0: none).
    pub fn new(per_shape: usize) -> Self {
        Self {
            per_shape,
            state: Mutex::new(State {
                waiting: Vec::new(),
                starting: HashSet::new(),
                recent: Vec::new(),
            }),
        }
    }

    /// Whether the pool keeps anything at all.
    pub fn enabled(&self) -> bool {
        self.per_shape > 0
    }

    /// Takes a waiting sandbox of `shape`, and counts the shape as used.
    pub fn take(&self, shape: &Shape) -> Option<WarmSandbox<T>> {
        let mut state = lock(&self.state);
        state.recent.retain(|s| s != shape);
        state.recent.push(shape.clone());
        let at = state.waiting.iter().position(|w| &w.shape == shape)?;
        Some(state.waiting.remove(at))
    }

    /// Takes the oldest waiting sandbox of any shape (to give its capacity to a create).
    pub fn take_any(&self) -> Option<WarmSandbox<T>> {
        let mut state = lock(&self.state);
        (!state.waiting.is_empty()).then(|| state.waiting.remove(0))
    }

    /// Whether one more sandbox of `shape` should be started; if so, the shape counts as
    /// starting until [`put`](Self::put) or [`failed`](Self::failed).
    pub fn wants(&self, shape: &Shape) -> bool {
        if !self.enabled() {
            return false;
        }
        let mut state = lock(&self.state);
        let have = state.waiting.iter().filter(|w| &w.shape == shape).count();
        if have >= self.per_shape || state.starting.contains(shape) {
            return false;
        }
        state.starting.insert(shape.clone())
    }

    /// Adds a started sandbox; returns those that no longer fit (shapes beyond the most
    /// recent [`MAX_SHAPES`], or beyond `per_shape`), for the caller to kill.
    pub fn put(&self, sandbox: WarmSandbox<T>) -> Vec<WarmSandbox<T>> {
        let mut state = lock(&self.state);
        state.starting.remove(&sandbox.shape);
        state.waiting.push(sandbox);
        let keep: Vec<Shape> = state
            .recent
            .iter()
            .rev()
            .take(MAX_SHAPES)
            .cloned()
            .collect();
        let mut evicted = Vec::new();
        let mut kept = Vec::new();
        for warm in std::mem::take(&mut state.waiting) {
            let same = kept
                .iter()
                .filter(|w: &&WarmSandbox<T>| w.shape == warm.shape)
                .count();
            if keep.contains(&warm.shape) && same < self.per_shape {
                kept.push(warm);
            } else {
                evicted.push(warm);
            }
        }
        state.waiting = kept;
        evicted
    }

    /// A start of `shape` failed: it may be tried again.
    pub fn failed(&self, shape: &Shape) {
        lock(&self.state).starting.remove(shape);
    }

    /// Removes the waiting sandboxes `stale` says are out of date (their template was
    /// rebuilt or deleted), for the caller to kill.
    pub fn remove_stale(&self, stale: impl Fn(&Shape) -> bool) -> Vec<WarmSandbox<T>> {
        let mut state = lock(&self.state);
        let (gone, kept) = std::mem::take(&mut state.waiting)
            .into_iter()
            .partition(|w| stale(&w.shape));
        state.waiting = kept;
        gone
    }

    /// Every waiting sandbox (at shutdown).
    pub fn drain(&self) -> Vec<WarmSandbox<T>> {
        std::mem::take(&mut lock(&self.state).waiting)
    }

    /// Ids of the waiting sandboxes.
    pub fn ids(&self) -> Vec<String> {
        lock(&self.state)
            .waiting
            .iter()
            .map(|w| w.id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(template: &str) -> Shape {
        Shape {
            template: template.to_owned(),
            build: "b1".to_owned(),
            memory_mb: 512,
            cpu_count: 2,
            internet: true,
        }
    }

    fn warm(id: &str, shape: &Shape) -> WarmSandbox<()> {
        WarmSandbox {
            id: id.to_owned(),
            shape: shape.clone(),
            started: (),
        }
    }

    #[test]
    fn a_create_takes_only_its_own_shape() {
        let pool = WarmPool::new(1);
        let a = shape("a");
        assert!(pool.take(&a).is_none());
        assert!(pool.wants(&a));
        assert!(!pool.wants(&a), "one start per shape at a time");
        assert!(pool.put(warm("w1", &a)).is_empty());
        assert!(!pool.wants(&a), "full");
        let other_memory = Shape {
            memory_mb: 1024,
            ..a.clone()
        };
        let other_build = Shape {
            build: "b2".to_owned(),
            ..a.clone()
        };
        let no_internet = Shape {
            internet: false,
            ..a.clone()
        };
        for other in [&other_memory, &other_build, &no_internet] {
            assert!(pool.take(other).is_none(), "{other:?}");
        }
        assert_eq!(pool.take(&a).unwrap().id, "w1");
        assert!(pool.take(&a).is_none());
    }

    #[test]
    fn only_recent_shapes_are_kept() {
        let pool = WarmPool::new(1);
        let shapes: Vec<Shape> = (0..=MAX_SHAPES).map(|n| shape(&format!("t{n}"))).collect();
        let mut evicted = Vec::new();
        for (n, s) in shapes.iter().enumerate() {
            assert!(pool.take(s).is_none());
            assert!(pool.wants(s));
            evicted.extend(pool.put(warm(&format!("w{n}"), s)));
        }
        let evicted: Vec<String> = evicted.into_iter().map(|w| w.id).collect();
        assert_eq!(
            evicted,
            vec!["w0".to_owned()],
            "the least recently used shape"
        );
        assert_eq!(pool.ids().len(), MAX_SHAPES);
    }

    #[test]
    fn off_means_nothing_is_started() {
        let pool: WarmPool<()> = WarmPool::new(0);
        assert!(!pool.enabled());
        assert!(!pool.wants(&shape("a")));
    }

    #[test]
    fn stale_and_failed_starts() {
        let pool = WarmPool::new(1);
        let a = shape("a");
        let b = shape("b");
        assert!(pool.wants(&a));
        pool.failed(&a);
        assert!(pool.wants(&a), "a failed start may be tried again");
        pool.take(&a);
        pool.take(&b);
        pool.put(warm("wa", &a));
        assert!(pool.wants(&b));
        pool.put(warm("wb", &b));
        let gone: Vec<String> = pool
            .remove_stale(|s| s.template == "a")
            .into_iter()
            .map(|w| w.id)
            .collect();
        assert_eq!(gone, vec!["wa".to_owned()]);
        assert_eq!(pool.take_any().unwrap().id, "wb");
        assert!(pool.drain().is_empty());
    }
}
